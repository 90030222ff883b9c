"""The session: bytes through unchanged, half-close, backend down, idle timeout."""

import hashlib
import os
import socket
import threading
import time

from support import free_port, recv_exactly, wait_until
from vaurien.network import Address


def test_64_mib_both_directions_at_once_byte_exact(echo_backend, start_proxy):
    proxy = start_proxy(echo_backend.address)
    payload = os.urandom(64 << 20)
    with proxy.connect(timeout=60) as client:
        sender = threading.Thread(target=client.sendall, args=(payload,))
        sender.start()
        received = recv_exactly(client, len(payload))
        sender.join()
    assert len(received) == len(payload)
    assert hashlib.sha256(received).digest() == hashlib.sha256(payload).digest()


def test_half_close_reaches_the_backend_and_answers_still_flow(echo_backend, start_proxy):
    proxy = start_proxy(echo_backend.address)
    with proxy.connect() as client:
        client.sendall(b"last words")
        client.shutdown(socket.SHUT_WR)
        # The echo server answers after it saw our EOF, then half-closes in turn.
        assert recv_exactly(client, 10) == b"last words"
        assert client.recv(10) == b""


def test_backend_down_closes_client_and_proxy_keeps_serving(echo_backend, start_proxy, caplog):
    dead = ("127.0.0.1", free_port())
    proxy = start_proxy(dead, timeout=2)
    with proxy.connect() as client:
        start = time.monotonic()
        assert client.recv(10) == b""
        assert time.monotonic() - start < 2
    # Point it at a live backend: the next connections work.
    live = Address.parse(echo_backend.address)
    proxy.call(setattr, proxy.proxy, "backend", live)
    with proxy.connect() as client:
        client.sendall(b"ping")
        assert recv_exactly(client, 4) == b"ping"


def test_idle_session_is_closed_after_timeout(echo_backend, start_proxy):
    proxy = start_proxy(echo_backend.address, timeout=0.5)
    with proxy.connect() as client:
        client.sendall(b"x")
        assert recv_exactly(client, 1) == b"x"
        start = time.monotonic()
        assert client.recv(1) == b""
        assert 0.3 < time.monotonic() - start < 10


def test_stay_connected_keeps_idle_sessions(echo_backend, start_proxy):
    proxy = start_proxy(echo_backend.address, timeout=0.3, stay_connected=True)
    with proxy.connect() as client:
        client.settimeout(1.5)
        try:
            client.recv(1)
            raise AssertionError("the session was closed")
        except TimeoutError:
            pass
        client.sendall(b"still here")
        assert recv_exactly(client, 10) == b"still here"


def test_sessions_and_bytes_are_counted(echo_backend, start_proxy):
    proxy = start_proxy(echo_backend.address)
    with proxy.connect() as client:
        client.sendall(b"12345")
        assert recv_exactly(client, 5) == b"12345"
    wait_until(lambda: proxy.call(proxy.proxy.stats)["active_connections"] == 0)
    stats = proxy.call(proxy.proxy.stats)
    assert stats["total_connections"] == 1
    assert stats["bytes_to_backend"] == stats["bytes_to_client"] == 5
    assert stats["behaviors"]["dummy"] >= 2
