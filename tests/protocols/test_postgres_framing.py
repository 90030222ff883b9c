"""postgres.framing and postgres.messages: the PostgreSQL framers on hand-built messages, on
sessions psycopg has with a real server (recorded by a small relay in front of it), split
anywhere, and on hostile bytes; the error form, checked against psycopg."""

from __future__ import annotations

import collections
import socket
import struct
import threading
from collections.abc import Callable, Iterable

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol_support import cut
from support import wait_until
from vaurien.errors import ProtocolError
from vaurien.protocols.postgres import messages as pg
from vaurien.protocols.postgres.framing import (
    SQL_CAPTURE,
    STATEMENTS,
    AnswerFramer,
    RequestFramer,
    framers,
)
from vaurien.protocols.postgres.messages import (
    Answer,
    Batch,
    Conversation,
    CopyData,
    Query,
    Request,
    Unsolicited,
    error_response,
    statement_type,
)

IO_TIMEOUT = 10.0  # seconds for any socket operation of the relay

# -- messages, built by hand after the protocol's documentation -------------------------------


def msg(kind: str, body: bytes = b"") -> bytes:
    """One typed message."""
    return kind.encode() + struct.pack("!i", 4 + len(body)) + body


def cstr(*texts: str) -> bytes:
    return b"".join(text.encode() + b"\x00" for text in texts)


def startup(version: int = 196608, **parameters: str) -> bytes:
    parameters = parameters or {"user": "app", "database": "db"}
    body = struct.pack("!i", version) + cstr(*[x for kv in parameters.items() for x in kv]) + b"\0"
    return struct.pack("!i", 4 + len(body)) + body


def special(code: int, payload: bytes = b"") -> bytes:
    """SSLRequest, GSSENCRequest, CancelRequest."""
    return struct.pack("!ii", 8 + len(payload), code) + payload


def auth(code: int, data: bytes = b"") -> bytes:
    return msg("R", struct.pack("!i", code) + data)


def error_fields(code: str, severity: str = "ERROR") -> bytes:
    return cstr(f"S{severity}", f"V{severity}", f"C{code}", "Mboom", "Ffile.c") + b"\x00"


def ready(status: str = "I") -> bytes:
    return msg("Z", status.encode())


def parse(sql: str, name: str = "") -> bytes:
    return msg("P", cstr(name, sql) + b"\x00\x00")


def bind(statement: str = "", portal: str = "") -> bytes:
    return msg("B", cstr(portal, statement) + b"\x00\x00\x00\x00\x00\x00")


EXECUTE = msg("E", b"\x00\x00\x00\x00\x00")
DESCRIBE = msg("D", b"P\x00")
SYNC, FLUSH, TERMINATE, COPY_DONE = msg("S"), msg("H"), msg("X"), msg("c")
ROW_DESCRIPTION = msg("T", b"\x00\x01a\x00" + bytes(18))
ROW = msg("D", b"\x00\x01\x00\x00\x00\x011")
SERVER_HELLO = (
    auth(0)
    + msg("S", cstr("client_encoding", "UTF8"))
    + msg("K", struct.pack("!i", 42) + b"sec!")
    + ready()
)


def sql_query(sql: str) -> bytes:
    return msg("Q", cstr(sql))


def complete(tag: str) -> bytes:
    return msg("C", cstr(tag))


# -- driving both framers over a conversation -------------------------------------------------


Transcript = list[tuple[str, bytes]]  # (">" client to server, "<" server to client, bytes)


def replay(transcript: Transcript, client: RequestFramer | None = None):
    """Feed a conversation to a request framer (``client``, or a new one) and an answer framer
    sharing its :class:`Conversation`, as the proxy does: the answer framer is told which request
    it answers (the oldest that expects one). Returns the events as ``(direction, offset in that
    direction, event)`` and the requests left unanswered. Checks that every byte passes and
    that each call moves on."""
    client = client or RequestFramer(Conversation())
    server = AnswerFramer(client.conversation)
    pending: collections.deque = collections.deque()
    events = []
    offsets = {">": 0, "<": 0}
    for direction, chunk in transcript:
        pos = 0
        still = 0  # events in a row that took no byte: more than two would be a loop
        while pos < len(chunk):
            if direction == ">":
                framer = client
            else:
                framer = server
                if server.idle:
                    server.begin(pending[0] if pending else None)
            newpos, event = framer.feed(chunk, pos, len(chunk))
            assert pos <= newpos <= len(chunk)
            assert newpos > pos or event is not None, "a feed that neither moves nor says"
            still = still + 1 if newpos == pos else 0
            assert still <= 2, "a framer that says the same thing forever"
            pos = newpos
            if event is None:
                continue
            assert event.end and event.raw is None  # nothing is held, nothing rewritten
            events.append((direction, offsets[direction] + pos, event))
            if direction == ">" and event.expects:
                pending.append(event)
            elif isinstance(event, Answer) and event.final and pending:
                pending.popleft()
        offsets[direction] += len(chunk)
    assert client.feed_eof() is None and server.feed_eof() is None
    return events, list(pending)


def kinds(events) -> list[str]:
    """The events as ``"> Query"``, ``"< Answer Z"`` ..."""
    return [
        f"{direction} {type(event).__name__}" + (f" {event.type}" if event.type else "")
        for direction, _, event in events
    ]


