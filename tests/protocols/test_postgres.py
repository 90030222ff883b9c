"""postgres: real PostgreSQL sessions through the proxy, with psycopg (3)."""

from __future__ import annotations

import logging
import socket
import struct
import threading
import time

import psycopg
import pytest

from protocol_support import error_on_calls
from support import wait_until
from vaurien.errors import OptionError
from vaurien.protocols import Protocol
from vaurien.protocols.postgres.messages import ERROR_MESSAGE


def start(start_proxy, postgres_server, behavior="100:dummy", **options):
    """A proxy with the postgres protocol in front of the server; ``options`` are the
    protocol's."""
    return start_proxy(
        postgres_server.address,
        protocol="postgres",
        behavior=behavior,
        timeout=30,
        plugin_options={("protocol", "postgres"): options},
    )


def connect(proxy, postgres_server, autocommit=True, **params) -> psycopg.Connection:
    host, port = proxy.address
    return psycopg.connect(
        postgres_server.conninfo(host=host, port=port, **params), autocommit=autocommit
    )


def set_behavior(proxy, spec, options=None):
    proxy.call(proxy.proxy.set_behavior, spec, options or {})


def picks(proxy) -> dict[str, int]:
    return proxy.call(proxy.proxy.stats)["behaviors"]


@pytest.fixture
def direct(postgres_server):
    with psycopg.connect(postgres_server.conninfo(), autocommit=True) as connection:
        yield connection


@pytest.fixture
def table(direct):
    direct.execute("CREATE TABLE IF NOT EXISTS chaos (k text PRIMARY KEY)")
    direct.execute("TRUNCATE chaos")
    return "chaos"


def stored(direct, key) -> bool:
    return direct.execute("SELECT count(*) FROM chaos WHERE k = %s", (key,)).fetchone() == (1,)


def realistic_session(connection: psycopg.Connection, table: str) -> list:
    """What an application does: simple and extended queries, prepared statements, a
    pipeline, a transaction, COPY both ways, notices, a server error, a large value."""
    results = []
    connection.execute(f"DROP TABLE IF EXISTS {table}")
    connection.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, v text)")
    with connection.cursor() as cursor:
        cursor.executemany(f"INSERT INTO {table} VALUES (%s, %s)", [(i, f"v{i}") for i in range(5)])
        results.append(cursor.execute(f"SELECT * FROM {table} ORDER BY id").fetchall())
        for i in range(3):
            query = f"SELECT v FROM {table} WHERE id = %s"
            results.append(cursor.execute(query, (i,), prepare=True).fetchone())
        with connection.pipeline():
            cursor.execute(f"UPDATE {table} SET v = 'p' WHERE id = %s", (1,))
            cursor.execute(f"SELECT v FROM {table} WHERE id = %s", (1,))
            results.append(cursor.fetchall())
        with connection.transaction():
            cursor.execute(f"INSERT INTO {table} VALUES (10, 'in a transaction')")
        with connection.cursor().copy(f"COPY {table} FROM STDIN") as copy:
            for i in range(100, 1100):
                copy.write_row((i, f"copied {i}"))
        ordered = f"COPY (SELECT * FROM {table} ORDER BY id) TO STDOUT"
        with connection.cursor().copy(ordered) as copy:
            results.append(list(copy.rows()))
        notices = []
        connection.add_notice_handler(lambda notice: notices.append(notice.message_primary))
        cursor.execute("DO $$BEGIN RAISE NOTICE 'careful'; END$$")
        results.append(notices)
        with pytest.raises(psycopg.errors.UniqueViolation) as error:
            cursor.execute(f"INSERT INTO {table} VALUES (1, 'again')")
        results.append(error.value.sqlstate)
        cursor.execute("SELECT 1; SELECT repeat('x', 500000)", prepare=False)
        results.append(cursor.fetchone())
        cursor.nextset()
        results.append(len(cursor.fetchone()[0]))
        connection.execute(f"DROP TABLE {table}")
    return results


