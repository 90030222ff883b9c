"""Small backend servers the tests run as child processes: echo, HTTP and SMTP.

Run one with ``python tests/backends.py KIND [--port N] [--port-file PATH]``.
Each listens on 127.0.0.1 (port 0 picks a free one) and, once listening,
writes its port to ``--port-file`` (written whole, then renamed into place),
so the parent can poll for the file instead of sleeping.

- ``echo``: sends back every byte it receives; when the client half-closes,
  it half-closes its own write side (after echoing everything).
- ``http``: HTTP/1.1 with keep-alive; the routes are listed on ``HttpHandler``.
  With ``--tls CERT KEY`` it serves HTTPS.
- ``smtp``: aiosmtpd, which keeps each message under ``--spool`` as a JSON
  file ``NNNNNNNN.json`` with ``mail_from``, ``rcpt_tos`` and ``data`` (base64).

Only the standard library is needed, plus aiosmtpd for ``smtp``; nothing here
uses gevent.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import socket
import ssl
import sys
import threading
import time
from collections.abc import Iterator
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

HOST = "127.0.0.1"
BACKLOG = 1024
PATTERN_BLOCK = bytes(range(256))
WRITE_CHUNK = 64 * 1024  # bytes; a multiple of len(PATTERN_BLOCK)
MAX_BODY = 1 << 30  # bytes; the largest /bytes/N or /chunked body served
MAX_SLOW = 60.0  # seconds; the longest /slow?s= delay honoured


def pattern(size: int) -> bytes:
    """Return the ``size`` bytes that ``/bytes/{size}`` and ``/chunked`` serve.

    The body is 0x00, 0x01, ... 0xff repeated, so a lost, repeated or
    reordered slice shows up when a test compares it.
    """
    return (PATTERN_BLOCK * (size // len(PATTERN_BLOCK) + 1))[:size]


def pattern_chunks(size: int) -> Iterator[bytes]:
    """Yield ``pattern(size)`` in pieces of at most ``WRITE_CHUNK`` bytes."""
    full = pattern(WRITE_CHUNK)
    remaining = size
    while remaining > 0:
        piece = full if remaining >= WRITE_CHUNK else full[:remaining]
        remaining -= len(piece)
        yield piece


def announce(port: int, port_file: Path | None) -> None:
    """Log the listening address and publish the port for the parent process."""
    print(f"listening on {HOST}:{port}", file=sys.stderr, flush=True)
    if port_file is not None:
        partial = port_file.with_name(port_file.name + ".partial")
        partial.write_text(f"{port}\n")
        os.replace(partial, port_file)


# --- echo -------------------------------------------------------------------


def echo_connection(conn: socket.socket) -> None:
    """Echo one connection; pass the client's half-close on to the client."""
    with conn:
        try:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            while data := conn.recv(WRITE_CHUNK):
                conn.sendall(data)
            conn.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the client reset or vanished: this connection is over


def serve_echo(port: int, port_file: Path | None) -> None:
    """Accept connections forever, one thread per connection."""
    listener = socket.create_server((HOST, port), backlog=BACKLOG)
    announce(listener.getsockname()[1], port_file)
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=echo_connection, args=(conn,), daemon=True).start()


# --- http -------------------------------------------------------------------


class HttpHandler(BaseHTTPRequestHandler):
    """Routes for tests; GET routes also answer HEAD.

    - ``GET /``: a short text body.
    - ``GET /bytes/N``: ``pattern(N)`` with a Content-Length.
    - ``GET /chunked?chunks=K&size=S``: ``pattern(K*S)`` sent as K chunks of
      S bytes (defaults 4 and 1024); plain until close to HTTP/1.0 clients.
    - ``POST|PUT /echo``: the request body back (Content-Length or chunked).
    - ``GET /status/N``: status N (200 to 599) with a short body.
    - ``GET /slow?s=F``: answers after F seconds (at most ``MAX_SLOW``).
    - ``GET /headers``: the request headers as a JSON object.
    """

    protocol_version = "HTTP/1.1"
    server_version = "VaurienTestHTTP/1.0"
    # Headers and body are separate writes: with Nagle's algorithm a small body
    # would wait for the client's delayed ACK (40 ms on Linux).
    disable_nagle_algorithm = True

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        query = {key: values[-1] for key, values in parse_qs(url.query).items()}
        parts = url.path.strip("/").split("/")
        try:
            if url.path == "/":
                self.send_body(b"Hello from the Vaurien test backend.\n", "text/plain")
            elif len(parts) == 2 and parts[0] == "bytes":
                self.send_pattern(self.bounded_int(parts[1], 0, MAX_BODY))
            elif url.path == "/chunked":
                chunks = self.bounded_int(query.get("chunks", "4"), 0, 1 << 20)
                size = self.bounded_int(query.get("size", "1024"), 1, MAX_BODY)
                if chunks * size > MAX_BODY:
                    raise ValueError(f"body larger than {MAX_BODY} bytes")
                self.send_chunked(chunks, size)
            elif len(parts) == 2 and parts[0] == "status":
                self.send_status(self.bounded_int(parts[1], 200, 599))
            elif url.path == "/slow":
                seconds = float(query.get("s", "1"))
                if not 0 <= seconds <= MAX_SLOW:
                    raise ValueError(f"s must be between 0 and {MAX_SLOW}")
                time.sleep(seconds)
                self.send_body(f"slept {seconds}\n".encode(), "text/plain")
            elif url.path == "/headers":
                headers = {name: value for name, value in self.headers.items()}
                self.send_body(json.dumps(headers).encode(), "application/json")
            else:
                self.send_body(b"not found\n", "text/plain", HTTPStatus.NOT_FOUND)
        except ValueError as e:
            self.send_body(f"{e}\n".encode(), "text/plain", HTTPStatus.BAD_REQUEST)

    do_HEAD = do_GET

    def do_POST(self) -> None:
        if urlsplit(self.path).path != "/echo":
            self.send_body(b"not found\n", "text/plain", HTTPStatus.NOT_FOUND)
            return
        try:
            if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                body = self.read_chunked_body()
            else:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        except ValueError as e:
            self.close_connection = True  # the body's end is unknown
            self.send_body(f"bad body: {e}\n".encode(), "text/plain", HTTPStatus.BAD_REQUEST)
            return
        content_type = self.headers.get("Content-Type", "application/octet-stream")
        self.send_body(body, content_type)

    do_PUT = do_POST

    @staticmethod
    def bounded_int(text: str, low: int, high: int) -> int:
        value = int(text)
        if not low <= value <= high:
            raise ValueError(f"{value} not between {low} and {high}")
        return value

    def send_body(self, body: bytes, content_type: str, status: int = HTTPStatus.OK) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def send_pattern(self, size: int) -> None:
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(size))
        self.end_headers()
        if self.command != "HEAD":
            for piece in pattern_chunks(size):
                self.wfile.write(piece)

    def send_chunked(self, chunks: int, size: int) -> None:
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "application/octet-stream")
        chunked = self.request_version == "HTTP/1.1"
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.close_connection = True
        self.end_headers()
        if self.command == "HEAD":
            return
        body = pattern(chunks * size)
        for start in range(0, len(body), size):
            piece = body[start : start + size]
            self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
            self.wfile.flush()
        if chunked:
            self.wfile.write(b"0\r\n\r\n")

    def send_status(self, status: int) -> None:
        if status in (204, 304):  # these never carry a body
            self.send_response(status)
            self.end_headers()
            return
        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = "unassigned"
        self.send_body(f"{status} {phrase}\n".encode(), "text/plain", status)

    def read_chunked_body(self) -> bytes:
        body = bytearray()
        while True:
            size = int(self.rfile.readline().split(b";")[0].strip(), 16)
            if size == 0:
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass  # trailer fields are read and dropped
                return bytes(body)
            body += self.rfile.read(size)
            self.rfile.readline()

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """Keep the log for errors: one line per request would flood it under load."""