def split(transcript: Transcript, points: Iterable[int]) -> Transcript:
    """The transcript with its chunks cut at ``points`` (offsets in the whole)."""
    out, start = [], 0
    points = sorted(points)
    for direction, chunk in transcript:
        local = [p - start for p in points if start < p < start + len(chunk)]
        out.extend((direction, piece) for piece in cut(chunk, local))
        start += len(chunk)
    return out


def same_events_under_any_split(transcript: Transcript, points: Iterable[int]) -> None:
    whole, _ = replay(transcript)
    pieces, _ = replay(split(transcript, points))
    assert [(d, o, repr(e)) for d, o, e in pieces] == [(d, o, repr(e)) for d, o, e in whole]


# -- start-up ---------------------------------------------------------------------------------


def test_startup_and_authentication_pass_passively_up_to_ready_for_query():
    client, server = framers()
    assert client.passive and client.idle and server.idle
    events, _ = replay(
        [
            (">", startup(user="app", database="db", application_name="x")),
            ("<", auth(10, cstr("SCRAM-SHA-256") + b"\x00")),
            (">", msg("p", cstr("SCRAM-SHA-256") + struct.pack("!i", 3) + b"n,,")),
            ("<", auth(11, b"r=abc") + auth(12, b"v=xyz") + SERVER_HELLO),
            (">", sql_query("SELECT 1")),
        ]
    )
    assert kinds(events) == [
        "> Startup", "< Handshake R", "> Request p", "< Handshake R", "< Handshake R",
        "< Handshake R", "< Handshake S", "< Handshake K", "< Handshake Z", "> Query Q",
    ]  # fmt: skip
    first = events[0][2]
    assert (first.kind, first.version) == ("startup", (3, 0))
    assert first.parameters == {"user": "app", "database": "db", "application_name": "x"}
    assert not first.expects and not events[2][2].expects
    assert events[8][2].ready and not events[7][2].ready


def test_the_session_is_active_from_the_first_ready_for_query():
    client, server = framers()
    data = startup()
    assert client.feed(data, 0, len(data))[0] == len(data)
    assert client.passive and client.conversation.phase == pg.AUTH
    pos = 0
    while pos < len(SERVER_HELLO):
        assert client.passive
        pos, _ = server.feed(SERVER_HELLO, pos, len(SERVER_HELLO))
    assert not client.passive and client.conversation.status == "I"


def test_protocol_3_2_negotiation_and_a_long_cancel_key_are_framed():
    events, _ = replay(
        [
            (">", startup(version=(3 << 16) | 2, user="app", _pq_="x")),
            ("<", msg("v", struct.pack("!ii", 196608, 1) + cstr("_pq_"))),
            ("<", auth(0) + msg("K", struct.pack("!i", 7) + bytes(32)) + ready()),
        ]
    )
    assert events[0][2].version == (3, 2)
    assert kinds(events)[1:] == ["< Handshake v", "< Handshake R", "< Handshake K", "< Handshake Z"]


def test_a_refused_login_is_an_error_handshake():
    events, _ = replay([(">", startup()), ("<", msg("E", error_fields("28P01", "FATAL")))])
    assert kinds(events) == ["> Startup", "< Handshake E"]
    assert events[1][2].error == "28P01"


@pytest.mark.parametrize("answer", [b"S", b"G"])
def test_an_accepted_encryption_request_makes_the_session_a_stream(answer):
    code = pg.SSL_CODE if answer == b"S" else pg.GSSENC_CODE
    tls = b"\x16\x03\x01\x02\x00" + bytes(range(256)) * 2
    events, _ = replay([(">", special(code)), ("<", answer), (">", tls), ("<", b"\x16\x03\x03")])
    assert kinds(events) == ["> Startup", f"< Handshake {answer.decode()}"]
    assert events[0][2].kind == ("ssl" if answer == b"S" else "gssenc")
    assert events[1][2].stream == ("TLS" if answer == b"S" else "GSSAPI encryption")


def test_refused_encryption_requests_go_on_in_the_clear():
    events, _ = replay(
        [
            (">", special(pg.GSSENC_CODE)),
            ("<", b"N"),
            (">", special(pg.SSL_CODE)),
            ("<", b"N"),
            (">", startup()),
            ("<", SERVER_HELLO),
        ]
    )
    assert [event.stream for _, _, event in events] == [None] * len(events)
    assert kinds(events)[:5] == [
        "> Startup", "< Handshake N", "> Startup", "< Handshake N", "> Startup",
    ]  # fmt: skip
    assert events[-1][2].ready


def test_an_error_answering_an_ssl_request_is_framed():
    events, _ = replay([(">", special(pg.SSL_CODE)), ("<", msg("E", error_fields("08P01")))])
    assert kinds(events) == ["> Startup", "< Handshake E"] and events[1][2].error == "08P01"


@pytest.mark.parametrize("after_request", [False, True])
def test_a_tls_handshake_without_waiting_makes_a_stream(after_request):
    hello = b"\x16\x03\x01\x00\x05hello"
    transcript = [(">", special(pg.SSL_CODE) + hello)] if after_request else [(">", hello)]
    events, _ = replay(transcript)
    assert events[-1][2].kind == "tls" and events[-1][2].stream == "TLS"


