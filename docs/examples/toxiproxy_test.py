"""A test written for Toxiproxy with its Python client, toxiproxy-python: it runs unchanged
against ``vaurien --toxiproxy-api localhost:8474``."""

import os
import socket
import threading
import time

import pytest
from toxiproxy import Toxiproxy


@pytest.fixture
def toxiproxy():
    """The Toxiproxy server (here, Vaurien); every proxy a test made is deleted after it."""
    server = Toxiproxy()
    server.update_api_consumer("127.0.0.1", int(os.environ.get("TOXIPROXY_PORT", "8474")))
    yield server
    server.destroy_all()


@pytest.fixture
def echo():
    """Stands in for the service your application talks to: it echoes what it receives."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve():
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                while data := conn.recv(65536):
                    conn.sendall(data)

    threading.Thread(target=serve, daemon=True).start()
    yield f"127.0.0.1:{listener.getsockname()[1]}"
    listener.close()


def connect(proxy):
    host, port = proxy.listen.rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=10)


def test_latency_slows_every_answer(toxiproxy, echo):
    proxy = toxiproxy.create(upstream=echo, name="echo")
    proxy.add_toxic(type="latency", attributes={"latency": 300})
    with connect(proxy) as sock:
        start = time.monotonic()
        sock.sendall(b"ping")
        assert sock.recv(4) == b"ping"
        assert time.monotonic() - start >= 0.3


def test_a_service_that_is_down_refuses_connections(toxiproxy, echo):
    proxy = toxiproxy.create(upstream=echo, name="echo")
    with proxy.down():
        with pytest.raises(ConnectionRefusedError):
            connect(proxy)
    with connect(proxy) as sock:
        sock.sendall(b"back")
        assert sock.recv(4) == b"back"
