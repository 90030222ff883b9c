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