@pytest.mark.parametrize("key", [4, 32])
def test_a_cancel_request_is_a_connection_of_its_own(key):
    request = special(pg.CANCEL_CODE, struct.pack("!i", 99) + bytes(key))
    events, _ = replay([(">", request)])
    assert events[0][2].kind == "cancel"
    client, server = framers()
    client.feed(request, 0, len(request))
    with pytest.raises(ProtocolError, match="after a CancelRequest"):
        client.feed(b"Q", 0, 1)
    with pytest.raises(ProtocolError, match="answered a CancelRequest"):
        server.feed(b"E", 0, 1)


# -- queries ----------------------------------------------------------------------------------


def ready_session(*steps: tuple[str, bytes]) -> Transcript:
    """A transcript that starts with a trusted login."""
    return [(">", startup()), ("<", SERVER_HELLO), *steps]


def ready_client() -> RequestFramer:
    """A request framer of a session past its start-up."""
    client = RequestFramer(Conversation())
    client.conversation.phase = pg.READY
    return client


def test_a_simple_query_is_one_exchange_up_to_ready_for_query():
    answer = ROW_DESCRIPTION + ROW + complete("SELECT 1") + ROW_DESCRIPTION + ROW
    answer += complete("SELECT 1") + ready()
    events, pending = replay(
        ready_session((">", sql_query(" /* two */ select 1; select 2")), ("<", answer))
    )
    query, answer_event = events[-2][2], events[-1][2]
    assert isinstance(query, Query) and query.expects and query.statement == "SELECT"
    assert query.sql == " /* two */ select 1; select 2"
    assert isinstance(answer_event, Answer) and answer_event.final and answer_event.status == "I"
    assert pending == []


def test_an_extended_batch_is_one_exchange_up_to_its_sync():
    events, pending = replay(
        ready_session(
            (">", parse("SELECT $1") + bind() + DESCRIBE + EXECUTE + SYNC),
            ("<", msg("1") + msg("2") + ROW_DESCRIPTION + ROW + complete("SELECT 1") + ready()),
        )
    )
    batch = events[-2][2]
    assert isinstance(batch, Batch) and batch.type == "S" and batch.expects
    assert (batch.kinds, batch.count, batch.sql, batch.statement) == (
        "PBDES", 5, "SELECT $1", "SELECT"
    )  # fmt: skip
    assert kinds(events)[-1] == "< Answer Z" and pending == []


def test_an_error_mid_batch_ends_its_answer_at_ready_for_query():
    events, pending = replay(
        ready_session(
            (">", parse("SELECT 1/0") + bind() + EXECUTE + parse("SELECT 2") + bind() + SYNC),
            ("<", msg("1") + msg("2") + msg("E", error_fields("22012")) + ready("E")),
        )
    )
    answer = events[-1][2]
    assert (answer.type, answer.status, answer.error) == ("Z", "E", "22012") and pending == []


def test_pipelined_batches_each_get_their_ready_for_query():
    events, pending = replay(
        ready_session(
            (">", parse("SELECT 1") + bind() + EXECUTE + SYNC + parse("SELECT 2") + bind()),
            (">", EXECUTE + SYNC + FLUSH),
            ("<", msg("1") + msg("2") + ROW + complete("SELECT 1") + ready()),
            ("<", msg("1") + msg("2") + ROW + complete("SELECT 1") + ready()),
            (">", sql_query("SELECT 3")),
        )
    )
    assert kinds(events)[-6:] == [
        "> Batch S", "> Batch S", "< Answer Z", "< Answer Z", "> Batch H", "> Query Q",
    ]  # fmt: skip
    flush = events[-2][2]
    # The Flush after the Sync belongs to no batch with a Sync: it ends before the Query, and
    # expects no answer of its own.
    assert isinstance(flush, Batch) and (flush.kinds, flush.expects) == ("H", False)
    assert isinstance(events[-1][2], Query) and [e.sql for e in pending] == ["SELECT 3"]


def test_prepared_statements_are_remembered_for_their_executions():
    data = (
        parse("INSERT INTO t VALUES ($1)", "ins") + SYNC
        + bind("ins") + EXECUTE + SYNC
        + msg("C", b"Sins\x00") + SYNC
        + bind("ins") + EXECUTE + SYNC
        + bind("other") + EXECUTE + SYNC
    )  # fmt: skip
    events, _ = replay([(">", data)], ready_client())
    batches = [event for _, _, event in events]
    assert [(b.kinds, b.sql, b.statement) for b in batches] == [
        ("PS", "INSERT INTO t VALUES ($1)", "INSERT"),
        ("BES", "INSERT INTO t VALUES ($1)", "INSERT"),
        ("CS", None, None),
        ("BES", None, None),  # closed
        ("BES", None, None),  # never prepared here
    ]


def test_the_statements_remembered_are_bounded():
    client = ready_client()
    data = b"".join(parse(f"SELECT {i}", f"s{i}") + SYNC for i in range(STATEMENTS + 10))
    data += bind("s0") + SYNC + bind(f"s{STATEMENTS + 9}") + SYNC
    events, _ = replay([(">", data)], client)
    assert len(client._statements) == STATEMENTS
    assert [event.sql for _, _, event in events[-2:]] == [None, f"SELECT {STATEMENTS + 9}"]


