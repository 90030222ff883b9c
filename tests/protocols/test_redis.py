"""redis: RESP framing on bytes, and real redis-server sessions through the proxy."""

import gc
import logging
import socket
import time
import weakref

import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol_support import cut, error_on_calls, peeks, run
from support import recv_exactly, wait_until
from vaurien.errors import ProtocolError
from vaurien.protocols.redis.framing import CommandFramer, ReplyFramer

# -- framing ----------------------------------------------------------------------------------


def command(*args: bytes) -> bytes:
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)


COMMANDS = (
    command(b"SET", b"key", b"value")
    + b"PING\r\n"
    + b"\r\n"
    + command(b"CLIENT", b"REPLY", b"OFF")
    + command(b"SET", b"big", b"x" * 300)
    + b"*0\r\n"
    + command(b"subscribe", b"a", b"b")
)

REPLIES = (
    b"+OK\r\n-ERR wrong\r\n:42\r\n$5\r\nhello\r\n$-1\r\n*-1\r\n*0\r\n"
    b"*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$3\r\nabc\r\n"
    b"*2\r\n*2\r\n:1\r\n:2\r\n*1\r\n$0\r\n\r\n"  # nested arrays
    b"_\r\n,3.14\r\n#t\r\n(12345678901234567890\r\n!5\r\nwrong\r\n=9\r\ntxt:hello\r\n"
    b"%2\r\n+a\r\n:1\r\n+b\r\n~2\r\n:1\r\n:2\r\n"  # a map holding a set
    b">3\r\n$9\r\nsubscribe\r\n$1\r\nc\r\n:1\r\n"  # a push
    b"|1\r\n+ttl\r\n:3\r\n:7\r\n"  # an attribute, then the value it annotates
    b"$?\r\n;4\r\nHell\r\n;1\r\no\r\n;0\r\n"  # a streamed string
    b"*?\r\n:1\r\n*?\r\n.\r\n.\r\n"  # streamed aggregates
)


def test_commands_end_where_each_command_ends():
    passed, ends = run(CommandFramer(), [COMMANDS])
    assert passed == COMMANDS
    names = [event.name for _, event in ends]
    assert names == [b"set", b"ping", b"", b"client", b"set", b"", b"subscribe"]
    assert ends[0][0] == len(command(b"SET", b"key", b"value"))
    assert ends[3][1].args == [b"CLIENT", b"REPLY", b"OFF"]
    assert ends[-1][1].argc == 3


def test_replies_of_every_type_end_where_each_value_ends():
    passed, ends = run(ReplyFramer(), [REPLIES])
    assert passed == REPLIES
    types = b"".join(event.type for _, event in ends)
    assert types == b"+-:$$**" + b"**" + b"_,#(!=" + b"%" + b">" + b":" + b"$" + b"*"
    firsts = [event.first for _, event in ends if event.first]
    assert firsts == [b"message", b"subscribe"]


_args = st.lists(st.binary(max_size=40), min_size=1, max_size=4)
_names = st.sampled_from([b"GET", b"SET", b"incr", b"CLIENT", b"Subscribe", b"monitor", b"x"])