def test_a_realistic_session_through_dummy_gets_the_direct_results(
    postgres_server, start_proxy, direct
):
    expected = realistic_session(direct, "direct_t")
    proxy = start(start_proxy, postgres_server)
    with connect(proxy, postgres_server) as connection:
        assert realistic_session(connection, "proxied_t") == expected
    assert set(picks(proxy)) == {"dummy"}


def test_one_pick_per_query_none_for_the_login_and_the_answers(postgres_server, start_proxy):
    proxy = start(start_proxy, postgres_server)
    with connect(proxy, postgres_server, scram=True) as connection:
        for i in range(5):
            assert connection.execute("SELECT %s::int", (i,), prepare=False).fetchone() == (i,)
            assert connection.execute(f"SELECT {i}").fetchone() == (i,)
    wait_until(lambda: proxy.call(proxy.proxy.stats)["active_connections"] == 0)
    assert picks(proxy) == {"dummy": 11}  # ten queries and the Terminate


def test_scram_authentication_passes_untouched(postgres_server, start_proxy):
    # Every query fails, but the login goes through: no behavior applies to it.
    proxy = start(start_proxy, postgres_server, behavior="100:error")
    with connect(proxy, postgres_server, scram=True) as connection:
        assert connection.info.user == postgres_server.scram_user
        with pytest.raises(psycopg.errors.AdminShutdown):
            connection.execute("SELECT current_user")
    wait_until(lambda: proxy.call(proxy.proxy.stats)["active_connections"] == 0)
    assert picks(proxy) == {"error": 2}  # the query and the Terminate


def test_error_answers_with_admin_shutdown_and_the_connection_goes_on(
    postgres_server, start_proxy, direct, table
):
    proxy = start(start_proxy, postgres_server)
    with connect(proxy, postgres_server) as connection:
        set_behavior(proxy, "100:error")
        with pytest.raises(psycopg.errors.AdminShutdown, match=ERROR_MESSAGE):
            connection.execute("INSERT INTO chaos VALUES ('simple')")
        with pytest.raises(psycopg.errors.AdminShutdown):
            connection.execute("INSERT INTO chaos VALUES (%s)", ("extended",))
        assert not stored(direct, "simple") and not stored(direct, "extended")
        set_behavior(proxy, "100:dummy")
        assert not connection.broken
        assert connection.execute("SELECT %s::int", (7,)).fetchone() == (7,)


def test_the_sqlstate_and_message_options(postgres_server, start_proxy):
    proxy = start(start_proxy, postgres_server, sqlstate="40001", message="try again")
    with connect(proxy, postgres_server) as connection:
        set_behavior(proxy, "100:error")
        with pytest.raises(psycopg.errors.SerializationFailure, match="try again") as error:
            connection.execute("SELECT 1")
        assert error.value.sqlstate == "40001"
        set_behavior(proxy, "100:dummy")
        assert connection.execute("SELECT 2").fetchone() == (2,)


def test_the_sqlstate_option_is_checked():
    option = Protocol.options("postgres")["sqlstate"]
    assert option.parse(" 40p01") == "40P01"
    for bad in ("4000", "400011", "40-01"):
        with pytest.raises(OptionError):
            option.parse(bad)


@pytest.mark.parametrize(
    "sqlstate, exception",
    [(None, psycopg.errors.ConnectionFailure), ("57P01", psycopg.errors.AdminShutdown)],
)
def test_a_fatal_error_ends_the_connection(postgres_server, start_proxy, sqlstate, exception):
    options = {"fatal": True} if sqlstate is None else {"fatal": True, "sqlstate": sqlstate}
    proxy = start(start_proxy, postgres_server, **options)
    with connect(proxy, postgres_server) as connection:
        set_behavior(proxy, "100:error")
        with pytest.raises(exception, match=ERROR_MESSAGE):
            connection.execute("SELECT 1")
        assert connection.broken
    wait_until(lambda: proxy.call(proxy.proxy.stats)["active_connections"] == 0)