def test_sql_text_is_kept_only_up_to_its_capture_size():
    long_sql = "SELECT '" + "x" * 100_000 + "'"
    events, _ = replay(ready_session((">", sql_query(long_sql)), (">", parse(long_sql) + SYNC)))
    query, batch = events[-2][2], events[-1][2]
    assert len(query.sql) == SQL_CAPTURE and long_sql.startswith(query.sql)
    assert query.sql == batch.sql and query.statement == batch.statement == "SELECT"


@pytest.mark.parametrize(
    "sql, expected",
    [
        ("select 1", "SELECT"),
        ("  \n\tInsert into t values (1)", "INSERT"),
        ("-- a comment\nUPDATE t SET a = 1", "UPDATE"),
        ("/* block\n comment */ delete from t", "DELETE"),
        ("((SELECT 1))", "SELECT"),
        ("WITH x AS (SELECT 1) SELECT * FROM x", "WITH"),
        ("", ""),
        ("   ", ""),
        ("-- only a comment", ""),
        ("/* unterminated", ""),
        ("123", ""),
    ],
)
def test_statement_type_is_the_first_keyword(sql, expected):
    assert statement_type(sql) == expected


def test_function_call_and_terminate():
    events, pending = replay(
        ready_session(
            (">", msg("F", struct.pack("!ihhih", 1234, 0, 1, 1, 0) + b"1\x00\x00")),
            ("<", msg("V", struct.pack("!i", 1) + b"2") + ready()),
            (">", TERMINATE),
        )
    )
    assert kinds(events)[-3:] == ["> Request F", "< Answer Z", "> Request X"]
    assert events[-3][2].expects and not events[-1][2].expects and pending == []


# -- COPY -------------------------------------------------------------------------------------


def copy_in_response() -> bytes:
    return msg("G", b"\x00\x00\x01\x00\x00")


def test_copy_from_stdin_by_a_query():
    data = [msg("d", b"1\ta\n"), msg("d", b"2\tb\n"), COPY_DONE]
    events, pending = replay(
        ready_session(
            (">", sql_query("COPY t FROM STDIN")),
            ("<", copy_in_response()),
            *[(">", part) for part in data],
            ("<", complete("COPY 2") + ready()),
            (">", sql_query("SELECT 1")),
        )
    )
    assert kinds(events)[-5:] == [
        "> Query Q", "< Answer G", "> CopyData d", "< Answer Z", "> Query Q",
    ]  # fmt: skip
    copy = events[-3][2]
    assert (copy.count, copy.failed, copy.expects) == (3, False, False)
    assert not events[-4][2].final and [e.sql for e in pending] == ["SELECT 1"]


def test_copy_from_stdin_by_a_batch_takes_the_sync_after_the_data():
    client = RequestFramer(Conversation())
    events, pending = replay(
        ready_session(
            (">", parse("COPY t FROM STDIN") + bind() + EXECUTE + SYNC),
            ("<", msg("1") + msg("2") + copy_in_response()),
            (">", msg("d", b"1\n") + COPY_DONE),
            (">", SYNC),
            ("<", complete("COPY 1") + ready()),
        ),
        client,
    )
    assert kinds(events)[-4:] == ["> Batch S", "< Answer G", "> CopyData d", "< Answer Z"]
    assert events[-2][2].count == 3 and pending == []
    assert not client.passive and client.conversation.copy_in is None


def test_copy_fail_ends_the_copy_data():
    events, _ = replay(
        ready_session(
            (">", sql_query("COPY t FROM STDIN")),
            ("<", copy_in_response()),
            (">", msg("d", b"1\n") + msg("f", cstr("changed my mind"))),
            ("<", msg("E", error_fields("57014")) + ready()),
        )
    )
    copy, answer = events[-2][2], events[-1][2]
    assert isinstance(copy, CopyData) and copy.failed and answer.error == "57014"


def test_copy_data_after_the_server_left_copy_mode_is_no_copy():
    # The server fails the COPY at the first row; the client's next rows and its CopyDone are
    # read after that and dropped by the server: each is a request that expects nothing.
    events, pending = replay(
        ready_session(
            (">", sql_query("COPY t FROM STDIN")),
            ("<", copy_in_response()),
            (">", msg("d", b"bad\n")),
            ("<", msg("E", error_fields("22P02")) + ready()),
            (">", msg("d", b"more\n") + COPY_DONE + sql_query("SELECT 1")),
        )
    )
    # The copy data ends where the client's next message starts, once the server left.
    assert kinds(events)[-6:] == [
        "< Answer G", "< Answer Z", "> CopyData d", "> Request d", "> Request c", "> Query Q",
    ]  # fmt: skip
    assert events[-4][2].count == 1 and [e.sql for e in pending] == ["SELECT 1"]


def test_a_query_in_copy_in_mode_is_a_protocol_error():
    client = RequestFramer(Conversation())
    replay(ready_session((">", sql_query("COPY t FROM STDIN")), ("<", copy_in_response())), client)
    assert client.passive
    query = sql_query("SELECT 1")
    with pytest.raises(ProtocolError, match="copy-in mode"):
        client.feed(query, 0, len(query))


