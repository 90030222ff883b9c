"""Backend faults: down, unreachable, silent, resetting. Clients are let go, never left hanging.

The proxy runs in its own process so its CPU time can be read from /proc while it waits.
"""

from __future__ import annotations

import time

import gevent
from harness import ProxyProcess
from load import (
    Backend,
    blackhole,
    echo,
    ends_within,
    read_until_eof,
    recv_exactly,
    reset,
    send_quietly,
    socket_connect,
)

from support import free_port, wait_until

#: A proxy waiting on sockets and timers uses next to no CPU; a busy loop would use all of one
#: core. Generous, for a shared and noisy machine.
IDLE_CPU_SHARE = 0.25


def client_closed(address, timeout: float) -> float:
    """Connect and send; return how long until the proxy closed the connection."""
    with socket_connect(address) as sock:
        sock.sendall(b"hello?")
        _, elapsed = ends_within(sock, timeout + 10)
    return elapsed


def test_backend_down_clients_closed_at_once_without_spinning_then_backend_back():
    port = free_port()
    proxy = ProxyProcess(("127.0.0.1", port), timeout=2)
    try:
        cpu_before, started = proxy.cpu_seconds(), time.monotonic()
        for _ in range(40):
            assert client_closed(proxy.address, 2) < 2
            gevent.sleep(0.05)  # a steady trickle of clients over two seconds of outage
        cpu = proxy.cpu_seconds() - cpu_before
        wall = time.monotonic() - started
        print(f"backend down: {cpu:.2f}s of CPU in {wall:.2f}s, 40 clients")
        assert cpu < IDLE_CPU_SHARE * wall, f"{cpu:.2f}s of CPU in {wall:.2f}s of outage"
        assert proxy.log().count("cannot reach backend") == 40
        # The backend comes back on the same port: the next connections work.
        backend = Backend(echo, ("127.0.0.1", port))
        try:
            for _ in range(5):
                with socket_connect(proxy.address, timeout=10) as sock:
                    sock.sendall(b"ping")
                    assert recv_exactly(sock, 4) == 4
        finally:
            backend.stop()
        assert proxy.process.poll() is None
    finally:
        proxy.cleanup()


def test_unreachable_backend_clients_closed_within_connect_timeout_without_spinning():
    timeout = 1.0
    with blackhole() as address:
        proxy = ProxyProcess(address, timeout=timeout)
        try:
            cpu_before, started = proxy.cpu_seconds(), time.monotonic()
            waits = gevent.joinall(
                [gevent.spawn(client_closed, proxy.address, timeout) for _ in range(50)],
                raise_error=True,
            )
            cpu = proxy.cpu_seconds() - cpu_before
            wall = time.monotonic() - started
            for wait in waits:
                # Closed when the connect timeout expires, with a margin for a busy machine.
                assert timeout * 0.8 < wait.value < timeout + 3
            print(f"backend unreachable: {cpu:.2f}s of CPU in {wall:.2f}s, 50 clients waiting")
            assert cpu < IDLE_CPU_SHARE * wall, f"{cpu:.2f}s of CPU in {wall:.2f}s of outage"
            assert proxy.log().count("cannot reach backend") == 50
        finally:
            proxy.cleanup()


def test_backend_that_never_answers_is_ended_by_the_idle_timeout():
    silent = Backend(lambda sock: read_until_eof(sock))
    proxy = ProxyProcess(silent.address, timeout=1)
    try:
        with socket_connect(proxy.address) as sock:
            sock.sendall(b"anyone there?")
            how, elapsed = ends_within(sock, 15)
        assert how == "eof"
        assert 0.5 < elapsed < 10
        wait_until(lambda: silent.active == 0)
        assert "idle for 1s; closing the session" in proxy.log()
        assert proxy.stats()["live_sessions"] == 0
    finally:
        proxy.cleanup()
        silent.stop()


def test_backend_that_never_reads_is_ended_by_the_idle_timeout():
    """The proxy is stuck sending to a backend that reads nothing: the timer still fires."""
    never_reads = Backend(lambda sock: gevent.sleep(60))
    proxy = ProxyProcess(never_reads.address, timeout=1)
    try:
        with socket_connect(proxy.address) as sock:
            sender = gevent.spawn(send_quietly, sock, b"x" * (32 << 20))
            how, elapsed = ends_within(sock, 15)
            sender.kill()
        assert 0.5 < elapsed < 10
        wait_until(lambda: proxy.stats()["live_sessions"] == 0)
    finally:
        proxy.cleanup()
        never_reads.stop()


def reset_mid_answer(sock) -> None:
    """Read the request, send part of a large answer, then reset the connection."""
    sock.recv(1024)
    sock.sendall(b"a" * (256 * 1024))
    reset(sock)


def test_backend_reset_mid_answer_reaches_the_client_as_reset_or_close():
    resetting = Backend(reset_mid_answer)
    proxy = ProxyProcess(resetting.address, timeout=30)
    try:
        endings = []
        for _ in range(20):
            with socket_connect(proxy.address) as sock:
                sock.sendall(b"GET me a large answer")
                how, elapsed = ends_within(sock, 10)
                endings.append(how)
        # Never a hang: every client saw its connection end (the timeout is 30s).
        assert set(endings) <= {"eof", "reset"}
        wait_until(lambda: proxy.stats()["live_sessions"] == 0)
        assert "Traceback" not in proxy.log()
    finally:
        proxy.cleanup()
        resetting.stop()
