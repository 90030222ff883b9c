"""mysql: packet and result framing on bytes, and real MariaDB sessions through the proxy,
with PyMySQL."""

import logging
import socket
import time

import pymysql
import pytest
from pymysql.constants.CLIENT import MULTI_STATEMENTS

from protocol_support import peeks, run
from support import wait_until
from vaurien.errors import ProtocolError
from vaurien.protocols.mysql.framing import (
    AUTH,
    CLIENT_DEPRECATE_EOF,
    CLIENT_PROTOCOL_41,
    CLIENT_SSL,
    COMMANDS,
    Command,
    CommandFramer,
    Conversation,
    ResultFramer,
)

# -- framing ----------------------------------------------------------------------------------

CAPS = CLIENT_PROTOCOL_41 | 0x80000 | 0x8000  # PROTOCOL_41, PLUGIN_AUTH, SECURE_CONNECTION


def packet(seq: int, payload: bytes) -> bytes:
    """One packet, or the 16 MiB packets a longer payload is cut into."""
    out, rest = b"", payload
    while True:
        piece, rest = rest[:0xFFFFFF], rest[0xFFFFFF:]
        out += len(piece).to_bytes(3, "little") + bytes((seq & 0xFF,)) + piece
        seq += 1
        if len(piece) < 0xFFFFFF:
            return out


def ok(status: int = 2, header: bytes = b"\x00") -> bytes:
    return header + b"\x00\x00" + status.to_bytes(2, "little") + b"\x00\x00"


def eof(status: int = 2) -> bytes:
    return b"\xfe\x00\x00" + status.to_bytes(2, "little")


ERR = b"\xff\x7a\x04#42S02Table 'x' doesn't exist"
COLUMN = b"\x03def\x04test\x01t\x01t\x01v\x01v\x0c\x21\x00\xff\xff\x00\x00\xfc\x00\x00\x00\x00"
MORE_RESULTS = 0x0008
CURSOR = 0x0040


def greeting(caps: int) -> bytes:
    return (
        b"\x0a10.11.6-MariaDB\x00"
        + (7).to_bytes(4, "little")
        + b"abcdefgh\x00"
        + (caps & 0xFFFF).to_bytes(2, "little")
        + b"\x21\x02\x00"
        + (caps >> 16).to_bytes(2, "little")
        + b"\x15"
        + bytes(10)
        + b"ijklmnopqrst\x00mysql_native_password\x00"
    )


def handshake_response(caps: int) -> bytes:
    return caps.to_bytes(4, "little") + b"\x00\x00\x00\x01\x21" + bytes(23) + b"me\x00\x00"


def result_set(seq: int, rows: list[bytes], status: int = 2, deprecate_eof=False) -> bytes:
    """A text result set with one column, starting at sequence id ``seq``."""
    out = packet(seq, b"\x01") + packet(seq + 1, COLUMN)
    seq += 2
    if not deprecate_eof:
        out += packet(seq, eof())
        seq += 1
    for row in rows:
        out += packet(seq, row)
        seq += 1
    return out + packet(seq, ok(status, b"\xfe") if deprecate_eof else eof(status))


def conversation(caps: int = CAPS, phase: str = COMMANDS) -> Conversation:
    talk = Conversation()
    talk.server_caps = talk.client_caps = caps
    talk.phase = phase
    return talk