def test_copy_to_stdout_is_one_answer():
    answer = msg("H", b"\x00\x00\x01\x00\x00") + msg("d", b"1\n") * 3 + COPY_DONE
    answer += complete("COPY 3") + ready()
    events, pending = replay(
        ready_session((">", sql_query("COPY t TO STDOUT")), ("<", answer[:9]), ("<", answer[9:]))
    )
    assert kinds(events)[-2:] == ["> Query Q", "< Answer Z"] and pending == []


def test_copy_both_makes_the_session_a_stream():
    events, _ = replay(
        ready_session(
            (">", sql_query("START_REPLICATION SLOT s LOGICAL 0/0")),
            ("<", msg("W", b"\x00\x00\x00") + msg("d", b"w" * 100)),
            (">", msg("d", b"r" * 30)),
        )
    )
    answer = events[-1][2]
    assert (answer.type, answer.final, answer.stream) == (
        "W", False, "replication (CopyBothResponse)"
    )  # fmt: skip


# -- what the server says unasked -------------------------------------------------------------


def test_messages_while_nothing_is_asked_are_unsolicited():
    notification = msg("A", struct.pack("!i", 7) + cstr("channel", "payload"))
    notice = msg("N", error_fields("01000", "WARNING"))
    parameter = msg("S", cstr("TimeZone", "UTC"))
    shutdown = msg("E", error_fields("57P01", "FATAL"))
    events, _ = replay(ready_session(("<", notification + notice + parameter + shutdown)))
    unsolicited = [event for _, _, event in events[-4:]]
    assert all(isinstance(event, Unsolicited) for event in unsolicited)
    assert [(e.type, e.error) for e in unsolicited] == [
        ("A", None), ("N", None), ("S", None), ("E", "57P01"),
    ]  # fmt: skip


def test_a_notice_starting_an_answer_is_part_of_it():
    events, _ = replay(
        ready_session(
            (">", sql_query("DO $$BEGIN RAISE NOTICE 'n'; END$$")),
            ("<", msg("N", error_fields("00000", "NOTICE"))),
            ("<", complete("DO") + msg("A", struct.pack("!i", 1) + cstr("c", "")) + ready()),
        )
    )
    assert kinds(events)[-2:] == ["> Query Q", "< Answer Z"]


# -- broken and hostile traffic ---------------------------------------------------------------


def ready_framers():
    client = ready_client()
    return client, AnswerFramer(client.conversation)


@pytest.mark.parametrize(
    "data, match",
    [
        (b"GET / HTTP/1.1\r\n\r\n", "not a PostgreSQL start-up packet"),
        (struct.pack("!ii", 100_000, 196608), "StartupMessage of length"),
        (struct.pack("!ii", 12, pg.SSL_CODE), "encryption request of length"),
        (struct.pack("!ii", 12, pg.CANCEL_CODE), "CancelRequest of length"),
        (struct.pack("!ii", 16, 2 << 16), "not a PostgreSQL start-up packet"),
        (startup()[:-1] + b"x", "not ended by a zero byte"),
        (struct.pack("!i", 17) + struct.pack("!i", 196608) + cstr("user", "a", "b"), "pairs"),
    ],
)
def test_what_is_not_a_start_up_packet_is_refused(data, match):
    with pytest.raises(ProtocolError, match=match):
        replay([(">", data)])


@pytest.mark.parametrize(
    "data, match",
    [
        (msg("Y"), "unexpected client message type Y"),
        (msg("p", b"secret"), "unexpected client message type p"),
        (b"Q" + struct.pack("!i", 3), "bad length 3"),
        (b"Q" + struct.pack("!i", -1), "bad length -1"),
        (b"Q" + struct.pack("!i", 0x40000004), "bad length"),
        (b"B" + struct.pack("!i", 0x7FFFFFFF), "bad length"),
        (b"S" + struct.pack("!i", 5) + b"x", "message S with a bad length 5"),
        (b"D" + struct.pack("!i", 10_005), "bad length"),
    ],
)
def test_broken_requests_are_refused(data, match):
    client, _ = ready_framers()
    with pytest.raises(ProtocolError, match=match):
        client.feed(data, 0, len(data))


@pytest.mark.parametrize(
    "data, match",
    [
        (b"HTTP/1.1 200 OK\r\n", "message H with a bad length"),  # H: CopyOutResponse
        (msg("R", struct.pack("!i", 0)), "unexpected server message type R"),
        (b"C" + struct.pack("!i", 40_000), "bad length 40000"),
        (b"Z" + struct.pack("!i", 6) + b"II", "bad length 6"),
        (msg("Z", b"X"), "bad transaction status"),
        (b"1" + struct.pack("!i", 8), "bad length 8"),
    ],
)
def test_broken_answers_are_refused(data, match):
    _, server = ready_framers()
    server.begin(Query("SELECT 1"))
    with pytest.raises(ProtocolError, match=match):
        server.feed(data, 0, len(data))


def test_a_server_that_speaks_first_is_refused_unless_it_refuses():
    _, server = framers()
    with pytest.raises(ProtocolError, match="unexpected server message type"):
        server.feed(b"220 smtp ready\r\n", 0, 16)
    events, _ = replay([("<", msg("E", error_fields("53300", "FATAL")))])
    assert events[0][2].error == "53300"  # "sorry, too many clients already"


