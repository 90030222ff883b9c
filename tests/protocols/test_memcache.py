"""memcache: text-protocol framing on bytes, and real memcached sessions through the proxy."""

import logging
import socket
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pymemcache.client.base import Client
from pymemcache.exceptions import MemcacheServerError, MemcacheUnexpectedCloseError

from protocol_support import error_on_calls, peeks, run
from support import recv_exactly, wait_until
from vaurien.errors import ProtocolError
from vaurien.protocols.memcache import AnswerFramer, Command, CommandFramer

# -- framing ----------------------------------------------------------------------------------

COMMANDS = (
    b"set a 0 0 5\r\nhello\r\n"
    b"get a b c\r\n"
    b"cas a 0 0 2 99 noreply\r\nhi\r\n"
    b"incr n 5\r\n"
    b"ms k 3 T0 q\r\nabc\r\n"
    b"mg k v q k\r\n"
    b"mn\r\n"
    b"stats\r\n"
    b"append a 0 0 0\r\n\r\n"
)

#: Answers, each with the command it answers.
ANSWERS = [
    (b"set a 0 0 5", b"STORED\r\n"),
    (b"get a b c", b"VALUE a 0 5\r\nhello\r\nVALUE c 3 2 77\r\nhi\r\nEND\r\n"),
    (b"get nothing", b"END\r\n"),
    (b"incr n 5", b"6\r\n"),
    (b"mg k v", b"VA 3 t-1\r\nabc\r\n"),
    (b"mg k", b"HD\r\n"),
    (b"mg missing v", b"EN\r\n"),
    (b"stats", b"STAT pid 1\r\nSTAT uptime 2\r\nEND\r\n"),
    (b"stats reset", b"RESET\r\n"),
    (b"get a", b"SERVER_ERROR out of memory\r\n"),
    (b"version", b"VERSION 1.6.18\r\n"),
]
ANSWER_BYTES = b"".join(answer for _, answer in ANSWERS)
ANSWER_REQUESTS = [Command(line.split()) for line, _ in ANSWERS]


_LINES = st.sampled_from(
    [
        b"get a\r\n",
        b"gets a b\r\n",
        b"set a 0 0 3\r\nabc\r\n",
        b"set a 0 0 2 noreply\r\nhi\r\n",
        b"incr n 1\r\n",
        b"mg k v\r\n",
        b"mg k v q\r\n",
        b"quit\r\n",
        b"stats\r\n",
        b"append a 0 0 0\r\n\r\n",
    ]
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_LINES, max_size=12), st.integers(0, 300), st.integers(1, 12))
def test_a_skimmed_run_ends_where_framing_command_by_command_does(lines, stop, most):
    """skim frames the plain commands ahead in one go, all answered alike (all lists, or all
    not): it stops before a command that is not plain, or not all there, or answered
    otherwise, exactly where the framer ends the commands before it."""
    from vaurien.protocols.memcache import Memcache

    data = b"".join(lines)
    data = data[:stop] if stop < len(data) else data
    newpos, count, first = Memcache().skim(None, data, 0, len(data))
    _, ends = run(CommandFramer(), [data])
    plain = 0
    for _, event in ends:
        if event.noreply or event.quiet or event.name == b"quit":
            break
        if event.listing is not ends[0][1].listing:
            break
        plain += 1
    assert count == plain
    assert newpos == (ends[plain - 1][0] if plain else 0)
    assert (first is None) == (plain == 0)
    newpos, count, _ = Memcache().skim(None, data, 0, len(data), most=most)
    assert count == min(plain, most)
    assert newpos == (ends[count - 1][0] if count else 0)


def test_commands_end_after_their_data_blocks():
    passed, ends = run(CommandFramer(), [COMMANDS])
    assert passed == COMMANDS
    assert [event.name for _, event in ends] == [
        b"set",
        b"get",
        b"cas",
        b"incr",
        b"ms",
        b"mg",
        b"mn",
        b"stats",
        b"append",
    ]
    assert ends[0][0] == len(b"set a 0 0 5\r\nhello\r\n")
    assert ends[2][1].noreply and ends[4][1].quiet and ends[5][1].quiet
    assert not ends[6][1].quiet and ends[7][1].listing


def test_answers_end_where_the_command_says():
    passed, ends = run(AnswerFramer(), [ANSWER_BYTES], ANSWER_REQUESTS)
    assert passed == ANSWER_BYTES
    offsets, total = [], 0
    for _, answer in ANSWERS:
        total += len(answer)
        offsets.append(total)
    assert [offset for offset, _ in ends] == offsets