#: A server's answers and the commands they answer (text protocol, EOF packets).
ANSWERS = [
    (Command(0x03, 0), result_set(1, [b"\x011", b"\x012"])),
    (Command(0x03, 0), packet(1, ok(MORE_RESULTS)) + result_set(2, [b"\x01x"])),
    (Command(0x03, 0), packet(1, ERR)),
    (Command(0x03, 0), packet(1, b"\xfb/tmp/file") + packet(4, ok())),  # LOCAL INFILE
    (Command(0x03, 0), result_set(1, [b"\xfc\x00\x01" + b"y" * 256], MORE_RESULTS | 2)
     + packet(6, ok())),  # a procedure: its result, then the call's OK
    # COM_STMT_PREPARE: PREPARE_OK, 2 parameters, EOF, 1 column, EOF
    (Command(0x16, 0), packet(1, b"\x00\x01\x00\x00\x00\x01\x00\x02\x00\x00\x00\x00")
     + packet(2, COLUMN) + packet(3, COLUMN) + packet(4, eof())
     + packet(5, COLUMN) + packet(6, eof())),
    (Command(0x16, 0), packet(1, b"\x00\x02\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00")),
    # COM_STMT_EXECUTE with a cursor: the columns only, rows come with COM_STMT_FETCH
    (Command(0x17, 0), packet(1, b"\x01") + packet(2, COLUMN) + packet(3, eof(CURSOR | 2))),
    (Command(0x1C, 0), packet(1, b"\x00\x00\x01") + packet(2, eof())),
    (Command(0x04, 0), packet(1, COLUMN) + packet(2, COLUMN) + packet(3, eof())),
    (Command(0x09, 0), packet(1, b"Uptime: 10  Threads: 1")),
    (Command(0x0E, 0), packet(1, ok())),
]  # fmt: skip
ANSWER_BYTES = b"".join(answer for _, answer in ANSWERS)
ANSWER_REQUESTS = [command for command, _ in ANSWERS]


def ends_of(answers) -> list[int]:
    offsets, total = [], 0
    for _, answer in answers:
        total += len(answer)
        offsets.append(total)
    return offsets


def test_answers_end_where_each_command_says():
    passed, ends = run(ResultFramer(conversation()), [ANSWER_BYTES], ANSWER_REQUESTS)
    assert passed == ANSWER_BYTES
    assert [offset for offset, _ in ends] == ends_of(ANSWERS)
    assert [event.kind for _, event in ends] == [
        "result", "result", "err", "ok", "ok", "prepared", "prepared", "cursor", "result",
        "fields", "ok", "ok",
    ]  # fmt: skip


def test_deprecate_eof_results_end_with_an_ok_packet():
    caps = CAPS | CLIENT_DEPRECATE_EOF
    answers = [
        (Command(0x03, 0), result_set(1, [b"\x011", b"\x012"], deprecate_eof=True)),
        (Command(0x03, 0), result_set(1, [], MORE_RESULTS | 2, deprecate_eof=True)
         + result_set(4, [b"\x01z"], deprecate_eof=True)),
        (Command(0x16, 0), packet(1, b"\x00\x01\x00\x00\x00\x01\x00\x01\x00\x00\x00\x00")
         + packet(2, COLUMN) + packet(3, COLUMN)),
    ]  # fmt: skip
    data = b"".join(answer for _, answer in answers)
    passed, ends = run(ResultFramer(conversation(caps)), [data], [c for c, _ in answers])
    assert passed == data and [offset for offset, _ in ends] == ends_of(answers)


def test_rows_longer_than_16_mib_are_followed_to_their_end():
    big_row = b"\xfe" + (0x1000005).to_bytes(8, "little") + b"r" * 0x1000005
    answers = [(Command(0x03, 0), result_set(1, [big_row, b"\x01s"]))]
    data = answers[0][1]
    assert data.count(b"\xff\xff\xff") >= 1  # it really is cut in 16 MiB packets
    chunks = [data[i : i + 65536] for i in range(0, len(data), 65536)]
    framer = ResultFramer(conversation())
    passed, ends = run(framer, chunks, [answers[0][0]])
    assert passed == data and [offset for offset, _ in ends] == [len(data)]
    assert len(framer._first) <= 64  # the row was counted through, not kept


def test_the_connection_phase_passes_then_commands_are_framed():
    talk = Conversation()
    server, client = ResultFramer(talk), CommandFramer(talk)
    assert client.passive
    hello = packet(0, greeting(CAPS | CLIENT_DEPRECATE_EOF))
    assert run(server, [hello], [None])[1][0][1].kind == "handshake"
    assert talk.phase is AUTH
    run(client, [packet(1, handshake_response(CAPS))])
    assert talk.client_caps == CAPS and not talk.deprecate_eof
    switch = packet(2, b"\xfemysql_native_password\x00salt")
    assert run(server, [switch], [None])[1][0][1].kind == "auth"
    run(client, [packet(3, b"scrambled")])
    assert run(server, [packet(4, ok())], [None])[1][0][1].kind == "ok"
    assert talk.phase is COMMANDS and not client.passive
    query = packet(0, b"\x03select 1") + packet(0, b"\x0e")
    _, ends = run(client, [query])
    assert [(event.code, event.seq) for _, event in ends] == [(0x03, 0), (0x0E, 0)]


