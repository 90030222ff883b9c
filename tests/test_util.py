"""start_proxy, stop_proxy and ProxyProcess: a real ``python -m vaurien`` child process."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
import unittest
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from support import free_port, recv_exactly
from vaurien import Client
from vaurien.util import ProxyProcess, ProxyStartError, start_proxy, stop_proxy


class _Hello(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"hello"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


def start_web_server() -> ThreadingHTTPServer:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hello)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


class TestHttpProxy(unittest.TestCase):
    """A functional test written as Vaurien 1.x's documentation shows, run unchanged."""

    def setUp(self):
        self._web = start_web_server()
        self._proxy_port, self._http_port = free_port(), free_port()
        self._proxy_pid = start_proxy(
            proxy_host="127.0.0.1",
            proxy_port=self._proxy_port,
            backend_host="127.0.0.1",
            backend_port=self._web.server_address[1],
            http_host="127.0.0.1",
            http_port=self._http_port,
            log_level="error",
            log_output="/dev/null",
        )
        self.proxy = f"http://127.0.0.1:{self._proxy_port}"
        self.client = Client("127.0.0.1", self._http_port)
        assert self.client.get_behavior() == "dummy"

    def tearDown(self):
        stop_proxy(self._proxy_pid)
        self._web.shutdown()
        self._web.server_close()

    def test_proxy(self):
        # a few simple requests first, to see that the proxy works
        self.assertEqual(self.client.get_behavior(), "dummy")
        times = []
        for _ in range(10):
            start = time.monotonic()
            res = requests.get(self.proxy, timeout=30)
            times.append(time.monotonic() - start)
            self.assertEqual(res.status_code, 200)
            self.assertEqual(res.text, "hello")
        fastest = min(times)

        # now the behaviors
        with self.client.with_behavior("blackout"):
            # oh look, we broke it
            self.assertRaises(requests.ConnectionError, requests.get, self.proxy, timeout=30)
            self.assertEqual(self.client.get_behavior(), "blackout")

        with self.client.with_behavior("delay", sleep=1):
            # works, but slower
            start = time.monotonic()
            res = requests.get(self.proxy, timeout=30)
            duration = time.monotonic() - start
            self.assertEqual(res.status_code, 200)
            self.assertGreaterEqual(duration, fastest + 1)

        # back to normal
        self.assertEqual(self.client.get_behavior(), "dummy")
        res = requests.get(self.proxy, timeout=30)
        self.assertEqual(res.status_code, 200)


def test_start_proxy_against_the_http_server_fixture(http_server):
    proxy_port, http_port = free_port(), free_port()
    # The 1.x positional order, warmup included.
    pid = start_proxy(
        "127.0.0.1",
        proxy_port,
        "127.0.0.1",
        http_server.port,
        "tcp",
        True,
        2,
        "127.0.0.1",
        http_port,
    )
    try:
        client = Client("127.0.0.1", http_port)
        assert client.get_behavior() == "dummy"
        session = requests.Session()  # keep-alive: one connection, one session in the proxy
        for _ in range(3):
            assert session.get(f"http://127.0.0.1:{proxy_port}/", timeout=30).status_code == 200
        session.close()
        assert client.get_stats()["total_connections"] == 1
    finally:
        assert stop_proxy(pid) == 0  # SIGTERM: a clean stop
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # reaped
    with pytest.raises(ValueError, match=f"process {pid} is not a proxy"):
        stop_proxy(pid)


def test_start_proxy_names_its_proxy(echo_backend):
    proxy_port, http_port = free_port(), free_port()
    backend = echo_backend.address.rpartition(":")[2]
    pid = start_proxy("127.0.0.1", proxy_port, "127.0.0.1", int(backend), http_port=http_port,
                      http_host="127.0.0.1", name="cache")  # fmt: skip
    try:
        assert list(Client("127.0.0.1", http_port).list_proxies()) == ["cache"]
        assert Client("127.0.0.1", http_port, proxy="cache").get_behavior() == "dummy"
    finally:
        assert stop_proxy(pid) == 0


def test_stop_proxy_refuses_a_process_it_did_not_start():
    with pytest.raises(ValueError, match="is not a proxy of this process"):
        stop_proxy(os.getpid())


def test_a_proxy_that_cannot_start_raises_with_its_own_error_output():
    with pytest.raises(ProxyStartError) as info:
        start_proxy(
            proxy_host="127.0.0.1",
            proxy_port=free_port(),
            http_port=free_port(),
            options=["--behavior", "20delay"],
        )
    message = str(info.value)
    assert isinstance(info.value, ValueError)  # as 1.x raised
    assert "exited with status 2 before accepting connections" in message
    assert "vaurien: error: argument --behavior: '20delay': missing ':'" in message


def test_a_taken_port_is_refused_before_anything_starts():
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        with pytest.raises(ProxyStartError, match=f"127.0.0.1:{port}: another server listens"):
            start_proxy(proxy_host="127.0.0.1", proxy_port=port, http_port=free_port())


def test_a_proxy_that_does_not_answer_in_time_is_stopped_and_reported():
    process = ProxyProcess(
        proxy_host="127.0.0.1", proxy_port=free_port(), http_port=free_port(), timeout=0
    )
    with pytest.raises(ProxyStartError, match="did not accept connections on .* within 0s"):
        process.start()
    assert process.returncode is not None  # stopped and reaped
    with pytest.raises(ChildProcessError):
        os.waitpid(process.pid, os.WNOHANG)


def test_proxy_process_is_a_context_manager(echo_backend):
    host, port = echo_backend.host, echo_backend.port
    with ProxyProcess(
        proxy_host="127.0.0.1",
        proxy_port=free_port(),
        backend_host=host,
        backend_port=port,
        http=False,
        log_level="debug",
    ) as process:
        with socket.create_connection(("127.0.0.1", process.port), timeout=10) as sock:
            sock.sendall(b"ping")
            assert recv_exactly(sock, 4) == b"ping"
        assert process.poll() is None
    assert process.returncode == 0
    assert f"listening on 127.0.0.1:{process.port}" in process.output()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", process.port), timeout=10)


def test_a_proxy_that_ignores_sigterm_is_killed(echo_backend):
    process = ProxyProcess(
        proxy_host="127.0.0.1",
        proxy_port=free_port(),
        backend_port=echo_backend.port,
        http_port=free_port(),
    ).start()
    os.kill(process.pid, signal.SIGSTOP)  # a stopped process cannot act on SIGTERM
    start = time.monotonic()
    assert process.stop(timeout=0.5) == -signal.SIGKILL
    assert time.monotonic() - start >= 0.5
