"""Limits: beyond --max-connections new clients are closed, and running out of descriptors
(EMFILE) pauses accepting until some are free again, logged, without a traceback."""

from __future__ import annotations

import contextlib

import gevent
from harness import ProxyProcess, VaurienProcess
from load import Backend, echo, ends_within, recv_exactly, socket_connect

from support import wait_until


def served(address, timeout: float = 10.0):
    """A connection through the proxy on which an echo came back."""
    sock = socket_connect(address, timeout=timeout)
    sock.sendall(b"ping")
    assert recv_exactly(sock, 4) == 4, "no echo"
    return sock


def test_clients_beyond_max_connections_are_closed_with_a_log_line():
    backend = Backend(echo)
    proxy = ProxyProcess(backend.address, max_connections=5)
    held = []
    try:
        held = [served(proxy.address) for _ in range(5)]
        for _ in range(3):
            with socket_connect(proxy.address) as extra:
                extra.sendall(b"ping")
                ends_within(extra, 5)  # closed (or reset: it had sent data), not kept waiting
        stats = proxy.stats()
        assert stats["refused_connections"] == 3
        assert stats["live_sessions"] == 5
        assert "the most --max-connections allows" in proxy.log()
        # One slot frees up: the next client is served.
        held.pop().close()
        wait_until(lambda: proxy.stats()["live_sessions"] == 4)
        held.append(served(proxy.address))
    finally:
        for sock in held:
            sock.close()
        proxy.cleanup()
        backend.stop()


def test_max_connections_default_is_generous():
    from vaurien.settings import SETTINGS_BY_NAME

    assert SETTINGS_BY_NAME["max_connections"].default >= 10000


def start_with_every_descriptor_taken(backend_address, limit: int):
    """``python -m vaurien`` with RLIMIT_NOFILE ``limit`` (or one more, so that the sessions'
    descriptors, two each, fill the table exactly), and the sessions that fill it."""
    for nofile in (limit, limit + 1):
        backend = "{}:{}".format(*backend_address)
        proxy = VaurienProcess("--backend", backend, "--log-level", "debug", nofile=nofile)
        served(proxy.address).close()  # the first session opens what the proxy opens lazily
        wait_until(lambda p=proxy: "closed; 0 live sessions" in p.log())
        free = nofile - proxy.open_fds()
        if free % 2 == 0:
            return proxy, [served(proxy.address) for _ in range(free // 2)]
        proxy.terminate()
        proxy.cleanup()
    raise AssertionError("could not fill the descriptor table exactly")


def test_out_of_descriptors_accepting_pauses_and_resumes():
    backend = Backend(echo)
    proxy, held = start_with_every_descriptor_taken(backend.address, 40)
    waiting = None
    try:
        assert proxy.open_fds() in (40, 41)
        # No descriptor left to accept with: the client waits in the listen queue.
        waiting = socket_connect(proxy.address)
        waiting.sendall(b"ping")
        wait_until(lambda: "cannot accept clients" in proxy.log(), 10, context=proxy.log)
        cpu_before = proxy.cpu_seconds()
        gevent.sleep(1.5)
        assert proxy.cpu_seconds() - cpu_before < 0.5, "spinning while out of descriptors"
        # Descriptors free up: accepting resumes and the waiting client is served.
        held.pop().close()
        waiting.settimeout(10)
        assert recv_exactly(waiting, 4) == 4
        wait_until(lambda: "accepting clients again" in proxy.log(), 10, context=proxy.log)
        for sock in held:
            sock.close()
        held = []
        with contextlib.closing(served(proxy.address)):
            pass
        log = proxy.log()
        assert "Traceback" not in log, log
        assert proxy.terminate() == 0
    finally:
        for sock in held:
            sock.close()
        if waiting is not None:
            waiting.close()
        proxy.cleanup()
        backend.stop()