def test_local_infile_data_passes_as_part_of_the_exchange():
    talk = conversation()
    server, client = ResultFramer(talk), CommandFramer(talk)
    server.begin(Command(0x03, 0))
    data = packet(1, b"\xfb/tmp/f.csv")
    assert server.feed(data, 0, len(data)) == (len(data), None)
    assert talk.infile and client.passive
    file_data = packet(2, b"1,a\n") + packet(3, b"2,b\n") + packet(4, b"")
    _, ends = run(client, [file_data])
    assert len(ends) == 3 and not talk.infile and not client.passive


def test_an_ssl_request_makes_it_a_stream():
    talk = Conversation()
    talk.phase = AUTH
    ssl_request = (CAPS | CLIENT_SSL).to_bytes(4, "little") + b"\x00\x00\x00\x01\x21" + bytes(23)
    run(CommandFramer(talk), [packet(1, ssl_request)])
    assert talk.stream == "TLS"


@pytest.mark.parametrize(
    "framer, junk",
    [
        (lambda: ResultFramer(Conversation()), b"220 mail.example ESMTP\r\n"),
        (lambda: ResultFramer(Conversation()), packet(0, b"HTTP/1.1 200 OK")),
        (lambda: CommandFramer(conversation()), b"GET / HTTP/1.1\r\n"),
    ],
)
def test_what_is_not_mysql_is_a_protocol_error(framer, junk):
    framer = framer()
    with pytest.raises(ProtocolError):
        run(framer, [junk], [None] if isinstance(framer, ResultFramer) else None)


# -- sessions with MariaDB --------------------------------------------------------------------


@pytest.fixture
def direct(mariadb_server):
    connection = pymysql.connect(**mariadb_server.connect_kwargs(), autocommit=True)
    yield connection
    connection.close()


def start(start_proxy, mariadb_server, **settings):
    settings.setdefault("timeout", 30)
    return start_proxy(mariadb_server.address, protocol="mysql", **settings)


def connect(proxy, mariadb_server, **options):
    kwargs = mariadb_server.connect_kwargs()
    kwargs["host"], kwargs["port"] = proxy.address
    options.setdefault("read_timeout", 10)
    return pymysql.connect(**kwargs, autocommit=True, **options)


def fetch(connection, sql, args=None):
    with connection.cursor() as cursor:
        cursor.execute(sql, args)
        return cursor.fetchall()


def realistic_session(connection, table, csv_path):
    results = []
    with connection.cursor() as cursor:
        cursor.execute(f"DROP TABLE IF EXISTS {table}")
        cursor.execute(f"CREATE TABLE {table} (id INT PRIMARY KEY AUTO_INCREMENT, v LONGTEXT)")
        results.append(cursor.executemany(f"INSERT INTO {table} (v) VALUES (%s)", ["a", "b", "c"]))
        results.append(cursor.execute(f"INSERT INTO {table} (v) VALUES (%s)", ("x" * 300_000,)))
        results.append(fetch(connection, f"SELECT id, LENGTH(v) FROM {table} ORDER BY id"))
        cursor.execute(f"SELECT id, v FROM {table} WHERE id < %s", (3,))
        results.append(cursor.fetchall())
        cursor.execute(f"SELECT 1; SELECT v FROM {table} WHERE id = 2; SELECT 'three'")
        results.append(cursor.fetchall())
        while cursor.nextset():
            results.append(cursor.fetchall())
        cursor.execute(f"DROP PROCEDURE IF EXISTS {table}_p")
        cursor.execute(
            f"CREATE PROCEDURE {table}_p() BEGIN SELECT COUNT(*) FROM {table}; SELECT 42; END"
        )
        cursor.callproc(f"{table}_p")
        results.append(cursor.fetchall())
        while cursor.nextset():
            results.append(cursor.fetchall())
        results.append(len(fetch(connection, "SELECT REPEAT('z', 16777216)")[0][0]))
        cursor.execute(
            f"LOAD DATA LOCAL INFILE %s INTO TABLE {table} FIELDS TERMINATED BY ',' (id, v)",
            (str(csv_path),),
        )
        results.append(fetch(connection, f"SELECT COUNT(*), MAX(id) FROM {table}"))
        with pytest.raises(pymysql.err.ProgrammingError) as error:
            cursor.execute("SELECT * FROM no_such_table")
        results.append(error.value.args[0])
        connection.ping(reconnect=False)
        connection.select_db(connection.db.decode())
        cursor.execute(f"DROP PROCEDURE {table}_p")
        cursor.execute(f"DROP TABLE {table}")
    return results