# Pipelines repeat shapes (skim frames a run of one shape in one match): arguments of a few
# lengths, bytes that look like RESP among them.
_same_lengths = st.lists(
    st.sampled_from([b"k", b"\r\n", b"$1\r\n", b"key:1", b"key:2", b"*2\r\n$3\r\n"]),
    min_size=1,
    max_size=3,
)
_shaped = st.tuples(st.sampled_from([b"GET", b"get", b"SET", b"CLIENT", b"x"]), _same_lengths)


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(st.lists(st.tuples(_names, _args), max_size=12), st.lists(_shaped, max_size=24)),
    st.integers(0, 600),
    st.integers(1, 24),
)
def test_a_skimmed_run_ends_where_framing_command_by_command_does(commands, stop, most):
    """skim frames the plain commands ahead in one go: it stops before the first command
    whose name matters to the session, or that is not all there, exactly where the framer
    would have ended the commands before it."""
    from vaurien.protocols.redis import Redis
    from vaurien.protocols.redis.framing import RedisState

    data = b"".join(command(name, *args) for name, args in commands)
    data = data[:stop] if stop < len(data) else data
    newpos, count, first = Redis().skim(RedisState(), data, 0, len(data))
    _, ends = run(CommandFramer(), [data])
    plain = 0
    for _, event in ends:
        if event.name in (b"client", b"subscribe", b"monitor"):
            break
        plain += 1
    assert count == plain
    assert newpos == (ends[plain - 1][0] if plain else 0)
    assert (first is None) == (plain == 0)
    if plain:
        assert first.name == ends[0][1].name and first.argc == ends[0][1].argc
    # At most ``most`` (a pick for each, under chaos): runs of one shape are cut there too.
    newpos, count, _ = Redis().skim(RedisState(), data, 0, len(data), most=most)
    assert count == min(plain, most)
    assert newpos == (ends[count - 1][0] if count else 0)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from([b"GET", b"get", b"SET", b"x"]), _same_lengths), max_size=24
    ),
    st.lists(st.integers(1, 200), max_size=12),
    st.integers(1, 3),
)
def test_skimming_read_by_read_with_the_sessions_state_frames_as_the_framer(commands, cuts, most):
    """A session's state keeps the last shape skimmed, tried first on the next read: read
    after read (each ending anywhere, at most ``most`` commands a time), skim frames the same
    commands as the framer, and names each run by its own first command."""
    from vaurien.protocols.redis import Redis
    from vaurien.protocols.redis.framing import RedisState

    data = b"".join(command(name, *args) for name, args in commands)
    _, ends = run(CommandFramer(), [data])
    redis, state = Redis(), RedisState()
    pos = framed = available = 0
    for grow in [*cuts, len(data)]:
        available = min(len(data), available + grow)
        while True:
            newpos, count, first = redis.skim(state, data, pos, available, most=most)
            if not count:
                break
            assert count <= most
            assert newpos == ends[framed + count - 1][0]
            assert (first.name, first.argc) == (ends[framed][1].name, ends[framed][1].argc)
            framed += count
            pos = newpos
    assert framed == len(ends)


def test_the_last_shape_skimmed_lets_no_command_past_new_rules():
    """The shape a session skimmed with no rule in force is not tried under rules: a rule
    that takes every command gets the next one of that shape."""
    from vaurien.protocols.redis import Redis
    from vaurien.protocols.redis.framing import RedisState

    class TakesEverything:
        def rejected(self, field, value):
            return False

        def __call__(self, fields):
            return False

    redis, state = Redis(), RedisState()
    data = command(b"GET", b"key:1")
    assert redis.skim(state, data, 0, len(data))[:2] == (len(data), 1)
    assert redis.skim(state, data, 0, len(data), untaken=TakesEverything())[:2] == (0, 0)
    assert redis.skim(state, data, 0, len(data))[:2] == (len(data), 1)


PLAIN_REPLIES = (
    [b"+OK\r\n", b"+QUEUED\r\n", b":1\r\n", b":42\r\n", b"-ERR x\r\n", b"$-1\r\n", b"_\r\n"]
    + [b"$3\r\n%s\r\n" % v for v in (b"abc", b"\r\n$", b"+OK")]
    + [b"$0\r\n\r\n", b"$5\r\nhello\r\n"]
)
OTHER_REPLIES = [b"*1\r\n:1\r\n", b">2\r\n+a\r\n+b\r\n", b"$3\r\nabcX\r\n"]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.sampled_from(PLAIN_REPLIES + OTHER_REPLIES), max_size=30),
    st.integers(0, 400),
    st.integers(1, 40),
)
def test_skimmed_answers_end_where_framing_reply_by_reply_does(replies, stop, most):
    """skim_answers takes at most ``most`` whole simple values and bulk strings, up to the
    first other reply (or a malformed one), exactly where each of them ends."""
    from vaurien.protocols.redis import Redis
    from vaurien.protocols.redis.framing import RedisState

    data = b"".join(replies)[:stop]
    newpos, count = Redis().skim_answers(RedisState(), None, data, 0, len(data), most)
    expected_pos = expected_count = 0
    for reply in replies[:most]:
        if reply not in PLAIN_REPLIES or expected_pos + len(reply) > len(data):
            break
        expected_pos += len(reply)
        expected_count += 1
    assert (newpos, count) == (expected_pos, expected_count)


