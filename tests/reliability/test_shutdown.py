"""Shutdown: SIGTERM under full load ends ``python -m vaurien`` at once and cleanly."""

from __future__ import annotations

import time

import gevent
from harness import VaurienProcess, descendants
from load import Backend, blackhole, echo, ends_within, socket_connect

from support import recv_exactly, wait_until


def drain(sock) -> None:
    """Read until the connection ends or fails."""
    try:
        while sock.recv(1 << 16):
            pass
    except OSError:
        pass


def stream(address) -> None:
    """Send, and read the echo, without pause until the connection fails."""
    reader = None
    try:
        with socket_connect(address) as sock:
            reader = gevent.spawn(drain, sock)
            chunk = b"z" * (1 << 16)
            while True:
                sock.sendall(chunk)
    except OSError:
        pass
    finally:
        if reader is not None:
            reader.kill()


def test_sigterm_under_full_load_exits_0_within_2_seconds_without_traceback():
    backend = Backend(echo)
    proxy = VaurienProcess("--backend", "{}:{}".format(*backend.address))
    clients = []
    try:
        clients = [gevent.spawn(stream, proxy.address) for _ in range(200)]
        # Every client has its session (two descriptors each) and data is flowing.
        wait_until(lambda: proxy.open_fds() >= 400 and backend.active == 200, context=proxy.log)
        gevent.sleep(0.5)
        assert all(not client.dead for client in clients)
        started = time.monotonic()
        status = proxy.terminate(timeout=10)
        elapsed = time.monotonic() - started
        log = proxy.log()
        assert status == 0, log
        print(f"exit status {status} {elapsed:.2f}s after SIGTERM")
        assert elapsed < 2.0, f"took {elapsed:.2f}s to exit"
        assert "Traceback" not in log, log
        assert "stopped" in log
        assert descendants(proxy.pid) == []
    finally:
        gevent.killall(clients)
        proxy.cleanup()
        backend.stop()


def test_sigterm_while_clients_wait_for_an_unreachable_backend():
    with blackhole() as address:
        proxy = VaurienProcess("--backend", "{}:{}".format(*address), "--timeout", "30")
        waiting = []
        try:
            waiting = [socket_connect(proxy.address) for _ in range(50)]
            wait_until(lambda: proxy.open_fds() >= 100, context=proxy.log)
            started = time.monotonic()
            status = proxy.terminate(timeout=10)
            elapsed = time.monotonic() - started
            log = proxy.log()
            assert status == 0, log
            assert elapsed < 2.0, f"took {elapsed:.2f}s to exit"
            assert "Traceback" not in log, log
            for sock in waiting:
                assert ends_within(sock, 5)[0] in ("eof", "reset")
        finally:
            for sock in waiting:
                sock.close()
            proxy.cleanup()


def test_stop_ends_sessions_and_clients_still_waiting_for_the_backend(start_proxy, echo_backend):
    """In process (as the tests and an embedding program use it), stop() lets every client go:
    those in a session and those whose backend connection is still being made."""
    with blackhole() as address:
        stuck = start_proxy(address, timeout=30)
        working = start_proxy(echo_backend.address)
        clients = [stuck.connect() for _ in range(5)]
        clients += [working.connect() for _ in range(5)]
        for sock in clients[5:]:
            sock.sendall(b"ping")
            assert recv_exactly(sock, 4) == b"ping"
        wait_until(lambda: stuck.call(stuck.proxy.stats)["live_sessions"] == 5)
        try:
            for proxy in (stuck, working):
                started = time.monotonic()
                proxy.stop()  # and wait for the proxy's thread to end
                assert time.monotonic() - started < 2
                assert proxy.proxy.stats()["live_sessions"] == 0
            for sock in clients:
                sock.settimeout(5)
                try:
                    assert sock.recv(10) == b""
                except ConnectionResetError:
                    pass
        finally:
            for sock in clients:
                sock.close()
