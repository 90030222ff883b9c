"""The session: bytes through unchanged, half-close, backend down, idle timeout."""

import hashlib
import os
import socket
import threading
import time

from support import free_port, recv_exactly, wait_until
from vaurien.errors import VaurienError
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


# -- disabling, moving, and a backend that is down ------------------------------------------------


def refused(address) -> bool:
    try:
        socket.create_connection(address, timeout=2).close()
    except ConnectionRefusedError:
        return True
    except OSError:  # accepted, then reset (the listener closed with it in its queue)
        pass
    return False


def test_disable_refuses_connects_and_closes_sessions_then_start_binds_the_same_port(
    echo_backend, start_proxy
):
    proxy = start_proxy(echo_backend.address)  # on port 0: a free port was picked
    address = proxy.address
    with proxy.connect() as client:
        client.sendall(b"ping")
        assert recv_exactly(client, 4) == b"ping"
        proxy.call(proxy.proxy.disable)
        assert client.recv(10) == b""  # its session was closed
    assert refused(address)
    assert proxy.call(lambda: proxy.proxy.enabled) is False
    proxy.call(proxy.proxy.start)
    assert proxy.address == address
    with proxy.connect() as client:
        client.sendall(b"again")
        assert recv_exactly(client, 5) == b"again"


def test_moving_the_backend_closes_the_sessions_and_new_ones_go_there(
    echo_backend, recording_backend, start_proxy
):
    proxy = start_proxy(echo_backend.address)
    with proxy.connect() as client:
        client.sendall(b"ping")
        assert recv_exactly(client, 4) == b"ping"
        target = Address(*recording_backend.address)
        proxy.call(proxy.proxy.move, backend=target)
        assert client.recv(10) == b""
    with proxy.connect() as client:
        client.sendall(b"there")
        assert recv_exactly(client, 5) == b"there"
    assert recording_backend.connections[0].data == b"there"


def test_moving_the_listener_binds_the_new_address_first(echo_backend, start_proxy):
    proxy = start_proxy(echo_backend.address)
    old = proxy.address
    new = Address("127.0.0.1", free_port())
    proxy.call(proxy.proxy.move, listen=new)
    assert proxy.address == (new.host, new.port)
    assert refused(old)
    with proxy.connect() as client:
        client.sendall(b"moved")
        assert recv_exactly(client, 5) == b"moved"
    # An address that cannot be bound changes nothing.
    with socket.create_server(("127.0.0.1", 0)) as taken:
        busy = Address("127.0.0.1", taken.getsockname()[1])
        try:
            proxy.call(proxy.proxy.move, listen=busy)
            raise AssertionError("moved onto a port in use")
        except VaurienError as e:
            assert "already in use" in str(e)
    assert proxy.address == (new.host, new.port)
    with proxy.connect() as client:
        client.sendall(b"still")
        assert recv_exactly(client, 5) == b"still"


def test_a_dead_backend_is_refused_like_the_backend_itself_with_the_flag(start_proxy):
    port = free_port()
    proxy = start_proxy(("127.0.0.1", port), refuse_when_backend_down=True, timeout=2)
    address = proxy.address
    wait_until(lambda: refused(address), what="the proxy to stop listening")
    # The backend comes up: the proxy listens again, on the same port, and forwards.
    backend = socket.create_server(("127.0.0.1", port))
    backend.settimeout(10)
    try:
        wait_until(lambda: not refused(address), what="the proxy to listen again")
        with proxy.connect() as client:
            client.sendall(b"hello")
            while True:  # the proxy's probe, and the test's, connected first and sent nothing
                conn, _ = backend.accept()
                with conn:
                    if data := recv_exactly(conn, 5):
                        assert data == b"hello"
                        break
    finally:
        backend.close()
    # It dies while the proxy listens: the first client is reset, the next ones refused.
    try:
        with proxy.connect() as client:
            client.recv(10)
    except ConnectionResetError:
        pass
    wait_until(lambda: refused(address), what="the proxy to stop listening again")


def test_without_the_flag_a_dead_backend_is_accepted_then_closed(start_proxy):
    proxy = start_proxy(("127.0.0.1", free_port()), timeout=2)
    for _ in range(3):
        with proxy.connect() as client:
            assert client.recv(10) == b""