def test_an_error_in_a_transaction_fails_it_and_rollback_recovers(
    postgres_server, start_proxy, direct, table
):
    proxy = start(start_proxy, postgres_server)
    with connect(proxy, postgres_server, autocommit=False) as connection:
        connection.execute("INSERT INTO chaos VALUES ('rolled back')")
        set_behavior(proxy, "100:error")
        with pytest.raises(psycopg.errors.AdminShutdown):
            connection.execute("SELECT 1")
        assert connection.info.transaction_status == psycopg.pq.TransactionStatus.INERROR
        set_behavior(proxy, "100:dummy")
        connection.rollback()
        connection.execute("INSERT INTO chaos VALUES ('committed')")
        connection.commit()
    assert not stored(direct, "rolled back") and stored(direct, "committed")


def test_error_with_inject_runs_the_query_and_replaces_its_answer(
    postgres_server, start_proxy, direct, table
):
    proxy = start(start_proxy, postgres_server)
    with connect(proxy, postgres_server) as connection:
        set_behavior(proxy, "100:error", {"error": {"inject": True}})
        with pytest.raises(psycopg.errors.AdminShutdown):
            connection.execute("INSERT INTO chaos VALUES (%s)", ("injected",))
        assert stored(direct, "injected")
        with pytest.raises(psycopg.errors.AdminShutdown):
            connection.execute("SELECT k FROM chaos")  # rows and all, replaced
        # A COPY is not replaced: the server would wait for data the client never sends.
        with connection.cursor().copy("COPY chaos FROM STDIN") as copy:
            copy.write_row(("copied",))
        set_behavior(proxy, "100:dummy")
        keys = connection.execute("SELECT k FROM chaos ORDER BY k").fetchall()
        assert keys == [("copied",), ("injected",)]


def test_prepared_statements_fail_and_run_again(postgres_server, start_proxy):
    proxy = start(start_proxy, postgres_server)
    with connect(proxy, postgres_server) as connection:
        query = "SELECT %s::int * 2"
        assert connection.execute(query, (1,), prepare=True).fetchone() == (2,)
        set_behavior(proxy, "100:error")
        with pytest.raises(psycopg.errors.AdminShutdown):
            connection.execute(query, (2,), prepare=True)
        set_behavior(proxy, "100:dummy")
        assert connection.execute(query, (3,), prepare=True).fetchone() == (6,)
        statements = connection.execute("SELECT count(*) FROM pg_prepared_statements")
        assert statements.fetchone() == (1,)  # prepared once, run three times


def test_a_pipeline_fails_as_one_exchange_and_the_connection_goes_on(
    postgres_server, start_proxy, direct, table
):
    proxy = start(start_proxy, postgres_server)
    error_on_calls(proxy, "1")
    with connect(proxy, postgres_server) as connection:
        with pytest.raises(psycopg.errors.AdminShutdown), connection.pipeline():
            connection.execute("INSERT INTO chaos VALUES (%s)", ("first",))
            connection.execute("INSERT INTO chaos VALUES (%s)", ("second",))
        assert not stored(direct, "first") and not stored(direct, "second")
        with connection.pipeline():
            connection.execute("INSERT INTO chaos VALUES (%s)", ("third",))
            cursor = connection.execute("SELECT count(*) FROM chaos")
        assert cursor.fetchone() == (1,)


def test_the_queries_picked_fail_in_their_place_in_a_pipeline(postgres_server, start_proxy):
    proxy = start(start_proxy, postgres_server)
    error_on_calls(proxy, "2,4")
    with connect(proxy, postgres_server) as connection, connection.cursor() as cursor:
        outcomes = []
        for i in range(5):
            try:
                outcomes.append(cursor.execute("SELECT %s::int", (i,)).fetchone()[0])
            except psycopg.errors.AdminShutdown:
                outcomes.append("error")
        assert outcomes == [0, "error", 2, "error", 4]


def test_abort_closes_after_the_commit_ran(postgres_server, start_proxy, direct, table):
    proxy = start(start_proxy, postgres_server)
    with connect(proxy, postgres_server, autocommit=False) as connection:
        connection.execute("INSERT INTO chaos VALUES ('did it commit?')")
        set_behavior(proxy, "100:abort")
        with pytest.raises(psycopg.OperationalError) as error:
            connection.commit()
        assert error.value.sqlstate is None  # a lost connection, not a server's error
        assert connection.broken
    wait_until(lambda: stored(direct, "did it commit?"))


