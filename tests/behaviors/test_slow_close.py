"""slow_close: a close reaches the other side only after the delay."""

import socket
import time

from support import recv_exactly, wait_until

DELAY = 0.5


def _proxy(start_proxy, backend, direction):
    return start_proxy(
        backend,
        behavior="100:slow_close",
        plugin_options={("behavior", "slow_close"): {"delay": DELAY, "direction": direction}},
    )


def test_the_clients_close_reaches_the_backend_late(recording_backend, start_proxy):
    proxy = _proxy(start_proxy, recording_backend.address, "to_backend")
    with proxy.connect() as client:
        client.sendall(b"ping")
        start = time.monotonic()
        assert recv_exactly(client, 4) == b"ping"
        assert time.monotonic() - start < DELAY  # data is not held
        closed_at = time.monotonic()
        client.shutdown(socket.SHUT_WR)
        assert client.recv(10) == b""  # the backend's close, passed at once
    recording = recording_backend.connections[0]
    wait_until(lambda: recording.eof_at)
    assert recording.eof_at - closed_at >= DELAY - 0.05


def test_both_closes_are_held(echo_backend, start_proxy):
    proxy = _proxy(start_proxy, echo_backend.address, "both")
    with proxy.connect() as client:
        client.sendall(b"ping")
        assert recv_exactly(client, 4) == b"ping"
        start = time.monotonic()
        client.shutdown(socket.SHUT_WR)
        assert client.recv(10) == b""
        # The client's close waits DELAY on its way in, the echo server's on its way back.
        assert 2 * DELAY - 0.1 <= time.monotonic() - start < 10


def test_without_slow_close_the_close_is_prompt(echo_backend, start_proxy):
    proxy = _proxy(start_proxy, echo_backend.address, "both")
    proxy.call(proxy.proxy.set_behavior, "100:dummy")
    with proxy.connect() as client:
        start = time.monotonic()
        client.shutdown(socket.SHUT_WR)
        assert client.recv(10) == b""
        assert time.monotonic() - start < DELAY


def _closes_late(start_proxy, backend, protocol, request: bytes, answer_start: bytes) -> float:
    """Send ``request`` (after which the server closes), read the answer's start, and return
    how long the close took to follow it."""
    proxy = start_proxy(
        backend,
        protocol=protocol,
        behavior="100:slow_close",
        plugin_options={("behavior", "slow_close"): {"delay": DELAY}},
    )
    with proxy.connect() as client:
        client.sendall(request)
        start = time.monotonic()
        assert recv_exactly(client, len(answer_start)) == answer_start
        assert time.monotonic() - start < DELAY  # the answer is not held
        while client.recv(65536):
            pass
        return time.monotonic() - start


def test_redis_the_servers_close_after_quit_comes_late(redis_server, start_proxy):
    took = _closes_late(start_proxy, redis_server.address, "redis", b"QUIT\r\n", b"+OK\r\n")
    assert DELAY - 0.05 <= took < 10


def test_http_the_servers_close_after_its_last_response_comes_late(http_server, start_proxy):
    request = b"GET /bytes/3 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
    took = _closes_late(start_proxy, http_server.address, "http", request, b"HTTP/1.1 200")
    assert DELAY - 0.05 <= took < 10


def test_redis_the_clients_close_after_a_command_reaches_the_server_late(redis_server, start_proxy):
    import redis

    proxy = start_proxy(
        redis_server.address,
        protocol="redis",
        behavior="100:slow_close",
        plugin_options={("behavior", "slow_close"): {"delay": DELAY}},
    )
    watcher = redis.Redis(redis_server.host, redis_server.port)
    with proxy.connect() as client:
        client.sendall(b"CLIENT SETNAME held\r\n")
        assert recv_exactly(client, 5) == b"+OK\r\n"
        client.shutdown(socket.SHUT_WR)
        closed_at = time.monotonic()
        names = lambda: [c["name"] for c in watcher.client_list()]  # noqa: E731
        assert "held" in names()  # the server still has the connection
        wait_until(lambda: "held" not in names())
        assert time.monotonic() - closed_at >= DELAY - 0.05