def _serialize(value) -> bytes:
    kind, body = value
    if kind in b"+-:_,#(":
        return kind + body + b"\r\n"
    if kind in b"$!=":
        return b"%s%d\r\n%s\r\n" % (kind, len(body), body)
    if kind == b"?":  # a streamed string
        return b"$?\r\n" + b"".join(b";%d\r\n%s\r\n" % (len(p), p) for p in body) + b";0\r\n"
    if kind == b"|":  # an attribute, then the value it annotates
        pairs, annotated = body
        inner = b"".join(_serialize(v) for v in pairs)
        return b"|%d\r\n%s%s" % (len(pairs) // 2, inner, _serialize(annotated))
    elements = b"".join(_serialize(v) for v in body)
    if kind == b"%":
        return b"%%%d\r\n%s" % (len(body) // 2, elements)
    return b"%s%d\r\n%s" % (kind, len(body), elements)


_scalars = st.one_of(
    st.tuples(
        st.sampled_from([b"+", b"-", b"("]), st.binary(max_size=8).map(lambda b: b.hex().encode())
    ),
    st.tuples(st.just(b":"), st.integers(-(10**6), 10**6).map(lambda i: str(i).encode())),
    st.tuples(st.just(b"_"), st.just(b"")),
    st.tuples(st.sampled_from([b"$", b"!", b"="]), st.binary(max_size=40)),
    st.tuples(st.just(b"?"), st.lists(st.binary(min_size=1, max_size=10), max_size=3)),
)
_values = st.recursive(
    _scalars,
    lambda children: st.one_of(
        st.tuples(st.sampled_from([b"*", b"~", b">"]), st.lists(children, max_size=4)),
        st.tuples(st.just(b"%"), st.lists(children, max_size=2).map(lambda v: v + v)),
        st.tuples(st.just(b"|"), st.tuples(st.lists(children, min_size=2, max_size=2), children)),
    ),
    max_leaves=12,
)


@settings(max_examples=200, deadline=None)
@given(st.lists(_values, min_size=1, max_size=5), st.lists(st.integers(0, 2000), max_size=8))
def test_generated_replies_end_exactly_after_each_value(values, points):
    pieces = [_serialize(v) for v in values]
    data = b"".join(pieces)
    passed, ends = run(ReplyFramer(), cut(data, points))
    assert passed == data
    offsets, total = [], 0
    for piece in pieces:
        total += len(piece)
        offsets.append(total)
    assert [offset for offset, _ in ends] == offsets


def test_a_big_bulk_string_is_counted_through_not_kept():
    framer = ReplyFramer()
    size = 50 << 20
    data = b"$%d\r\n" % size
    chunk = bytes(65536)
    pos, event = framer.feed(data, 0, len(data))
    assert event is None and pos == len(data)
    for _ in range(size // len(chunk)):
        assert framer.feed(chunk, 0, len(chunk)) == (len(chunk), None)
        assert framer._lines.held == 0 and framer._capture is None
    assert framer.feed(b"\r\n", 0, 2)[1].type == b"$"


@pytest.mark.parametrize(
    "junk", [b"HTTP/1.1 200 OK\r\n", b"$abc\r\n", b"*1\r\n.\r\n", b"$3\r\nabcXY"]
)
def test_what_is_not_a_reply_is_a_protocol_error(junk):
    with pytest.raises(ProtocolError):
        run(ReplyFramer(), [junk])


def test_an_endless_inline_line_is_a_protocol_error():
    with pytest.raises(ProtocolError):
        run(CommandFramer(), [b"x" * 70000])


# -- sessions with redis-server ---------------------------------------------------------------


@pytest.fixture
def direct(redis_server):
    client = redis.Redis(redis_server.host, redis_server.port, protocol=2)
    yield client
    client.close()


def start(start_proxy, redis_server, **settings):
    settings.setdefault("timeout", 30)
    return start_proxy(redis_server.address, protocol="redis", **settings)


def connect(proxy, protocol=2, timeout=10):
    host, port = proxy.address
    return redis.Redis(host, port, protocol=protocol, socket_timeout=timeout, retry=None)


def realistic_session(client, prefix):
    """Commands a real application sends; returns what the client got."""
    key = prefix + ":"
    results = [
        client.ping(),
        client.set(key + "a", "1"),
        client.get(key + "a"),
        client.incrby(key + "n", 5),
        client.get(key + "missing"),
        client.rpush(key + "list", *range(10)),
        client.lrange(key + "list", 0, -1),
        client.hset(key + "h", mapping={"x": "1", "y": "2"}),
        sorted(client.hgetall(key + "h").items()),
        client.sadd(key + "s", "a", "b"),
        sorted(client.smembers(key + "s")),
        client.zadd(key + "z", {"a": 1.5, "b": 2}),
        client.zrange(key + "z", 0, -1, withscores=True),
        client.set(key + "big", b"\x00\xff" * (3 << 20)),
        client.get(key + "big") == b"\x00\xff" * (3 << 20),
        client.expire(key + "a", 100),
        client.ttl(key + "a") > 0,
        client.exists(key + "a", key + "missing"),
    ]
    pipe = client.pipeline(transaction=True)
    pipe.incr(key + "n").get(key + "n").lpop(key + "list")
    results.append(pipe.execute())
    pipe = client.pipeline(transaction=False)
    for i in range(200):
        pipe.set(key + f"p{i}", i)
    results.append(all(pipe.execute()))
    with pytest.raises(redis.exceptions.ResponseError) as error:
        client.lpush(key + "a", "x")  # a real error from the server: WRONGTYPE
    results.append(str(error.value))
    results.append(client.delete(key + "a", key + "n", key + "list", key + "h", key + "big"))
    return results


@pytest.mark.parametrize("protocol", [2, 3])
def test_a_realistic_session_through_dummy_gets_the_direct_results(
    redis_server, start_proxy, protocol
):
    proxy = start(start_proxy, redis_server)
    direct_client = redis.Redis(redis_server.host, redis_server.port, protocol=protocol)
    expected = realistic_session(direct_client, f"direct{protocol}")
    client = connect(proxy, protocol)
    assert realistic_session(client, f"proxied{protocol}") == expected
    client.close()
    direct_client.close()
    stats = proxy.call(proxy.proxy.stats)
    assert set(stats["behaviors"]) == {"dummy"}


def test_one_pick_per_command_and_none_for_answers(redis_server, start_proxy):
    proxy = start(start_proxy, redis_server)
    with proxy.connect() as sock:
        sock.sendall(b"PING\r\n" * 50)
        assert recv_exactly(sock, 7 * 50) == b"+PONG\r\n" * 50
    wait_until(lambda: proxy.call(proxy.proxy.stats)["active_connections"] == 0)
    # 50 pipelined commands, 50 picks whatever the reads: none for the answers, none for the
    # end of the connection.
    assert proxy.call(proxy.proxy.stats)["behaviors"] == {"dummy": 50}


def test_pipelines_relayed_in_the_hub_then_chaos_keep_every_answer_in_its_place(
    redis_server, start_proxy
):
    """Runs of plain commands pass in the watcher's callbacks; a command split between reads,
    then a mix with chaos put in force mid-session, go to the pumps: answers stay matched."""
    proxy = start(start_proxy, redis_server)
    with proxy.connect() as sock:
        sock.sendall(b"".join(command(b"SET", b"relay:%d" % i, b"v%d" % i) for i in range(30)))
        assert recv_exactly(sock, 5 * 30) == b"+OK\r\n" * 30
        gets = b"".join(command(b"GET", b"relay:%d" % i) for i in range(30))
        sock.sendall(gets[:-7])
        sock.sendall(gets[-7:])
        expected = b"".join(b"$%d\r\nv%d\r\n" % (len(b"%d" % i) + 1, i) for i in range(30))
        assert recv_exactly(sock, len(expected)) == expected
        proxy.call(proxy.proxy.set_behavior, "100:error")
        sock.sendall(command(b"GET", b"relay:1") * 3)
        error = b"-ERR get failed (error injected by vaurien)\r\n"
        assert recv_exactly(sock, 3 * len(error)) == error * 3
    wait_until(lambda: proxy.call(proxy.proxy.stats)["active_connections"] == 0)
    assert proxy.call(proxy.proxy.stats)["behaviors"] == {"dummy": 60, "error": 3}


@pytest.mark.parametrize("protocol", [2, 3])
def test_pubsub_messages_and_pushes_pass_as_they_come(redis_server, start_proxy, direct, protocol):
    proxy = start(start_proxy, redis_server)
    client = connect(proxy, protocol)
    pubsub = client.pubsub()
    pubsub.subscribe("news")
    pubsub.psubscribe("n*")
    assert pubsub.get_message(timeout=5)["type"] == "subscribe"
    assert pubsub.get_message(timeout=5)["type"] == "psubscribe"
    wait_until(lambda: direct.publish("news", "hello") == 2)
    got = [pubsub.get_message(timeout=5) for _ in range(2)]
    assert sorted(m["type"] for m in got) == ["message", "pmessage"]
    assert all(m["data"] == b"hello" for m in got)
    pubsub.ping()
    assert pubsub.get_message(timeout=5)["type"] == "pong"
    pubsub.unsubscribe()
    pubsub.punsubscribe()
    assert [pubsub.get_message(timeout=5)["type"] for _ in range(2)] == [
        "unsubscribe",
        "punsubscribe",
    ]
    pubsub.close()
    assert client.ping()
    client.close()


def test_client_reply_off_and_skip_keep_the_answers_matched(redis_server, start_proxy):
    proxy = start(start_proxy, redis_server)
    error_on_calls(proxy, "6")
    with proxy.connect() as sock:
        sock.sendall(
            command(b"CLIENT", b"REPLY", b"SKIP")
            + command(b"SET", b"rk", b"1")  # no reply
            + command(b"CLIENT", b"REPLY", b"OFF")
            + command(b"SET", b"rk", b"2")  # no reply
            + command(b"CLIENT", b"REPLY", b"ON")  # +OK
            + command(b"GET", b"rk")  # the 6th: the proxy's error
            + command(b"GET", b"rk")
        )
        expected = b"+OK\r\n-ERR get failed (error injected by vaurien)\r\n$1\r\n2\r\n"
        assert recv_exactly(sock, len(expected)) == expected


def test_monitor_makes_the_session_a_stream(redis_server, start_proxy, direct):
    proxy = start(start_proxy, redis_server)
    with proxy.connect() as sock:
        sock.sendall(b"MONITOR\r\n")
        assert recv_exactly(sock, 5) == b"+OK\r\n"
        wait_until(lambda: direct.set("monitored", "yes"))
        seen = b""
        while b"monitored" not in seen:
            seen += sock.recv(4096)
        assert seen.startswith(b"+")


def test_error_answers_the_command_with_err_and_the_backend_never_sees_it(
    redis_server, start_proxy, direct
):
    proxy = start(start_proxy, redis_server)
    client = connect(proxy)
    assert client.set("err:before", "1")
    proxy.call(proxy.proxy.set_behavior, "100:error")
    with pytest.raises(redis.exceptions.ResponseError, match="injected by vaurien"):
        client.set("err:key", "1")
    assert direct.get("err:key") is None
    proxy.call(proxy.proxy.set_behavior, "100:dummy")
    assert client.get("err:before") == b"1"  # the same connection goes on
    client.close()


def test_error_with_inject_lets_the_command_run_and_replaces_its_reply(
    redis_server, start_proxy, direct
):
    proxy = start(start_proxy, redis_server)
    client = connect(proxy)
    client.ping()
    proxy.call(proxy.proxy.set_behavior, "100:error", {"error": {"inject": True}})
    with pytest.raises(redis.exceptions.ResponseError):
        client.set("inject:key", "ran")
    assert direct.get("inject:key") == b"ran"
    proxy.call(proxy.proxy.set_behavior, "100:dummy")
    assert client.get("inject:key") == b"ran"
    client.close()


def test_an_injected_error_keeps_its_place_in_a_pipeline(redis_server, start_proxy, direct):
    proxy = start(start_proxy, redis_server)
    client = connect(proxy)
    client.ping()
    error_on_calls(proxy, "2,4")
    pipe = client.pipeline(transaction=False)
    pipe.set("pipe:a", "1").incr("pipe:n").get("pipe:a").incr("pipe:n").get("pipe:a")
    results = pipe.execute(raise_on_error=False)
    assert results[0] is True and results[2] == b"1" and results[4] == b"1"
    assert all(isinstance(results[i], redis.exceptions.ResponseError) for i in (1, 3))
    assert direct.get("pipe:n") is None  # neither INCR reached the server
    client.close()


def test_delay_holds_each_request(redis_server, start_proxy):
    proxy = start(start_proxy, redis_server)
    client = connect(proxy)
    client.ping()
    proxy.call(proxy.proxy.set_behavior, "100:delay", {"delay": {"sleep": 0.5}})
    for _ in range(2):
        started = time.monotonic()
        client.get("delayed")
        assert 0.45 < time.monotonic() - started < 10
    proxy.call(proxy.proxy.set_behavior, "100:dummy")
    started = time.monotonic()
    client.get("delayed")
    assert time.monotonic() - started < 0.4
    client.close()


def test_delay_after_answers_at_once_and_holds_what_follows(redis_server, start_proxy):
    proxy = start(start_proxy, redis_server)
    client = connect(proxy)
    client.ping()
    proxy.call(proxy.proxy.set_behavior, "100:delay", {"delay": {"sleep": 0.8, "before": False}})
    started = time.monotonic()
    client.get("after")
    assert time.monotonic() - started < 0.5
    started = time.monotonic()
    client.get("after")  # its answer waits until the delay after the first one is over
    assert 0.3 < time.monotonic() - started < 10
    client.close()


def test_abort_lets_the_command_run_and_closes_before_its_reply(redis_server, start_proxy, direct):
    proxy = start(start_proxy, redis_server)
    client = connect(proxy)
    client.ping()
    proxy.call(proxy.proxy.set_behavior, "100:abort")
    with pytest.raises(redis.exceptions.ConnectionError):
        client.set("abort:key", "done")
    wait_until(lambda: direct.get("abort:key") == b"done")


def test_abort_lets_the_answers_to_earlier_commands_through(redis_server, start_proxy):
    proxy = start(start_proxy, redis_server)
    error_on_calls(proxy, "2", verb="abort")
    with proxy.connect() as sock:
        # Three commands at once: the answer to the first arrives, the session ends when the
        # second's starts, the third never reaches the server.
        sock.sendall(command(b"ECHO", b"one") + command(b"ECHO", b"two") + b"ECHO three\r\n")
        received = b""
        while chunk := sock.recv(100):
            received += chunk
        assert received == b"$3\r\none\r\n"


def test_blackout_closes_and_the_command_never_runs(redis_server, start_proxy, direct):
    proxy = start(start_proxy, redis_server)
    client = connect(proxy)
    client.ping()
    proxy.call(proxy.proxy.set_behavior, "100:blackout")
    with pytest.raises(redis.exceptions.ConnectionError):
        client.set("blackout:key", "done")
    assert direct.get("blackout:key") is None


def test_hang_leaves_the_client_waiting(redis_server, start_proxy, direct):
    proxy = start(start_proxy, redis_server)
    client = connect(proxy, timeout=1)
    client.ping()
    proxy.call(proxy.proxy.set_behavior, "100:hang")
    started = time.monotonic()
    with pytest.raises(redis.exceptions.TimeoutError):
        client.set("hang:key", "1")
    assert time.monotonic() - started > 0.9
    assert direct.get("hang:key") is None


def test_a_backend_that_is_not_redis_ends_the_session_with_one_line(
    http_server, start_proxy, caplog
):
    proxy = start_proxy(http_server.address, protocol="redis")
    caplog.set_level(logging.WARNING, logger="vaurien")
    with proxy.connect() as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert sock.recv(100) == b""
    wait_until(lambda: any("not a Redis reply" in r.getMessage() for r in caplog.records))
    lines = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(lines) == 1 and not lines[0].exc_info
    assert proxy.call(proxy.proxy.stats)["active_connections"] == 0
    with socket.create_connection(proxy.address, timeout=10):
        pass  # still serving


@pytest.mark.parametrize(
    "behavior, options",
    [
        ("slicer", {"average_size": 3, "size_variation": 2, "delay": 0}),
        ("bandwidth", {"rate": 2000}),
        ("delay", {"sleep": 0}),
    ],
)
def test_behaviors_that_move_bytes_keep_the_framing(redis_server, start_proxy, behavior, options):
    proxy = start(start_proxy, redis_server)
    client = connect(proxy, timeout=30)
    client.ping()
    proxy.call(proxy.proxy.set_behavior, f"100:{behavior}", {behavior: options})
    value = bytes(range(256)) * 4096  # 1 MiB: many events for one command
    pipe = client.pipeline(transaction=False)
    pipe.set("moved", value).get("moved").echo("after")
    assert pipe.execute() == [True, value, b"after"]
    # One pick per command, not one per slice of it.
    assert proxy.call(proxy.proxy.stats)["behaviors"][behavior] == 3
    proxy.call(proxy.proxy.set_behavior, "100:dummy")
    assert client.get("moved") == value
    client.close()


def test_transient_fails_the_first_commands_then_lets_them_through(redis_server, start_proxy):
    proxy = start(start_proxy, redis_server)
    client = connect(proxy)
    client.ping()
    proxy.call(proxy.proxy.set_behavior, "100:transient", {"transient": {"agitate": 2}})
    outcomes = []
    for _ in range(4):
        try:
            outcomes.append(client.echo("retry me"))
        except redis.exceptions.ResponseError:
            outcomes.append("error")
    assert outcomes == ["error", "error", b"retry me", b"retry me"]
    client.close()


def to_client(behavior, **options):
    return {behavior: {**options, "direction": "to_client"}}


def test_a_to_client_delay_holds_the_reply_not_the_command(redis_server, start_proxy, direct):
    proxy = start(start_proxy, redis_server)
    client = connect(proxy)
    client.ping()
    proxy.call(proxy.proxy.set_behavior, "100:delay", to_client("delay", sleep=0.6))
    started = time.monotonic()
    assert client.set("late", "reply")
    assert 0.55 < time.monotonic() - started < 1.1  # one delay, not one each way
    impatient = connect(proxy, timeout=1)
    impatient.ping()
    proxy.call(proxy.proxy.set_behavior, "100:hang", to_client("hang"))
    with pytest.raises(redis.exceptions.TimeoutError):
        impatient.set("hung", "ran")  # the command runs, its reply never comes
    wait_until(lambda: direct.get("hung") == b"ran")


@pytest.mark.parametrize(
    "behavior, options",
    [
        ("slicer", {"average_size": 5, "size_variation": 4, "delay": 0}),
        ("bandwidth", {"rate": 4000}),
        ("corrupt", {"probability": 0}),
    ],
)
def test_to_client_behaviors_that_move_bytes_keep_the_replies_framed(
    redis_server, start_proxy, direct, behavior, options
):
    value = bytes(range(256)) * 2048  # 512 KiB
    direct.set("big-reply", value)
    proxy = start(start_proxy, redis_server)
    client = connect(proxy, timeout=30)
    client.ping()
    proxy.call(proxy.proxy.set_behavior, f"100:{behavior}", to_client(behavior, **options))
    pipe = client.pipeline(transaction=False)
    pipe.get("big-reply").echo("next").get("big-reply")
    assert pipe.execute() == [value, b"next", value]
    proxy.call(proxy.proxy.set_behavior, "100:dummy")
    assert client.echo("still in step") == b"still in step"
    client.close()


def test_a_to_client_abort_closes_before_the_reply(redis_server, start_proxy, direct):
    proxy = start(start_proxy, redis_server)
    client = connect(proxy)
    client.ping()
    proxy.call(proxy.proxy.set_behavior, "100:abort", to_client("abort"))
    with pytest.raises(redis.exceptions.ConnectionError):
        client.set("abort-to-client", "ran")
    wait_until(lambda: direct.get("abort-to-client") == b"ran")


def test_an_ended_session_and_its_state_are_freed_without_the_garbage_collector(
    redis_server, start_proxy
):
    proxy = start(start_proxy, redis_server)
    gc.collect()
    gc.disable()
    try:
        with proxy.connect() as sock:
            sock.sendall(b"PING\r\n")
            assert recv_exactly(sock, 7) == b"+PONG\r\n"
            refs = proxy.call(
                lambda: (
                    [weakref.ref(s) for s in (*proxy.proxy.sessions,)]
                    + [weakref.ref(s.state) for s in proxy.proxy.sessions]
                )
            )
        wait_until(lambda: proxy.call(proxy.proxy.stats)["live_sessions"] == 0)
        wait_until(lambda: all(ref() is None for ref in refs), timeout=5)
    finally:
        gc.enable()


# -- what rules see ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "request_, fields",
    [
        (command(b"GET", b"session:1"), ("get", "session:1")),
        (command(b"set", b"k", b"v" * 5000), ("set", "k")),  # the value is not waited for
        (command(b"PING"), ("ping", None)),
        (b"GET inline:key\r\n", ("get", "inline:key")),
        (command(b"EVAL", b"return 1", b"1", b"first", b"arg"), ("eval", "first")),
        (command(b"EVALSHA", b"abc", b"0", b"arg"), ("evalsha", None)),
        (command(b"OBJECT", b"ENCODING", b"key"), ("object", "key")),
        (command(b"SET", b"k" * 2000, b"v"), ("set", None)),  # a key too long to be looked at
    ],
    ids=["get", "set", "ping", "inline", "eval", "evalsha", "object", "long key"],
)
def test_rules_see_the_command_and_its_first_key(request_, fields):
    from vaurien.protocols.redis import Redis

    assert tuple(peeks(Redis(), None, request_, ("command", "key")).values()) == fields