def test_blackout_closes_without_a_word_and_the_query_never_runs(
    postgres_server, start_proxy, direct, table
):
    proxy = start(start_proxy, postgres_server)
    with connect(proxy, postgres_server) as connection:
        set_behavior(proxy, "100:blackout")
        with pytest.raises(psycopg.OperationalError) as error:
            connection.execute("INSERT INTO chaos VALUES ('blackout')")
        assert error.value.sqlstate is None and connection.broken
    assert not stored(direct, "blackout")


def test_delay_holds_each_query_not_the_login(postgres_server, start_proxy):
    proxy = start(start_proxy, postgres_server, behavior="100:delay")
    set_behavior(proxy, "100:delay", {"delay": {"sleep": 0.5}})
    started = time.monotonic()
    with connect(proxy, postgres_server) as connection:
        assert time.monotonic() - started < 0.45  # the start-up and login are no events
        for query in ("SELECT 1", "SELECT %s::int"):
            started = time.monotonic()
            connection.execute(query, None if "%" not in query else (1,)).fetchone()
            assert 0.45 < time.monotonic() - started < 10
        set_behavior(proxy, "100:dummy")
        started = time.monotonic()
        connection.execute("SELECT 1").fetchone()
        assert time.monotonic() - started < 0.4


def to_client(behavior, **options):
    return {behavior: {**options, "direction": "to_client"}}


