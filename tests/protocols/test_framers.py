"""Properties of every framer: fed a protocol's bytes split anywhere, it frames them as it
does whole; fed any bytes at all, it frames them or raises ProtocolError, nothing else.

A session that gets traffic that is not its protocol ends with one log line (ProtocolError);
any other exception would be a bug in a framer.
"""

import struct
import types

import pytest
import test_http
import test_memcache
import test_mysql
import test_redis
import test_smtp
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol_support import cut, same_under_any_split
from vaurien.errors import ProtocolError
from vaurien.protocols import memcache, smtp
from vaurien.protocols.framed import HOLD
from vaurien.protocols.http import framing as http
from vaurien.protocols.mysql import framing as mysql
from vaurien.protocols.postgres import framing as postgres
from vaurien.protocols.postgres import messages as pg
from vaurien.protocols.redis import framing as redis


def _mysql_talk(phase):
    talk = mysql.Conversation()
    talk.phase = phase
    if phase is mysql.COMMANDS:
        talk.server_caps = talk.client_caps = 0x200 | 0x01000000
    return talk


def _postgres_talk(phase):
    talk = pg.Conversation()
    talk.phase = phase
    return talk


REQUEST_FRAMERS = {
    "redis": redis.CommandFramer,
    "memcache": memcache.CommandFramer,
    "smtp": smtp.CommandFramer,
    "mysql-auth": lambda: mysql.CommandFramer(_mysql_talk(mysql.AUTH)),
    "mysql": lambda: mysql.CommandFramer(_mysql_talk(mysql.COMMANDS)),
    "http": lambda: http.RequestFramer(http.HeadParser()),
    "postgres-startup": lambda: postgres.RequestFramer(pg.Conversation()),
    "postgres-auth": lambda: postgres.RequestFramer(_postgres_talk(pg.AUTH)),
    "postgres": lambda: postgres.RequestFramer(_postgres_talk(pg.READY)),
}

_GET = memcache.Command([b"get", b"a"])
_HEAD = types.SimpleNamespace(info=types.SimpleNamespace(method=b"HEAD"))  # a HEAD request
ANSWER_FRAMERS = {
    "redis": (redis.ReplyFramer, [None]),
    "memcache": (memcache.AnswerFramer, [_GET, None]),
    "smtp": (smtp.ReplyFramer, [None]),
    "mysql-greeting": (lambda: mysql.ResultFramer(_mysql_talk(mysql.GREETING)), [None]),
    "mysql": (
        lambda: mysql.ResultFramer(_mysql_talk(mysql.COMMANDS)),
        [mysql.Command(code, 0) for code in (0x03, 0x16, 0x17, 0x1C, 0x04, 0x11, 0x0E)],
    ),
    "http": (lambda: http.ResponseFramer(http.HeadParser()), [None, _HEAD]),
    "postgres-startup": (lambda: postgres.AnswerFramer(pg.Conversation()), [None]),
    "postgres-auth": (lambda: postgres.AnswerFramer(_postgres_talk(pg.AUTH)), [None]),
    "postgres": (
        lambda: postgres.AnswerFramer(_postgres_talk(pg.READY)),
        [pg.Query("SELECT 1"), pg.Batch("S", "PBDES", 5, True, None), None],
    ),
}


def _pg(kind: str, body: bytes = b"") -> bytes:
    """A PostgreSQL message."""
    return kind.encode() + struct.pack("!i", 4 + len(body)) + body


#: Bytes that look like each protocol, to mutate: random bytes alone rarely go deep.
SEEDS = [
    b"*2\r\n$3\r\nGET\r\n$1\r\na\r\n+OK\r\n$-1\r\n%1\r\n+a\r\n|1\r\n",
    b"set a 0 0 5\r\nhello\r\nVALUE a 0 2\r\nhi\r\nEND\r\nVA 2 f\r\nok\r\n",
    b"250-a\r\n250 b\r\nDATA\r\n.\r\n354 go\r\n",
    b"\x05\x00\x00\x00\x03sel\x01\x00\x00\x01\x01\x05\x00\x00\x02\xfe\x00\x00\x02\x00",
    b"\x01\x00\x00\x01\x00\x07\x00\x00\x01\x00\x00\x00\x02\x00\x00\x00\x0c\x00\x00\x01\x00",
    b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabcHTTP/1.1 200 OK\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    # PostgreSQL: a StartupMessage, a Query, a batch; AuthenticationOk, a row, ReadyForQuery,
    # a CopyInResponse and CopyData.
    struct.pack("!ii", 17, 196608)
    + b"user\x00me\x00\x00"
    + _pg("Q", b"SELECT 1\x00")
    + _pg("P", b"\x00x\x00\x00\x00")
    + _pg("B", bytes(8))
    + _pg("S"),
    _pg("R", bytes(4))
    + _pg("D", b"\x00\x01\x00\x00\x00\x011")
    + _pg("Z", b"I")
    + _pg("G", bytes(3))
    + _pg("d", b"x")
    + _pg("c"),
]

