"""http2: the frame scanner and the relay on bytes, then real sessions through the proxy: grpcio
calls against a grpcio server, and raw h2 clients against a small h2 server."""

from __future__ import annotations

import gc
import hashlib
import logging
import socket
import subprocess
import sys
import threading
import time

import gevent
import grpc
import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from grpc_support import Calls, GrpcBackend
from h2_support import Answer, H2Backend, H2Client, frame, h2_connection, request_head
from protocol_support import cut
from support import wait_until
from vaurien.behaviors.base import BaseBehavior
from vaurien.errors import ProtocolError
from vaurien.protocols.http2 import grpc_code, http_error, percent_encode
from vaurien.protocols.http2.frames import FrameScanner, GoAway, goaway_frame
from vaurien.protocols.http2.relay import Relay

# -- the frame scanner -------------------------------------------------------------------------


def scan(scanner: FrameScanner, chunks) -> tuple[bytes, list[GoAway]]:
    passed, goaways = bytearray(), []
    for chunk in chunks:
        for piece in scanner.feed(chunk):
            if isinstance(piece, GoAway):
                goaways.append((len(passed), piece))
            else:
                passed += piece
    return bytes(passed), goaways


@st.composite
def frame_streams(draw):
    """A preface and frames, some of them GOAWAY; what h2 must get, and the GOAWAYs."""
    data, expected, goaways = bytearray(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), bytearray(), []
    expected += data
    for _ in range(draw(st.integers(0, 12))):
        if draw(st.booleans()):
            last, code = draw(st.integers(0, 2**31 - 1)), draw(st.integers(0, 13))
            debug = draw(st.binary(max_size=20))
            data += goaway_frame(last, code, debug)
            goaways.append((len(expected), GoAway(last, code, debug)))
        else:
            # Any other frame, GOAWAY's type on a stream included: it passes.
            type_ = draw(st.sampled_from([0, 1, 4, 6, 7, 8, 0x42]))
            stream_id = draw(st.integers(1 if type_ == 7 else 0, 9))
            raw = frame(type_, draw(st.binary(max_size=40)), stream_id)
            data += raw
            expected += raw
    return bytes(data), bytes(expected), goaways


@given(frame_streams(), st.lists(st.integers(0, 600), max_size=30))
@settings(max_examples=300, deadline=None)
def test_the_scanner_takes_goaway_frames_out_under_any_split(stream, points):
    data, expected, goaways = stream
    passed, found = scan(FrameScanner(skip=24), cut(data, points))
    assert passed == expected
    assert found == goaways


def test_a_goaway_frame_reads_back():
    (goaway,) = FrameScanner().feed(goaway_frame(7, 2, b"bye"))
    assert goaway == GoAway(7, 2, b"bye")


# -- the relay, sans-IO --------------------------------------------------------------------------


class EchoPeer:
    """The server side of the sans-IO tests: answers each request with its body reversed,
    then a trailer."""

    def __init__(self):
        self.conn = h2_connection(client_side=False)
        self.bodies = {}
        self.answers = {}

    def receive(self, data: bytes) -> None:
        for event in self.conn.receive_data(data):
            if isinstance(event, h2.events.RequestReceived):
                self.bodies[event.stream_id] = bytearray()
            elif isinstance(event, h2.events.DataReceived):
                self.bodies[event.stream_id] += event.data
                self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.StreamEnded):
                self.conn.send_headers(event.stream_id, [(b":status", b"200")])
                self.answers[event.stream_id] = bytearray(self.bodies[event.stream_id][::-1])
        for stream_id, rest in list(self.answers.items()):
            window = self.conn.local_flow_control_window(stream_id)
            size = min(window, len(rest), self.conn.max_outbound_frame_size)
            if size:
                self.conn.send_data(stream_id, bytes(rest[:size]))
                del rest[:size]
            if not rest:
                self.conn.send_headers(stream_id, [(b"x-done", b"1")], end_stream=True)
                del self.answers[stream_id]