@pytest.mark.parametrize(
    "spec, options",
    [
        ("100:dummy", {}),
        ("100:delay", to_client("delay", sleep=0.2)),
        ("100:bandwidth", to_client("bandwidth", rate=2000)),
        ("100:slicer", to_client("slicer", average_size=7, size_variation=5, delay=0)),
    ],
)
def test_copy_in_and_out(postgres_server, start_proxy, spec, options):
    proxy = start(start_proxy, postgres_server)
    rows = [(i, f"row {i}" * 10) for i in range(2000)]
    with connect(proxy, postgres_server) as connection:
        connection.execute("CREATE TEMPORARY TABLE copied (id int, v text)")
        set_behavior(proxy, spec, options)
        with connection.cursor().copy("COPY copied FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        with connection.cursor().copy("COPY copied TO STDOUT") as copy:
            copy.set_types(["int4", "text"])
            assert list(copy.rows()) == rows
        with (
            pytest.raises(psycopg.errors.QueryCanceled),
            connection.cursor().copy("COPY copied FROM STDIN") as copy,
        ):
            copy.write_row((-1, "never"))
            raise psycopg.errors.QueryCanceled("the client gives up")  # a CopyFail
        assert connection.execute("SELECT count(*) FROM copied").fetchone() == (len(rows),)


def test_notifications_pass(postgres_server, start_proxy, direct):
    proxy = start(start_proxy, postgres_server)
    with connect(proxy, postgres_server) as connection:
        connection.execute("LISTEN news")
        direct.execute("NOTIFY news, 'between queries'")
        received = list(connection.notifies(timeout=10, stop_after=1))
        assert [(n.channel, n.payload) for n in received] == [("news", "between queries")]
        connection.execute("NOTIFY news, 'to itself'")  # comes with the answer
        received = list(connection.notifies(timeout=10, stop_after=1))
        assert [n.payload for n in received] == ["to itself"]
        assert connection.execute("SELECT 3").fetchone() == (3,)


def test_tls_makes_the_session_a_plain_stream(postgres_server, start_proxy):
    proxy = start(start_proxy, postgres_server)
    with connect(proxy, postgres_server, sslmode="require") as connection:
        assert connection.pgconn.ssl_in_use
        assert connection.execute("SELECT 4").fetchone() == (4,)


def test_a_cancel_request_reaches_the_server(postgres_server, start_proxy):
    proxy = start(start_proxy, postgres_server)
    with connect(proxy, postgres_server) as connection:
        # libpq sends the CancelRequest on a connection of its own, to the proxy too.
        timer = threading.Timer(0.5, connection.cancel_safe)
        timer.start()
        started = time.monotonic()
        with pytest.raises(psycopg.errors.QueryCanceled):
            connection.execute("SELECT pg_sleep(30)")
        assert time.monotonic() - started < 25
        timer.join()
        assert connection.execute("SELECT 1").fetchone() == (1,)


def startup_packet(postgres_server) -> bytes:
    body = struct.pack("!i", 196608)
    for key, value in (("user", postgres_server.user), ("database", postgres_server.database)):
        body += key.encode() + b"\x00" + value.encode() + b"\x00"
    body += b"\x00"
    return struct.pack("!i", 4 + len(body)) + body


def one_warning(caplog, text):
    wait_until(lambda: any(text in record.getMessage() for record in caplog.records))
    warnings = [record for record in caplog.records if record.levelno >= logging.WARNING]
    assert len(warnings) == 1 and not warnings[0].exc_info, warnings


def test_a_client_that_is_not_postgres_ends_its_session_with_one_line(
    postgres_server, start_proxy, caplog
):
    proxy = start(start_proxy, postgres_server)
    caplog.set_level(logging.WARNING, logger="vaurien")
    with proxy.connect() as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: db\r\n\r\n")
        assert sock.recv(100) == b""
    one_warning(caplog, "not a PostgreSQL start-up packet")
    with connect(proxy, postgres_server) as connection:  # still serving
        assert connection.execute("SELECT 5").fetchone() == (5,)


def test_a_client_that_breaks_the_protocol_later_ends_its_session(
    postgres_server, start_proxy, caplog
):
    proxy = start(start_proxy, postgres_server)
    caplog.set_level(logging.WARNING, logger="vaurien")
    with proxy.connect() as sock:
        sock.sendall(startup_packet(postgres_server))
        received = b""
        while not received.endswith(b"Z\x00\x00\x00\x05I"):
            received += sock.recv(4096)
        sock.sendall(b"\x01\x00\x00\x00\x04")  # no such message type
        while sock.recv(4096):
            pass
    one_warning(caplog, "unexpected client message type 0x01")


def test_a_backend_that_is_not_postgres_ends_the_session_with_one_line(
    smtp_server, postgres_server, start_proxy, caplog
):
    proxy = start_proxy(smtp_server.address, protocol="postgres", timeout=30)
    caplog.set_level(logging.WARNING, logger="vaurien")
    with proxy.connect() as sock:
        sock.sendall(startup_packet(postgres_server))
        assert sock.recv(100) == b""  # the SMTP greeting does not reach the client
    one_warning(caplog, "unexpected server message type 2")
    wait_until(lambda: proxy.call(proxy.proxy.stats)["active_connections"] == 0)
    with socket.create_connection(proxy.address, timeout=10):
        pass  # still serving


# -- what rules see ------------------------------------------------------------------------------


def message(kind: bytes, body: bytes) -> bytes:
    return kind + struct.pack("!i", 4 + len(body)) + body


def test_rules_see_the_sql_of_queries_and_of_the_statements_batches_bind():
    from protocol_support import peeks
    from vaurien.protocols.postgres import Postgres
    from vaurien.protocols.postgres.messages import Conversation

    talk = Conversation()
    names = ("sql", "statement")
    query = message(b"Q", b"  insert into t values (1)\x00")
    assert peeks(Postgres(), talk, query, names) == {
        "sql": "  insert into t values (1)",
        "statement": "INSERT",
    }
    parse = message(b"P", b"s1\x00UPDATE t SET a = $1\x00\x00\x00")
    assert peeks(Postgres(), talk, parse + message(b"S", b""), names)["statement"] == "UPDATE"
    talk.statements[b"s1"] = "UPDATE t SET a = $1"  # what the framer keeps of that Parse
    bind = message(b"B", b"\x00s1\x00\x00\x00\x00\x00\x00\x00")
    assert peeks(Postgres(), talk, bind, names)["sql"] == "UPDATE t SET a = $1"
    unknown = message(b"B", b"\x00s2\x00\x00\x00\x00\x00\x00\x00")
    assert peeks(Postgres(), talk, unknown, names) == {"sql": None, "statement": None}
    assert peeks(Postgres(), talk, message(b"X", b""), names) == {"sql": None, "statement": None}