_bytes = st.one_of(
    st.binary(max_size=300),
    st.tuples(
        st.sampled_from(SEEDS),
        st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)), max_size=6),
        st.integers(0, 200),
    ).map(lambda t: _mutate(*t)),
)


def _mutate(seed: bytes, edits, cut_at: int) -> bytes:
    data = bytearray(seed)
    for where, byte in edits:
        data[where % len(data)] = byte
    return bytes(data[: max(1, cut_at)] if cut_at < len(data) else data)


def _drive(framer, chunks, requests=None):
    pending = list(requests or [])
    for chunk in chunks:
        pos = 0
        while pos < len(chunk):
            if requests is not None and framer.idle:
                framer.begin(pending.pop(0) if pending else None)
            newpos, event = framer.feed(chunk, pos, len(chunk))
            assert pos <= newpos <= len(chunk)
            assert newpos > pos or (event is not None and event is not HOLD)
            pos = newpos
    framer.feed_eof()


@pytest.mark.parametrize("name", sorted(REQUEST_FRAMERS))
@settings(max_examples=250, deadline=None)
@given(data=_bytes, points=st.lists(st.integers(0, 300), max_size=5))
def test_request_framers_frame_any_bytes_or_refuse_them(name, data, points):
    try:
        _drive(REQUEST_FRAMERS[name](), cut(data, points))
    except ProtocolError:
        pass


@pytest.mark.parametrize("name", sorted(ANSWER_FRAMERS))
@settings(max_examples=250, deadline=None)
@given(data=_bytes, points=st.lists(st.integers(0, 300), max_size=5))
def test_answer_framers_frame_any_bytes_or_refuse_them(name, data, points):
    factory, requests = ANSWER_FRAMERS[name]
    try:
        _drive(factory(), cut(data, points), requests * 20)
    except ProtocolError:
        pass


#: Each protocol's sample traffic (from its own test module): the framer, the bytes, and the
#: requests an answer framer is told about (``begin``), or what to tell a request framer after
#: each message (``after``).
SAMPLES = {
    "redis commands": (redis.CommandFramer, test_redis.COMMANDS, None, None),
    "redis replies": (redis.ReplyFramer, test_redis.REPLIES, None, None),
    "memcache commands": (memcache.CommandFramer, test_memcache.COMMANDS, None, None),
    "memcache answers": (
        memcache.AnswerFramer,
        test_memcache.ANSWER_BYTES,
        test_memcache.ANSWER_REQUESTS,
        None,
    ),
    "http requests": (
        lambda: http.RequestFramer(http.HeadParser()),
        test_http.REQUESTS,
        None,
        None,
    ),
    "http responses": (
        lambda: http.ResponseFramer(http.HeadParser()),
        test_http.RESPONSE_BYTES,
        test_http.RESPONSE_REQUESTS,
        None,
    ),
    "smtp commands": (smtp.CommandFramer, test_smtp.COMMANDS, None, test_smtp.accept_data),
    "smtp replies": (smtp.ReplyFramer, test_smtp.REPLIES, [None] * 7, None),
    "mysql results": (
        lambda: mysql.ResultFramer(test_mysql.conversation()),
        test_mysql.ANSWER_BYTES,
        test_mysql.ANSWER_REQUESTS,
        None,
    ),
}


@pytest.mark.parametrize("name", sorted(SAMPLES))
@settings(max_examples=300, deadline=None)
@given(cuts=st.lists(st.floats(0, 1), max_size=12))
def test_framing_split_anywhere_frames_the_same(name, cuts):
    factory, data, requests, after = SAMPLES[name]
    points = [int(cut_at * len(data)) for cut_at in cuts]
    same_under_any_split(factory, data, points, requests, after)