@pytest.mark.parametrize("answer", [b"X", b"G"])
def test_a_bad_answer_to_an_ssl_request_is_refused(answer):
    with pytest.raises(ProtocolError, match="bad answer"):
        replay([(">", special(pg.SSL_CODE)), ("<", answer)])


def test_data_before_the_answer_to_an_ssl_request_is_refused():
    with pytest.raises(ProtocolError, match="before the answer to its ssl request"):
        replay([(">", special(pg.SSL_CODE) + startup())])


def test_a_gigabyte_row_is_counted_through_not_kept():
    _, server = ready_framers()
    server.begin(Query("SELECT big"))
    size = 1 << 30
    header = b"D" + struct.pack("!i", 4 + size)
    assert server.feed(header, 0, len(header)) == (len(header), None)
    chunk = memoryview(bytearray(1 << 20))
    for _ in range(size >> 20):
        assert server.feed(chunk, 0, len(chunk)) == (len(chunk), None)
    assert len(server._capture) == 0
    tail = complete("SELECT 1") + ready()
    pos, event = server.feed(tail, 0, len(tail))
    assert pos == len(tail) and event.final


_HOSTILE_SEEDS = [
    startup() + special(pg.SSL_CODE),
    SERVER_HELLO + msg("A", b"\x00\x00\x00\x01c\x00p\x00"),
    sql_query("SELECT 1") + parse("SELECT $1", "s") + bind("s") + EXECUTE + SYNC + FLUSH,
    msg("G", b"\x00\x00\x00") + msg("d", b"1\n") + COPY_DONE + msg("f", b"no\x00") + SYNC,
    ROW_DESCRIPTION + ROW + complete("SELECT 1") + msg("E", error_fields("22012")) + ready("E"),
]


def _mutated(seed: bytes, edits: list[tuple[int, int]], length: int) -> bytes:
    data = bytearray(seed)
    for where, byte in edits:
        data[where % len(data)] = byte
    return bytes(data[: max(1, length)])


_hostile = st.one_of(
    st.binary(min_size=1, max_size=300),
    st.builds(
        _mutated,
        st.sampled_from(_HOSTILE_SEEDS),
        st.lists(st.tuples(st.integers(0, 400), st.integers(0, 255)), max_size=6),
        st.integers(1, 400),
    ),
)


@pytest.mark.parametrize("phase", [pg.STARTUP, pg.NEGOTIATING, pg.AUTH, pg.READY])
@pytest.mark.parametrize("side", [">", "<"])
@settings(max_examples=200, deadline=None)
@given(data=_hostile, points=st.lists(st.integers(0, 400), max_size=5))
def test_any_bytes_are_framed_or_refused(phase, side, data, points):
    client = RequestFramer(Conversation())
    client.conversation.phase = phase
    client.conversation.negotiating = "ssl" if phase == pg.NEGOTIATING else None
    # In normal operation the server's bytes answer a query (and may follow a COPY).
    asked = [(">", sql_query("COPY t FROM STDIN"))] if phase == pg.READY and side == "<" else []
    try:
        replay(asked + [(side, piece) for piece in cut(data, points)], client)
    except ProtocolError:
        pass


# -- sessions psycopg has with a real server, through a recording relay -----------------------


