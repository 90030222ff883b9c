"""Fixtures shared by the whole suite."""

from __future__ import annotations

import pytest

from support import EchoServer, ProxyThread, RecordingServer

# Real servers (redis, memcached, MariaDB, SMTP, HTTP, echo) as session fixtures.
pytest_plugins = ["servers"]


@pytest.fixture
def echo_backend():
    """A TCP echo server on 127.0.0.1 and a free port."""
    server = EchoServer()
    yield server
    server.close()


@pytest.fixture
def recording_backend():
    """A TCP echo server that records what each connection received, and when."""
    server = RecordingServer()
    yield server
    server.close()


@pytest.fixture
def start_proxy():
    """Factory: ``start_proxy(backend, behavior=..., **settings)`` or ``start_proxy(config=...)``.

    Returns a running ProxyThread, stopped after the test.
    """
    started = []

    def start(backend=None, config=None, **settings):
        if isinstance(backend, tuple):
            backend = f"{backend[0]}:{backend[1]}"
        if config is None:
            settings["backend"] = backend
        proxy = ProxyThread(config, **settings).start()
        started.append(proxy)
        return proxy

    yield start
    for proxy in started:
        proxy.stop()
