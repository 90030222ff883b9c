"""A functional test in the Vaurien 1.x style: one proxy for the test case, and the behavior
changed around each step with ``Client.with_behavior``.

A tiny HTTP server stands in for the backend here; in your tests it is the real backend, and
the calls go through your application, configured to reach its backend on ``PROXY_PORT``.
"""

import threading
import time
import unittest
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import requests

from vaurien import Client, start_proxy, stop_proxy

PROXY_PORT = 8000
CONTROL_PORT = 8080


class Hello(BaseHTTPRequestHandler):
    """Answers every GET with ``hello``."""

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "5")
        self.end_headers()
        self.wfile.write(b"hello")

    def log_message(self, *args):
        pass


class TestThroughVaurien(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.backend = ThreadingHTTPServer(("127.0.0.1", 0), Hello)
        threading.Thread(target=cls.backend.serve_forever, daemon=True).start()
        cls.proxy_pid = start_proxy(
            proxy_host="127.0.0.1",
            proxy_port=PROXY_PORT,
            backend_host="127.0.0.1",
            backend_port=cls.backend.server_port,
            http_host="127.0.0.1",
            http_port=CONTROL_PORT,
        )
        cls.client = Client("127.0.0.1", CONTROL_PORT)
        cls.url = f"http://127.0.0.1:{PROXY_PORT}/"

    @classmethod
    def tearDownClass(cls):
        stop_proxy(cls.proxy_pid)
        cls.backend.shutdown()
        cls.backend.server_close()

    def test_backend_down(self):
        with self.client.with_behavior("blackout"):
            self.assertEqual(self.client.get_behavior(), "blackout")
            with self.assertRaises(requests.ConnectionError):
                requests.get(self.url, timeout=5)
        # The previous behavior is back, and so is the service.
        self.assertEqual(self.client.get_behavior(), "dummy")
        self.assertEqual(requests.get(self.url, timeout=5).text, "hello")

    def test_slow_backend(self):
        with self.client.with_behavior("delay", sleep=1):
            start = time.monotonic()
            self.assertEqual(requests.get(self.url, timeout=10).text, "hello")
            self.assertGreaterEqual(time.monotonic() - start, 1)


if __name__ == "__main__":
    unittest.main()
