"""Rules and scenarios from a test: only the requests a test is about fail, when it says so."""

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests


class Shop(BaseHTTPRequestHandler):
    """Answers every request with ``ok``."""

    def do_GET(self):
        length = int(self.headers.get("Content-Length", "0"))
        self.rfile.read(length)
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    do_POST = do_GET

    def log_message(self, *args):
        pass


@pytest.fixture
def backend():
    """Stands in for the service your application talks to."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), Shop)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def test_only_payments_fail(vaurien_proxy, backend):
    proxy = vaurien_proxy(
        backend=backend,
        protocol="http",
        rules=["payments: method=POST path=/api/payments/* => 100:error"],
    )
    root = f"http://{proxy.address}"
    assert requests.post(f"{root}/api/payments/7", data=b"{}", timeout=5).status_code >= 500
    assert requests.get(f"{root}/api/payments/7", timeout=5).text == "ok"
    assert requests.post(f"{root}/api/orders", data=b"{}", timeout=5).text == "ok"
    assert proxy.client.get_stats()["rules"] == {"payments": 1}  # the rule fired, once


def test_an_outage_after_two_requests(vaurien_proxy, backend):
    proxy = vaurien_proxy(backend=backend, protocol="http")
    url = f"http://{proxy.address}/"
    with proxy.scenario("2req 100:dummy; 3req 100:error"):
        codes = [requests.get(url, timeout=5).status_code for _ in range(5)]
    assert codes[:2] == [200, 200]
    assert all(code >= 500 for code in codes[2:])
    assert requests.get(url, timeout=5).status_code == 200  # the scenario ended with the block