class Relay:
    """A small threaded proxy in front of the server: it records both directions as they
    pass, frames them with the framers under test, and answers the requests ``fail`` picks with
    :func:`error_response` (of ``code`` and ``severity``) instead of passing them on; with
    ``cut`` it sends only the error, without ReadyForQuery, and closes the connection."""

    def __init__(self, backend: tuple[str, int], fail: Callable[[Request], bool] | None = None):
        self.backend = backend
        self.fail = fail or (lambda request: False)
        self.code = pg.ADMIN_SHUTDOWN
        self.severity = "ERROR"
        self.cut = False
        self.transcripts: list[Transcript] = []
        self.finished = 0  # sessions over
        self.errors: list[BaseException] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def conninfo(self, server, **kwargs) -> str:
        return server.conninfo(host="127.0.0.1", port=self.port, **kwargs)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._session, args=(client,), daemon=True).start()

    def _session(self, client: socket.socket) -> None:
        transcript: Transcript = []
        self.transcripts.append(transcript)
        requests, answers = framers()
        pending: collections.deque = collections.deque()
        lock = threading.Lock()  # one direction frames at a time: they share the conversation
        backend = socket.create_connection(self.backend, timeout=IO_TIMEOUT)
        client.settimeout(IO_TIMEOUT)

        def from_client() -> None:
            kept = bytearray()  # the request in progress, passed on or failed once it is whole
            while chunk := client.recv(65536):
                with lock:
                    transcript.append((">", chunk))
                    pos = 0
                    while pos < len(chunk):
                        start = pos
                        pos, event = requests.feed(chunk, pos, len(chunk))
                        kept += chunk[start:pos]
                        if event is not None:
                            if event.expects and self.fail(event):
                                status = None if self.cut else requests.conversation.error_status
                                client.sendall(
                                    error_response(self.code, severity=self.severity, status=status)
                                )
                                if self.cut:
                                    client.shutdown(socket.SHUT_RDWR)
                                    backend.shutdown(socket.SHUT_RDWR)
                                    return
                            else:
                                if event.expects:
                                    pending.append(event)
                                backend.sendall(kept)
                            kept.clear()
                    if requests.conversation.phase == pg.STREAM:
                        backend.sendall(kept)
                        kept.clear()
            backend.shutdown(socket.SHUT_WR)

        def from_backend() -> None:
            while chunk := backend.recv(65536):
                with lock:
                    transcript.append(("<", chunk))
                    pos = 0
                    while pos < len(chunk):
                        if answers.idle:
                            answers.begin(pending[0] if pending else None)
                        pos, event = answers.feed(chunk, pos, len(chunk))
                        if isinstance(event, Answer) and event.final and pending:
                            pending.popleft()
                client.sendall(chunk)
            client.shutdown(socket.SHUT_WR)

        def run(pump: Callable[[], None]) -> None:
            try:
                pump()
            except OSError:
                pass
            except BaseException as e:  # a framer that fails on real traffic fails the test
                self.errors.append(e)
                client.close()
                backend.close()

        threads = [
            threading.Thread(target=run, args=(pump,)) for pump in (from_client, from_backend)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        client.close()
        backend.close()
        self.finished += 1

    def close(self) -> None:
        self.listener.close()
        assert not self.errors, self.errors


@pytest.fixture
def relay(postgres_server):
    relay = Relay((postgres_server.host, postgres_server.port))
    yield relay
    relay.close()


def a_psycopg_session(conninfo: str) -> None:
    """A session that uses what the protocol offers: simple and extended queries, prepared
    statements, a pipeline, COPY both ways, notices, notifications, errors, a large row."""
    with psycopg.connect(conninfo) as conn:
        conn.execute("SELECT %s::int", (1,)).fetchone()
        conn.commit()
        conn.autocommit = True
        conn.execute("CREATE TEMPORARY TABLE t (a int, b text)")
        with conn.cursor().copy("COPY t FROM STDIN") as copy:
            for i in range(100):
                copy.write_row((i, f"row {i}"))
        with conn.cursor().copy("COPY t TO STDOUT") as copy:
            assert len(list(copy.rows())) == 100
        with (
            pytest.raises(psycopg.errors.QueryCanceled),
            conn.cursor().copy("COPY t FROM STDIN") as copy,
        ):
            copy.write_row((1, "x"))
            raise psycopg.errors.QueryCanceled("stop")
        for i in range(7):  # psycopg prepares the statement from the sixth time
            assert conn.execute("SELECT %s::int + 1", (i,)).fetchone() == (i + 1,)
        conn.execute("LISTEN ch")
        conn.execute("NOTIFY ch, 'hi'")
        conn.execute("DO $$BEGIN RAISE NOTICE 'note'; END$$")
        with pytest.raises(psycopg.errors.DivisionByZero):
            conn.execute("SELECT 1/0")
        with conn.pipeline():
            conn.execute("SELECT 1")
            conn.execute("SELECT %s", (2,))
        assert conn.execute("SELECT 1; SELECT 2", prepare=False).fetchone() == (1,)
        big = conn.execute("SELECT repeat('x', 300000)").fetchone()[0]
        assert len(big) == 300_000


@pytest.fixture(scope="module")
def recorded(postgres_server) -> Transcript:
    """A psycopg session, as the relay saw it (one recording for the split tests)."""
    relay = Relay((postgres_server.host, postgres_server.port))
    a_psycopg_session(relay.conninfo(postgres_server, scram=True))
    wait_until(lambda: relay.finished == 1)
    relay.close()
    return relay.transcripts[0]


def test_a_recorded_psycopg_session_frames_as_expected(recorded):
    events, pending = replay(recorded)
    names = kinds(events)
    assert names[:3] == ["> Startup", "< Handshake R", "> Request p"]  # SCRAM
    assert names.count("< Handshake Z") == 1 and names[-1] == "> Request X"
    assert pending == []
    # Each request that expects an answer got exactly one ReadyForQuery.
    asked = [e for d, _, e in events if d == ">" and e.expects]
    assert len(asked) == names.count("< Answer Z") >= 20
    copies = [e for _, _, e in events if isinstance(e, CopyData)]
    assert [copy.failed for copy in copies] == [False, True] and copies[0].count >= 2
    assert names.count("< Answer G") == 2
    prepared = [e for _, _, e in events if isinstance(e, Batch) and e.kinds.startswith("B")]
    assert prepared and prepared[0].sql == "SELECT $1::int + 1"
    errors = [e.error for _, _, e in events if isinstance(e, Answer) and e.error]
    assert errors == ["57014", "22012"]


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.data_too_large])
@given(data=st.data())
def test_the_recorded_session_split_anywhere_frames_the_same(recorded, data):
    total = sum(len(chunk) for _, chunk in recorded)
    points = data.draw(st.lists(st.integers(0, total), max_size=40))
    same_events_under_any_split(recorded, points)


def test_a_recorded_session_split_at_every_byte_frames_the_same(recorded):
    head = recorded[:12]  # start-up, SCRAM and the first queries, byte by byte
    total = sum(len(chunk) for _, chunk in head)
    same_events_under_any_split(head, range(total))