def test_a_realistic_session_through_dummy_gets_the_direct_results(
    mariadb_server, start_proxy, tmp_path
):
    proxy = start(start_proxy, mariadb_server)
    csv_path = tmp_path / "rows.csv"
    csv_path.write_text("".join(f"{i},row {i}\n" for i in range(100, 1100)))
    direct_connection = pymysql.connect(
        **mariadb_server.connect_kwargs(),
        autocommit=True,
        local_infile=True,
        client_flag=MULTI_STATEMENTS,
    )
    expected = realistic_session(direct_connection, "direct_t", csv_path)
    direct_connection.close()
    connection = connect(proxy, mariadb_server, local_infile=True, client_flag=MULTI_STATEMENTS)
    assert realistic_session(connection, "proxied_t", csv_path) == expected
    connection.close()


@pytest.fixture
def table(direct):
    fetch(direct, "CREATE TABLE IF NOT EXISTS chaos (k VARCHAR(40) PRIMARY KEY)")
    fetch(direct, "DELETE FROM chaos")
    yield "chaos"


def stored(direct, key):
    return fetch(direct, "SELECT COUNT(*) FROM chaos WHERE k = %s", (key,))[0][0] == 1


def test_error_answers_an_err_packet_and_the_backend_never_sees_it(
    mariadb_server, start_proxy, direct, table
):
    proxy = start(start_proxy, mariadb_server)
    connection = connect(proxy, mariadb_server)
    proxy.call(proxy.proxy.set_behavior, "100:error")
    with pytest.raises(pymysql.err.OperationalError) as error:
        fetch(connection, "INSERT INTO chaos VALUES ('error')")
    assert error.value.args == (1105, "Error injected by vaurien")
    assert not stored(direct, "error")
    proxy.call(proxy.proxy.set_behavior, "100:dummy")
    assert fetch(connection, "SELECT 7") == ((7,),)  # the same connection goes on
    connection.close()


def test_error_with_inject_runs_the_command_and_replaces_its_answer(
    mariadb_server, start_proxy, direct, table
):
    proxy = start(start_proxy, mariadb_server)
    connection = connect(proxy, mariadb_server)
    proxy.call(proxy.proxy.set_behavior, "100:error", {"error": {"inject": True}})
    with pytest.raises(pymysql.err.OperationalError):
        fetch(connection, "INSERT INTO chaos VALUES ('injected')")
    assert stored(direct, "injected")
    with pytest.raises(pymysql.err.OperationalError):
        fetch(connection, "SELECT * FROM chaos")  # a whole result set is replaced too
    proxy.call(proxy.proxy.set_behavior, "100:dummy")
    assert fetch(connection, "SELECT k FROM chaos") == (("injected",),)
    connection.close()


def test_delay_holds_each_command(mariadb_server, start_proxy):
    proxy = start(start_proxy, mariadb_server)
    connection = connect(proxy, mariadb_server)
    proxy.call(proxy.proxy.set_behavior, "100:delay", {"delay": {"sleep": 0.5}})
    started = time.monotonic()
    fetch(connection, "SELECT 1")
    assert 0.45 < time.monotonic() - started < 10
    proxy.call(proxy.proxy.set_behavior, "100:dummy")
    started = time.monotonic()
    fetch(connection, "SELECT 1")
    assert time.monotonic() - started < 0.4
    connection.close()


def test_abort_runs_the_command_and_closes_before_its_answer(
    mariadb_server, start_proxy, direct, table
):
    proxy = start(start_proxy, mariadb_server)
    connection = connect(proxy, mariadb_server)
    proxy.call(proxy.proxy.set_behavior, "100:abort")
    with pytest.raises(pymysql.err.OperationalError) as error:
        fetch(connection, "INSERT INTO chaos VALUES ('aborted')")
    assert error.value.args[0] == 2013  # lost connection
    wait_until(lambda: stored(direct, "aborted"))


