"""The ``vaurien_proxy`` pytest fixture: a proxy per test, stopped when the test ends."""

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests


class Hello(BaseHTTPRequestHandler):
    """Answers every GET with ``hello``."""

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "5")
        self.end_headers()
        self.wfile.write(b"hello")

    def log_message(self, *args):
        pass


@pytest.fixture
def backend():
    """Stands in for the service your application talks to."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), Hello)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def test_a_slow_backend_trips_the_client_timeout(vaurien_proxy, backend):
    proxy = vaurien_proxy(backend=backend)
    url = f"http://{proxy.address}/"
    assert requests.get(url, timeout=5).text == "hello"
    with proxy.client.with_behavior("delay", sleep=2):
        with pytest.raises(requests.Timeout):
            requests.get(url, timeout=0.5)
    assert requests.get(url, timeout=5).text == "hello"


def test_options_become_flags(vaurien_proxy, backend):
    # behavior_delay_sleep=0.3 is --behavior-delay-sleep 0.3 on the proxy's command line
    proxy = vaurien_proxy(backend=backend, behavior="100:delay", behavior_delay_sleep=0.3)
    response = requests.get(f"http://{proxy.address}/", timeout=5)
    assert response.text == "hello"
    assert response.elapsed.total_seconds() >= 0.3