def test_a_tls_session_becomes_a_stream(postgres_server, relay):
    with psycopg.connect(relay.conninfo(postgres_server, sslmode="require")) as conn:
        assert conn.pgconn.ssl_in_use and conn.execute("SELECT 1").fetchone() == (1,)
    wait_until(lambda: relay.finished == 1)
    events, _ = replay(relay.transcripts[0])
    assert kinds(events) == ["> Startup", "< Handshake S"]
    assert events[1][2].stream == "TLS"


def test_a_cancel_request_passes(postgres_server, relay):
    with psycopg.connect(relay.conninfo(postgres_server), autocommit=True) as conn:
        timer = threading.Timer(0.5, conn.cancel_safe)
        timer.start()
        with pytest.raises(psycopg.errors.QueryCanceled):
            conn.execute("SELECT pg_sleep(20)")
        timer.join()
        assert conn.execute("SELECT 1").fetchone() == (1,)
    wait_until(lambda: relay.finished == 2)
    cancels = [replay(transcript)[0] for transcript in relay.transcripts]
    assert ["> Startup"] in [kinds(events) for events in cancels]


# -- the error form ---------------------------------------------------------------------------


def test_error_response_is_an_error_then_ready_for_query():
    data = error_response("40001", "retry me", status="E")
    fields = cstr("SERROR", "VERROR", "C40001", "Mretry me") + b"\x00"
    assert data == msg("E", fields) + ready("E")
    events, _ = replay(ready_session((">", sql_query("UPDATE t SET a = 1")), ("<", data)))
    assert (events[-1][2].error, events[-1][2].status) == ("40001", "E")
    assert error_response(status=None) == msg("E", error_fields_of(pg.ADMIN_SHUTDOWN))
    assert b"CYY001\x00" in error_response(pg.sqlstate(" yy001 "))


def error_fields_of(code: str) -> bytes:
    return cstr("SERROR", "VERROR", f"C{code}", f"M{pg.ERROR_MESSAGE}") + b"\x00"


@pytest.mark.parametrize(
    "kwargs",
    [{"code": "5701"}, {"code": "57P0!"}, {"severity": "WARNING"}, {"status": "X"}],
)
def test_error_response_refuses_what_is_not_an_error(kwargs):
    with pytest.raises(ValueError):
        error_response(**kwargs)


def test_the_error_status_fails_a_transaction_block():
    conversation = Conversation()
    assert conversation.error_status == "I"
    for status, expected in (("I", "I"), ("T", "E"), ("E", "E")):
        conversation.status = status
        assert conversation.error_status == expected


@pytest.mark.parametrize("severity", ["ERROR", "FATAL"])
@pytest.mark.parametrize("extended", [False, True])
def test_psycopg_raises_the_sqlstate_and_its_connection_goes_on(
    postgres_server, extended, severity
):
    # psycopg (libpq) does not act on the severity: the connection lives as long as nobody
    # closes it. ERROR is the default all the same, since a server that says FATAL closes.
    relay = Relay(
        (postgres_server.host, postgres_server.port),
        fail=lambda request: "fail me" in (request.sql or ""),
    )
    relay.severity = severity
    try:
        with psycopg.connect(relay.conninfo(postgres_server), autocommit=True) as conn:
            run = (
                (lambda: conn.execute("SELECT 'fail me', %s::int", (1,)))
                if extended
                else (lambda: conn.execute("SELECT 'fail me'"))
            )
            with pytest.raises(psycopg.errors.AdminShutdown, match=pg.ERROR_MESSAGE):
                run()
            assert not conn.closed and not conn.broken
            assert conn.execute("SELECT 2").fetchone() == (2,)
            relay.code = "40001"
            with pytest.raises(psycopg.errors.SerializationFailure):
                run()
            assert conn.execute("SELECT %s::int", (3,)).fetchone() == (3,)
    finally:
        relay.close()


def test_a_fatal_error_then_a_close_breaks_the_connection(postgres_server):
    relay = Relay((postgres_server.host, postgres_server.port), fail=lambda request: True)
    relay.code, relay.severity, relay.cut = pg.CONNECTION_FAILURE, "FATAL", True
    try:
        with psycopg.connect(relay.conninfo(postgres_server), autocommit=True) as conn:
            with pytest.raises(psycopg.errors.ConnectionFailure, match=pg.ERROR_MESSAGE):
                conn.execute("SELECT 1")
            assert conn.broken
    finally:
        relay.close()


def test_an_error_in_a_transaction_leaves_it_failed_and_rollback_recovers(postgres_server):
    relay = Relay(
        (postgres_server.host, postgres_server.port),
        fail=lambda request: "fail me" in (request.sql or ""),
    )
    try:
        with psycopg.connect(relay.conninfo(postgres_server)) as conn:
            conn.execute("CREATE TEMPORARY TABLE t (a int)")
            conn.execute("INSERT INTO t VALUES (1)")
            with pytest.raises(psycopg.errors.AdminShutdown):
                conn.execute("SELECT 'fail me'")
            assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INERROR
            conn.rollback()
            assert conn.execute("SELECT to_regclass('t')").fetchone() == (None,)
            assert conn.execute("SELECT 5").fetchone() == (5,)
    finally:
        relay.close()