def test_a_big_value_is_counted_through_not_kept():
    framer = AnswerFramer()
    framer.begin(Command([b"get", b"big"]))
    size = 20 << 20
    head = b"VALUE big 0 %d\r\n" % size
    assert framer.feed(head, 0, len(head))[1].first == b"VALUE"
    chunk = bytes(65536)
    for _ in range(size // len(chunk)):
        assert framer.feed(chunk, 0, len(chunk)) == (len(chunk), None)
        assert framer._lines.held == 0
    tail = b"\r\nEND\r\n"
    assert framer.feed(tail, 0, len(tail))[1].first == b"VALUE"


@pytest.mark.parametrize("junk", [b"\x80\x01\x00\x00", b"x" * 9000])
def test_the_binary_protocol_and_endless_lines_are_protocol_errors(junk):
    with pytest.raises(ProtocolError):
        run(CommandFramer(), [junk])


def test_a_value_without_its_crlf_is_a_protocol_error():
    with pytest.raises(ProtocolError):
        run(AnswerFramer(), [b"VALUE a 0 2\r\nhiXX"], [Command([b"get", b"a"])])


# -- sessions with memcached ------------------------------------------------------------------


@pytest.fixture
def direct(memcached_server):
    client = Client((memcached_server.host, memcached_server.port), default_noreply=False)
    yield client
    client.close()


def start(start_proxy, memcached_server, **settings):
    settings.setdefault("timeout", 30)
    return start_proxy(memcached_server.address, protocol="memcache", **settings)


def connect(proxy, timeout=10):
    # Answers wanted: pymemcache sends its storage commands with noreply unless told not to.
    return Client(proxy.address, timeout=timeout, connect_timeout=timeout, default_noreply=False)


def realistic_session(client, prefix):
    big = bytes(range(256)) * 2048  # 512 KiB
    results = [
        client.set(prefix + "a", b"1"),
        client.get(prefix + "a"),
        sorted(client.get_many([prefix + "a", prefix + "missing", prefix + "b"]).values()),
        client.add(prefix + "a", b"2"),
        client.replace(prefix + "a", b"3"),
        client.append(prefix + "a", b"4"),
        client.prepend(prefix + "a", b"0"),
        client.get(prefix + "a"),
        client.incr(prefix + "n", 1),
        client.set(prefix + "n", b"10"),
        client.incr(prefix + "n", 5),
        client.decr(prefix + "n", 2),
        client.touch(prefix + "n", 100),
        client.set(prefix + "big", big),
        client.get(prefix + "big") == big,
        client.set_many({prefix + f"k{i}": str(i) for i in range(100)}),
        len(client.get_many([prefix + f"k{i}" for i in range(100)])),
        client.set(prefix + "q", b"x", noreply=True),
        client.delete(prefix + "q"),
        client.delete(prefix + "q"),
        sorted(client.version().split(b".")[:1]),
        "pid" in {k.decode() for k in client.stats()},
    ]
    value, cas = client.gets(prefix + "a")
    results += [value, client.cas(prefix + "a", b"new", cas), client.cas(prefix + "a", b"x", cas)]
    return results


def test_a_realistic_session_through_dummy_gets_the_direct_results(
    memcached_server, start_proxy, direct
):
    proxy = start(start_proxy, memcached_server)
    expected = realistic_session(direct, "direct:")
    client = connect(proxy)
    assert realistic_session(client, "proxied:") == expected
    client.close()


def meta(sock, request, expected):
    sock.sendall(request)
    assert recv_exactly(sock, len(expected)) == expected


def test_quiet_meta_commands_are_followed_with_the_proxys_own_mn(memcached_server, start_proxy):
    proxy = start(start_proxy, memcached_server)
    with proxy.connect() as sock:
        meta(sock, b"ms mq 2 T0\r\nhi\r\n", b"HD\r\n")
        # A quiet hit answers, a quiet miss says nothing, mn ends the batch.
        meta(sock, b"mg mq v q k\r\nmg none v q\r\nmn\r\n", b"VA 2 kmq\r\nhi\r\nMN\r\n")
        meta(sock, b"ms mq 2 q\r\nok\r\nmd none q\r\nmn\r\n", b"NF\r\nMN\r\n")
        meta(sock, b"mg mq v\r\n", b"VA 2\r\nok\r\n")


def test_an_error_after_quiet_commands_comes_in_its_place(memcached_server, start_proxy):
    proxy = start(start_proxy, memcached_server)
    error_on_calls(proxy, "4")
    with proxy.connect() as sock:
        meta(sock, b"ms eq 1 T0\r\na\r\n", b"HD\r\n")
        # The quiet hit's answer comes from the server, later than the proxy could answer
        # the fourth command: the SERVER_ERROR waits for it, and for the quiet miss.
        meta(
            sock,
            b"mg eq v q\r\nmg none v q\r\nmg eq\r\nmn\r\n",
            b"VA 1\r\na\r\nSERVER_ERROR error injected by vaurien\r\nMN\r\n",
        )


def test_noreply_commands_get_no_answer_even_with_error(memcached_server, start_proxy, direct):
    proxy = start(start_proxy, memcached_server)
    error_on_calls(proxy, "1")
    with proxy.connect() as sock:
        # The first is dropped without a word (its client reads no answer), the second runs.
        meta(sock, b"set nr 0 0 1 noreply\r\na\r\nset nr2 0 0 1\r\nb\r\n", b"STORED\r\n")
    assert direct.get("nr") is None and direct.get("nr2") == b"b"


def test_error_answers_server_error_and_the_backend_never_sees_it(
    memcached_server, start_proxy, direct
):
    proxy = start(start_proxy, memcached_server)
    client = connect(proxy)
    assert client.set("err:before", b"1")
    proxy.call(proxy.proxy.set_behavior, "100:error")
    with pytest.raises(MemcacheServerError, match="injected by vaurien"):
        client.set("err:key", b"1")
    with pytest.raises(MemcacheServerError):
        client.get_many(["err:before", "err:key"])
    assert direct.get("err:key") is None
    proxy.call(proxy.proxy.set_behavior, "100:dummy")
    assert client.get("err:before") == b"1"
    client.close()


def test_delay_holds_each_request(memcached_server, start_proxy):
    proxy = start(start_proxy, memcached_server)
    client = connect(proxy)
    client.version()
    proxy.call(proxy.proxy.set_behavior, "100:delay", {"delay": {"sleep": 0.5}})
    started = time.monotonic()
    client.get("delayed")
    assert 0.45 < time.monotonic() - started < 10
    proxy.call(proxy.proxy.set_behavior, "100:dummy")
    started = time.monotonic()
    client.get("delayed")
    assert time.monotonic() - started < 0.4
    client.close()


def test_abort_lets_the_command_run_and_closes_before_its_answer(
    memcached_server, start_proxy, direct
):
    proxy = start(start_proxy, memcached_server)
    client = connect(proxy)
    client.version()
    proxy.call(proxy.proxy.set_behavior, "100:abort")
    with pytest.raises((MemcacheUnexpectedCloseError, ConnectionError)):
        client.set("abort:key", b"done")
    wait_until(lambda: direct.get("abort:key") == b"done")


def test_blackout_closes_and_the_command_never_runs(memcached_server, start_proxy, direct):
    proxy = start(start_proxy, memcached_server)
    client = connect(proxy)
    client.version()
    proxy.call(proxy.proxy.set_behavior, "100:blackout")
    with pytest.raises((MemcacheUnexpectedCloseError, ConnectionError)):
        client.set("blackout:key", b"done")
    assert direct.get("blackout:key") is None


def test_hang_leaves_the_client_waiting(memcached_server, start_proxy, direct):
    proxy = start(start_proxy, memcached_server)
    client = connect(proxy, timeout=1)
    client.version()
    proxy.call(proxy.proxy.set_behavior, "100:hang")
    started = time.monotonic()
    with pytest.raises(socket.timeout):
        client.set("hang:key", b"1")
    assert time.monotonic() - started > 0.9
    assert direct.get("hang:key") is None


def test_the_binary_protocol_ends_the_session_with_one_line(memcached_server, start_proxy, caplog):
    proxy = start(start_proxy, memcached_server)
    caplog.set_level(logging.WARNING, logger="vaurien")
    with proxy.connect() as sock:
        sock.sendall(b"\x80\x0b\x00\x00" + bytes(20))  # a binary "version" request
        assert sock.recv(100) == b""
    wait_until(lambda: [r for r in caplog.records if r.levelno >= logging.WARNING])
    lines = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(lines) == 1 and "binary protocol" in lines[0].getMessage()
    client = connect(proxy)
    assert client.version()  # still serving
    client.close()


# -- what rules see ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "request_, fields",
    [
        (b"get a b c\r\n", ("get", "a")),
        (b"set cart:1 0 0 5 noreply\r\nhello\r\n", ("set", "cart:1")),
        (b"gat 60 k1 k2\r\n", ("gat", "k1")),
        (b"mg key v\r\n", ("mg", "key")),
        (b"stats items\r\n", ("stats", None)),
    ],
)
def test_rules_see_the_command_and_its_first_key(request_, fields):
    from vaurien.protocols.memcache import Memcache

    assert tuple(peeks(Memcache(), None, request_, ("command", "key")).values()) == fields