def test_blackout_closes_and_the_command_never_runs(mariadb_server, start_proxy, direct, table):
    proxy = start(start_proxy, mariadb_server)
    connection = connect(proxy, mariadb_server)
    proxy.call(proxy.proxy.set_behavior, "100:blackout")
    with pytest.raises(pymysql.err.OperationalError):
        fetch(connection, "INSERT INTO chaos VALUES ('blackout')")
    assert not stored(direct, "blackout")


def test_hang_leaves_the_client_waiting(mariadb_server, start_proxy, direct, table):
    proxy = start(start_proxy, mariadb_server)
    connection = connect(proxy, mariadb_server, read_timeout=1)
    proxy.call(proxy.proxy.set_behavior, "100:hang")
    started = time.monotonic()
    with pytest.raises(pymysql.err.OperationalError):
        fetch(connection, "INSERT INTO chaos VALUES ('hang')")
    assert time.monotonic() - started > 0.9
    assert not stored(direct, "hang")


def test_the_handshake_gets_no_behavior(mariadb_server, start_proxy):
    proxy = start(start_proxy, mariadb_server, behavior="100:error")
    # Every command fails, but the handshake and the authentication go through: what fails
    # is the first command PyMySQL sends once logged in (SET NAMES).
    with pytest.raises(pymysql.err.OperationalError) as error:
        connect(proxy, mariadb_server)
    assert error.value.args == (1105, "Error injected by vaurien")
    wait_until(lambda: proxy.call(proxy.proxy.stats)["active_connections"] == 0)
    # One pick, for SET NAMES: none for the handshake response nor the end of the connection.
    assert proxy.call(proxy.proxy.stats)["behaviors"] == {"error": 1}


def test_a_backend_that_is_not_mysql_ends_the_session_with_one_line(
    smtp_server, start_proxy, caplog
):
    proxy = start_proxy(smtp_server.address, protocol="mysql")
    caplog.set_level(logging.WARNING, logger="vaurien")
    with proxy.connect() as sock:
        assert sock.recv(100) == b""
    wait_until(lambda: any("not a MySQL handshake" in r.getMessage() for r in caplog.records))
    assert len([r for r in caplog.records if r.levelno >= logging.WARNING]) == 1
    with socket.create_connection(proxy.address, timeout=10):
        pass


# -- what rules see ------------------------------------------------------------------------------

MYSQL_NAMES = ("command", "sql", "statement")


@pytest.mark.parametrize(
    "request_, fields",
    [
        (
            packet(0, b"\x03INSERT INTO t VALUES (1)"),
            ("query", "INSERT INTO t VALUES (1)", "INSERT"),
        ),
        (packet(0, b"\x16 select ?"), ("prepare", " select ?", "SELECT")),
        (packet(0, b"\x17\x01\x00\x00\x00"), ("execute", None, None)),
        (packet(0, b"\x0e"), ("ping", None, None)),
        (packet(0, b"\x03SELECT " + b"x" * 5000), ("query", "SELECT " + "x" * 4089, "SELECT")),
    ],
    ids=["query", "prepare", "execute", "ping", "long query"],
)
def test_rules_see_the_command_and_its_sql(request_, fields):
    from vaurien.protocols.mysql import MySQL

    found = peeks(MySQL(), conversation(), request_, MYSQL_NAMES)
    assert tuple(found.values()) == fields


def test_rules_see_the_sql_past_query_attributes():
    from vaurien.protocols.mysql import CLIENT_QUERY_ATTRIBUTES, MySQL

    talk = conversation(CAPS | CLIENT_QUERY_ATTRIBUTES)
    found = peeks(MySQL(), talk, packet(0, b"\x03\x00\x01UPDATE t"), MYSQL_NAMES)
    assert found == {"command": "query", "sql": "UPDATE t", "statement": "UPDATE"}
    with_values = packet(0, b"\x03\x01\x01\x00\x01\xfe\x00\x01a\x01zUPDATE t")
    assert peeks(MySQL(), talk, with_values, MYSQL_NAMES)["sql"] is None