@given(
    st.lists(st.binary(max_size=3000), min_size=1, max_size=6),
    st.integers(1, 500),
    st.integers(1, 500),
)
@settings(max_examples=60, deadline=None)
def test_the_relay_carries_streams_whatever_the_reads(bodies, client_step, server_step):
    relay = Relay()
    client, server = h2_connection(client_side=True), EchoPeer()
    for body in bodies:
        stream_id = client.get_next_available_stream_id()
        client.send_headers(stream_id, request_head(b"/echo"))
        client.send_data(stream_id, body, end_stream=True)
    answers, ended = {}, set()
    for _ in range(5000):
        moved = False
        for data, side, step in (
            (client.data_to_send(), relay.client, client_step),
            (server.conn.data_to_send(), relay.backend, server_step),
        ):
            for chunk in cut(data, range(step, len(data), step)):
                relay.receive(side, chunk)
                moved = True
        data = relay.output(relay.backend)
        for chunk in cut(data, range(server_step, len(data), server_step)):
            server.receive(chunk)
            moved = True
        data = relay.output(relay.client)
        for chunk in cut(data, range(client_step, len(data), client_step)):
            moved = True
            for event in client.receive_data(chunk):
                if isinstance(event, h2.events.DataReceived):
                    answers.setdefault(event.stream_id, bytearray()).extend(event.data)
                    client.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                elif isinstance(event, h2.events.StreamEnded):
                    ended.add(event.stream_id)
        if not moved:
            break
    assert sorted(ended) == [1 + 2 * i for i in range(len(bodies))]
    for i, body in enumerate(bodies):
        assert bytes(answers.get(1 + 2 * i, b"")) == body[::-1]
    assert relay.streams == 0