class HttpServer(ThreadingHTTPServer):
    """A threaded HTTP server with a listen backlog sized for load tests."""

    daemon_threads = True
    request_queue_size = BACKLOG

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Log a traceback, except for clients that reset or hung up (routine
        when a chaos proxy sits in front)."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class HttpsServer(HttpServer):
    """:class:`HttpServer` over TLS; each connection's handshake runs in its own thread."""

    def __init__(self, address: Any, handler: Any, context: ssl.SSLContext) -> None:
        super().__init__(address, handler)
        self.context = context

    def finish_request(self, request: Any, client_address: Any) -> None:
        request.settimeout(30)
        try:
            request = self.context.wrap_socket(request, server_side=True)
        except (OSError, ssl.SSLError):
            return  # a failed handshake (an untrusting client): nothing to serve
        super().finish_request(request, client_address)


def serve_http(port: int, port_file: Path | None, tls: tuple[Path, Path] | None = None) -> None:
    """Serve ``HttpHandler`` forever, over TLS with ``tls`` (certificate and key files)."""
    if tls is None:
        server = HttpServer((HOST, port), HttpHandler)
    else:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(*tls)
        server = HttpsServer((HOST, port), HttpHandler, context)
    announce(server.server_address[1], port_file)
    server.serve_forever()


# --- smtp -------------------------------------------------------------------


class SpoolHandler:
    """aiosmtpd handler that keeps every accepted message as a file in a spool."""

    def __init__(self, spool: Path) -> None:
        self.spool = spool
        self.count = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.count += 1
        record = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": list(envelope.rcpt_tos),
            "data": base64.b64encode(envelope.original_content).decode("ascii"),
        }
        target = self.spool / f"{self.count:08d}.json"
        partial = target.with_suffix(".partial")
        partial.write_text(json.dumps(record))
        os.replace(partial, target)
        return "250 Message accepted for delivery"


def serve_smtp(port: int, port_file: Path | None, spool: Path) -> None:
    """Serve SMTP with aiosmtpd on an asyncio loop, forever."""
    import asyncio

    from aiosmtpd.smtp import SMTP

    async def main() -> None:
        loop = asyncio.get_running_loop()
        handler = SpoolHandler(spool)
        server = await loop.create_server(
            lambda: SMTP(handler, hostname="vaurien-test-smtp", loop=loop),
            HOST,
            port,
            backlog=BACKLOG,
        )
        announce(server.sockets[0].getsockname()[1], port_file)
        await server.serve_forever()

    spool.mkdir(parents=True, exist_ok=True)
    asyncio.run(main())


def main(argv: list[str] | None = None) -> int:
    """Run the backend named on the command line until it is killed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=("echo", "http", "smtp"))
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--port-file", type=Path, help="where to write the port")
    parser.add_argument("--spool", type=Path, help="smtp: where to keep messages")
    parser.add_argument(
        "--tls", type=Path, nargs=2, metavar=("CERT", "KEY"), help="http: serve HTTPS"
    )
    args = parser.parse_args(argv)
    if args.kind == "echo":
        serve_echo(args.port, args.port_file)
    elif args.kind == "http":
        serve_http(args.port, args.port_file, args.tls)
    else:
        if args.spool is None:
            parser.error("smtp needs --spool")
        serve_smtp(args.port, args.port_file, args.spool)
    return 0


if __name__ == "__main__":
    sys.exit(main())