def test_the_relay_refuses_what_is_not_http2():
    relay = Relay()
    with pytest.raises(ProtocolError, match="neither HTTP/2 nor HTTP/1.1"):
        relay.receive(relay.client, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
    relay = Relay()
    with pytest.raises(ProtocolError, match="without Upgrade: h2c"):
        relay.receive(relay.client, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")


# -- options -----------------------------------------------------------------------------------


def test_error_options_take_numbers_and_names():
    assert grpc_code("UNAVAILABLE") == grpc_code("14") == grpc_code(14) == 14
    assert grpc_code("resource_exhausted") == 8
    for bad in ("OK", "0", "17", True, "NOPE"):
        with pytest.raises(ValueError):
            grpc_code(bad)
    assert http_error("429") == 429
    with pytest.raises(ValueError):
        http_error(200)
    assert percent_encode("50% off, ça va") == b"50%25 off, %C3%A7a va"


def test_without_h2_the_protocol_says_what_to_install():
    # h2 made impossible to import, as when the extra is not installed.
    program = (
        "import sys; sys.modules['h2'] = None; from vaurien.cli import main; "
        "sys.exit(main(['--protocol', 'http2', '--backend', '127.0.0.1:9', "
        "'--proxy', '127.0.0.1:0']))"
    )
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True)
    assert (done.returncode, done.stderr) == (
        2,
        "vaurien: error: the http2 protocol needs h2: pip install 'vaurien[http2]'\n",
    )


# -- gRPC through the proxy ----------------------------------------------------------------------


@pytest.fixture
def grpc_backend():
    backend = GrpcBackend()
    yield backend
    backend.close()


@pytest.fixture
def grpc_proxy(grpc_backend, start_proxy):
    """``grpc_proxy(behavior, **settings)``: a proxy in front of the gRPC backend, and a
    channel through it."""
    channels = []

    def start(behavior="100:dummy", **settings):
        settings.setdefault("seed", 20240601)
        proxy = start_proxy(grpc_backend.address, protocol="http2", behavior=behavior, **settings)
        host, port = proxy.address
        channel = grpc.insecure_channel(f"{host}:{port}")
        channels.append(channel)
        return proxy, Calls(channel)

    yield start
    for channel in channels:
        channel.close()


def stats(proxy):
    return proxy.call(proxy.proxy.stats)


def test_grpc_calls_fail_with_unavailable_and_the_channel_lives(grpc_proxy, grpc_backend):
    proxy, calls = grpc_proxy("20:error")
    outcomes = [calls.outcome(b"call %d" % i) for i in range(100)]
    failed = outcomes.count(grpc.StatusCode.UNAVAILABLE)
    assert set(outcomes) == {grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE}
    assert 8 <= failed <= 35, failed
    assert grpc_backend.calls == 100 - failed  # the backend never saw the failed calls
    figures = stats(proxy)
    assert figures["total_connections"] == 1
    assert figures["behaviors"]["error"] == failed


def test_grpc_error_status_and_message_are_options(grpc_proxy):
    _, calls = grpc_proxy(
        "100:error",
        plugin_options={
            ("protocol", "http2"): {
                "grpc_status": "RESOURCE_EXHAUSTED",
                "grpc_message": "100% busy",
            }
        },
    )
    with pytest.raises(grpc.RpcError) as caught:
        calls.reverse(b"x", timeout=10)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert caught.value.details() == "100% busy"


def test_inject_lets_the_call_reach_the_backend(grpc_proxy, grpc_backend):
    _, calls = grpc_proxy("100:error", plugin_options={("behavior", "error"): {"inject": True}})
    assert calls.outcome(b"x") == grpc.StatusCode.UNAVAILABLE
    assert grpc_backend.calls == 1


def test_abort_resets_one_call_and_the_connection_lives(grpc_proxy, grpc_backend):
    proxy, calls = grpc_proxy("100:abort")
    with pytest.raises(grpc.RpcError) as caught:
        calls.reverse(b"lost answer", timeout=10)
    # grpcio reports a RST_STREAM with INTERNAL_ERROR as INTERNAL.
    assert caught.value.code() == grpc.StatusCode.INTERNAL
    assert "RST_STREAM" in caught.value.details()
    assert grpc_backend.calls == 1  # the backend did the work
    proxy.call(proxy.proxy.set_behavior, "100:dummy")
    assert calls.outcome(b"next") == grpc.StatusCode.OK
    assert stats(proxy)["total_connections"] == 1


def test_a_delayed_stream_does_not_hold_a_concurrent_call(grpc_proxy):
    proxy, calls = grpc_proxy("100:delay", plugin_options={("behavior", "delay"): {"sleep": 1.5}})
    started = time.monotonic()
    answers = []
    streaming = threading.Thread(
        target=lambda: answers.extend(calls.count(b"3,0.01", timeout=20)), daemon=True
    )
    streaming.start()
    wait_until(lambda: stats(proxy)["behaviors"].get("delay") == 1)
    proxy.call(proxy.proxy.set_behavior, "100:dummy")
    assert calls.outcome(b"passes") == grpc.StatusCode.OK
    passed = time.monotonic() - started
    streaming.join(20)
    held = time.monotonic() - started
    assert answers == [b"0", b"1", b"2"]
    assert passed < 1.2 <= 1.5 <= held, (passed, held)


def test_a_response_is_delayed_with_direction_to_client(grpc_proxy, grpc_backend):
    _, calls = grpc_proxy(
        "100:delay",
        plugin_options={("behavior", "delay"): {"sleep": 0.5, "direction": "to_client"}},
    )
    started = time.monotonic()
    assert calls.outcome(b"late") == grpc.StatusCode.OK
    assert time.monotonic() - started >= 0.5
    assert grpc_backend.calls == 1


def test_connection_behaviors_end_the_connection(grpc_proxy):
    proxy, calls = grpc_proxy("100:blackout")
    assert calls.outcome(b"x") == grpc.StatusCode.UNAVAILABLE
    proxy.call(proxy.proxy.set_behavior, "100:dummy")
    assert calls.outcome(b"y") == grpc.StatusCode.OK  # on a new connection
    assert stats(proxy)["total_connections"] == 2


def test_stream_greenlets_end_with_their_session(grpc_proxy):
    proxy, calls = grpc_proxy("100:delay", plugin_options={("behavior", "delay"): {"sleep": 30}})
    assert calls.outcome(b"x", timeout=0.3) == grpc.StatusCode.DEADLINE_EXCEEDED

    def stream_greenlets():
        return [
            g
            for g in gc.get_objects()
            if isinstance(g, gevent.Greenlet)
            and not g.dead
            and g.args[:1]
            and getattr(g.args[0], "__name__", "") in ("_run_request", "_run_response")
        ]

    assert len(proxy.call(stream_greenlets)) == 1  # the delay still sleeps in it
    proxy.call(lambda: [session.close() for session in list(proxy.proxy.sessions)])
    wait_until(lambda: not proxy.call(stream_greenlets))


class HoldAnswers(BaseBehavior):
    """A behavior for the tests: once the request reached the backend, its answer waits
    ``pause`` seconds (named by dotted path: ``test_http2.HoldAnswers``)."""

    name = "hold_answers"
    options = {"pause": ("Seconds the answer waits", float, 0.5)}

    def on_between_handle(self, protocol, source, dest, to_backend):
        gevent.sleep(self.settings["pause"])
        return True


def test_on_between_handle_runs_once_the_request_reached_the_backend(grpc_proxy, grpc_backend):
    _, calls = grpc_proxy("100:test_http2.HoldAnswers")
    started = time.monotonic()
    assert calls.outcome(b"held") == grpc.StatusCode.OK
    assert time.monotonic() - started >= 0.5
    assert grpc_backend.calls == 1


def test_a_hung_call_is_never_answered_and_others_pass(grpc_proxy):
    proxy, calls = grpc_proxy("100:hang")
    assert calls.outcome(b"x", timeout=0.5) == grpc.StatusCode.DEADLINE_EXCEEDED
    proxy.call(proxy.proxy.set_behavior, "100:dummy")
    assert calls.outcome(b"y") == grpc.StatusCode.OK
    assert stats(proxy)["total_connections"] == 1


def test_many_concurrent_calls_and_a_large_message(grpc_proxy):
    _, calls = grpc_proxy(
        "10:delay,90:dummy", plugin_options={("behavior", "delay"): {"sleep": 0.2}}
    )
    pending = [calls.reverse.future(b"%d" % i * 500, timeout=30) for i in range(200)]
    assert [f.result() for f in pending] == [(b"%d" % i * 500)[::-1] for i in range(200)]
    large = bytes(range(256)) * (3 << 12)  # 3 MiB
    assert calls.reverse(large, timeout=30) == large[::-1]


def test_a_cancelled_call_is_cancelled_on_the_backend(grpc_proxy, grpc_backend):
    _, calls = grpc_proxy()
    answers = calls.count(b"1000,0.01", timeout=20)
    assert next(answers) == b"0"
    answers.cancel()  # the client resets the stream; the proxy resets the backend's
    assert grpc_backend.cancelled.wait(10)


def test_a_graceful_shutdown_lets_the_calls_in_flight_finish(grpc_proxy, grpc_backend):
    _, calls = grpc_proxy()
    answers = calls.count(b"5,0.2", timeout=20)
    first = next(answers)
    stopping = threading.Thread(target=grpc_backend.server.stop, args=(10,), daemon=True)
    stopping.start()
    assert [first, *answers] == [b"0", b"1", b"2", b"3", b"4"]
    stopping.join(20)


# -- plain HTTP/2 with h2 as a raw client ---------------------------------------------------------


@pytest.fixture
def h2_backend():
    backend = H2Backend()
    yield backend
    backend.close()


def test_plain_requests_get_a_503_per_stream(h2_backend, start_proxy):
    proxy = start_proxy(
        h2_backend.address,
        protocol="http2",
        behavior="100:protocol_support.ErrorOnCalls",
        plugin_options={("behavior", "error_on_calls"): {"calls": "2,4"}},
    )
    client = H2Client(proxy.address)
    answers = client.exchange([(b"/echo", b"body %d" % i) for i in range(5)])
    assert [a.status for a in answers.values()] == [200, 503, 200, 503, 200]
    assert bytes(answers[1].body) == b"body 0"
    assert bytes(answers[3].body).startswith(b"503 Service Unavailable")
    assert h2_backend.received[b"/echo"] == 3 * len(b"body 0")
    # The connection goes on.
    assert bytes(client.exchange([(b"/echo", b"again")])[11].body) == b"again"
    client.close()


def test_large_bodies_and_many_streams_arrive_whole(h2_backend, start_proxy):
    proxy = start_proxy(h2_backend.address, protocol="http2", behavior="100:dummy")
    client = H2Client(proxy.address)
    large = [bytes([i]) * (3 << 20) + b"end" for i in range(2)]
    small = [b"stream %d " % i * 50 for i in range(98)]
    answers = client.exchange(
        [(b"/echo", body) for body in large] + [(b"/sha", body) for body in small]
    )
    bodies = [bytes(answer.body) for _, answer in sorted(answers.items())]
    assert bodies[:2] == large
    assert bodies[2:] == [hashlib.sha256(body).hexdigest().encode() for body in small]
    client.close()


def test_a_slow_reader_slows_its_stream_not_the_connection(h2_backend, start_proxy):
    proxy = start_proxy(h2_backend.address, protocol="http2", behavior="100:dummy")
    client = H2Client(proxy.address, timeout=5)
    slow = client.conn.get_next_available_stream_id()
    client.conn.send_headers(slow, request_head(b"/slow"))
    client.answers[slow] = Answer()
    body = b"x" * (4 << 20)
    sent = 0
    # The client sends what its window allows; the backend never gives its window back.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        size = min(client.conn.local_flow_control_window(slow), 16384, len(body) - sent)
        if size:
            client.conn.send_data(slow, body[sent : sent + size])
            sent += size
            client.sock.sendall(client.conn.data_to_send())
            continue
        client.sock.settimeout(0.5)
        try:
            client.read(client.sock.recv(65536))
        except TimeoutError:
            break
    client.sock.settimeout(10)
    # At most the backend's stream window is with the backend, and as much with the proxy.
    assert sent <= 3 * 65535, sent
    assert h2_backend.received[b"/slow"] <= 65535
    # Other streams on the connection go on.
    answers = client.exchange(
        [(b"/echo", b"fast %d" % i * 1000) for i in range(5)],
        until=lambda: all(client.answers[s].ended for s in client.answers if s != slow),
    )
    assert all(answers[s].status == 200 for s in answers if s != slow)
    assert not answers[slow].ended
    client.close()


@pytest.mark.parametrize("body", [b"", b"a body sent before the switch"])
def test_an_h2c_upgrade_is_answered_over_http2(h2_backend, start_proxy, body):
    proxy = start_proxy(h2_backend.address, protocol="http2", behavior="100:dummy")
    client = H2Client(proxy.address, upgrade=True)
    head = client.upgrade(b"/echo", body)
    assert head.startswith(b"HTTP/1.1 101 ")
    answers = client.exchange([(b"/echo", b"then over HTTP/2")])
    assert answers[1].status == 200 and answers[1].ended
    assert bytes(answers[1].body) == body
    assert bytes(answers[3].body) == b"then over HTTP/2"
    client.close()


def test_settings_pass_on_both_ways(start_proxy):
    codes = h2.settings.SettingCodes
    backend = H2Backend({codes.MAX_CONCURRENT_STREAMS: 7, codes.INITIAL_WINDOW_SIZE: 1 << 20})
    try:
        proxy = start_proxy(backend.address, protocol="http2", behavior="100:dummy")
        client = H2Client(proxy.address, settings={codes.INITIAL_WINDOW_SIZE: 300000})
        remote = client.conn.remote_settings

        def passed_on():
            client.exchange([(b"/echo", b"x")])
            return remote.max_concurrent_streams == 7 and remote.initial_window_size == 1 << 20

        wait_until(passed_on)
        assert backend.peer_settings[codes.INITIAL_WINDOW_SIZE] == 300000
        client.close()
    finally:
        backend.close()


def test_a_client_breaking_http2_ends_its_session_with_one_line(h2_backend, start_proxy, caplog):
    proxy = start_proxy(h2_backend.address, protocol="http2", behavior="100:dummy")
    with caplog.at_level(logging.WARNING, logger="vaurien"):
        client = H2Client(proxy.address, timeout=10)
        # DATA on a stream that was never opened: a connection error.
        client.sock.sendall(frame(0x0, b"stray", stream_id=5))
        while client.sock.recv(65536):  # the proxy's SETTINGS and GOAWAY, then the end
            pass
        client.close()
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(lines) == 1 and "client: not valid HTTP/2" in lines[0], lines


def test_a_client_that_is_not_http2_ends_its_session_with_one_line(h2_backend, start_proxy, caplog):
    proxy = start_proxy(h2_backend.address, protocol="http2", behavior="100:dummy")
    with caplog.at_level(logging.WARNING, logger="vaurien"):
        with socket.create_connection(proxy.address, timeout=10) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")
            assert sock.recv(65536) == b""
        wait_until(lambda: stats(proxy)["active_connections"] == 0)
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(lines) == 1 and "without Upgrade: h2c" in lines[0], lines
    # The proxy goes on serving.
    client = H2Client(proxy.address)
    assert client.exchange([(b"/echo", b"ok")])[1].status == 200
    client.close()


def test_a_backend_that_is_not_http2_ends_the_session_with_one_line(
    recording_backend, start_proxy, caplog
):
    proxy = start_proxy(recording_backend.address, protocol="http2", behavior="100:dummy")
    with caplog.at_level(logging.WARNING, logger="vaurien"):
        client = H2Client(proxy.address, timeout=10)
        client.conn.send_headers(1, request_head(b"/", b"GET"), end_stream=True)
        client.sock.sendall(client.conn.data_to_send())
        # The echo backend sends the proxy's own client preface back: no HTTP/2 server does.
        while client.sock.recv(65536):  # the proxy's SETTINGS, then the end
            pass
        client.close()
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(lines) == 1 and "backend: not valid HTTP/2" in lines[0], lines


def test_a_sliced_response_arrives_whole(h2_backend, start_proxy):
    proxy = start_proxy(
        h2_backend.address,
        protocol="http2",
        behavior="100:slicer",
        plugin_options={("behavior", "slicer"): {"direction": "to_client", "delay": 0.0}},
    )
    client = H2Client(proxy.address)
    body = bytes(range(256)) * 200
    answers = client.exchange([(b"/echo", body), (b"/echo", b"")])
    assert bytes(answers[1].body) == body and answers[3].status == 200
    client.close()


def test_bandwidth_paces_one_stream(h2_backend, start_proxy):
    proxy = start_proxy(
        h2_backend.address,
        protocol="http2",
        behavior="100:bandwidth",
        plugin_options={("behavior", "bandwidth"): {"rate": 256.0, "direction": "to_client"}},
    )
    client = H2Client(proxy.address)
    started = time.monotonic()
    body = b"p" * (128 << 10)
    answers = client.exchange([(b"/echo", body)])
    took = time.monotonic() - started
    assert bytes(answers[1].body) == body
    assert took >= 0.4, took  # 128 KiB at 256 KiB/s, less the first burst
    client.close()


def test_rules_see_a_streams_method_path_authority_and_headers():
    from vaurien.protocols.http2.session import StreamFields

    fields = StreamFields(
        [
            (b":method", b"POST"),
            (b":path", b"/vaurien.test.Echo/Reverse?x=1"),
            (b":authority", b"svc:50051"),
            (b"te", b"trailers"),
            (b"x-tag", b"a"),
            (b"x-tag", b"b"),
        ]
    )
    assert [fields.get(name) for name in ("method", "path", "host", "header.x-tag")] == [
        "POST",
        "/vaurien.test.Echo/Reverse",
        "svc:50051",
        "a, b",
    ]
    assert fields.get("header.absent") is None and fields.get("nothing") is None
