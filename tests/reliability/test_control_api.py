"""The control API against a client that sends a huge body slowly: the 413 comes at once (or as
soon as a chunked body passes the limit), the server closes the connection without reading on,
and its memory and CPU time stay flat."""

from __future__ import annotations

import socket
import time

import pytest
from harness import VaurienProcess

from support import free_port, wait_until
from vaurien.http_service import MAX_BODY

PIECE = 4096  # bytes sent per step
STEP = 0.05  # seconds between two pieces
STEPS = 200  # at most 10 s of sending, 800 KiB: far from the 100 MB declared

HEADS = {
    "content-length": b"Content-Length: 100000000\r\n",
    "chunked": b"Transfer-Encoding: chunked\r\n",
}


def control_api() -> tuple[VaurienProcess, tuple[str, int]]:
    port = free_port()
    proxy = VaurienProcess(
        "--backend", "127.0.0.1:1", "--http", "--http-host", "127.0.0.1", "--http-port", str(port)
    )
    wait_until(lambda: "control API on" in proxy.log(), context=proxy.log)
    return proxy, ("127.0.0.1", port)


def get_stats(address: tuple[str, int]) -> bytes:
    with socket.create_connection(address, timeout=10) as sock:
        sock.sendall(b"GET /stats HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


def slow_upload(address: tuple[str, int], framing: str) -> dict[str, object]:
    """PUT a body of 100 MB (declared or chunked) one piece every STEP seconds, reading what
    comes back, until the server closes the connection or STEPS pieces are sent."""
    sock = socket.create_connection(address, timeout=10)
    sock.sendall(b"PUT /behavior HTTP/1.1\r\nHost: x\r\n" + HEADS[framing] + b"\r\n")
    sock.settimeout(STEP)  # each read waits one step: the pace of the upload
    piece = b" " * PIECE
    if framing == "chunked":
        piece = b"%x\r\n%s\r\n" % (PIECE, piece)
    start = time.monotonic()
    answer, answered_at, answered_after, closed_at, sent = b"", None, None, None, 0
    try:
        for _ in range(STEPS):
            try:
                sock.sendall(piece)
                sent += PIECE
                data = sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:  # reset: the server closed with our data unread
                data = b""
            if not data:
                closed_at = time.monotonic() - start
                break
            if answered_at is None:
                answered_at, answered_after = time.monotonic() - start, sent
            answer += data
    finally:
        sock.close()
    return {
        "answer": answer,
        "answered_at": answered_at,
        "answered_after": answered_after,
        "closed_at": closed_at,
    }


@pytest.mark.parametrize("framing", list(HEADS))
def test_a_huge_slow_body_gets_413_and_the_connection_closed_without_reading(framing):
    proxy, address = control_api()
    try:
        assert get_stats(address).startswith(b"HTTP/1.1 200 ")  # everything lazy is loaded
        rss, cpu = proxy.rss(), proxy.cpu_seconds()
        outcome = slow_upload(address, framing)
        answer = outcome["answer"]
        assert answer.startswith(b"HTTP/1.1 413 "), outcome
        assert b"Connection: close" in answer and b"over 65536 bytes" in answer
        # The answer comes at once; a chunked body is read up to the limit first.
        limit = PIECE if framing == "content-length" else MAX_BODY + 4 * PIECE
        assert outcome["answered_after"] <= limit, outcome
        assert outcome["closed_at"] is not None, "the server kept reading the body"
        assert outcome["closed_at"] - outcome["answered_at"] < 2.0, outcome
        # Memory and time stay flat (wide margins: the machine is shared).
        assert proxy.rss() - rss < 16 * 1024 * 1024
        assert proxy.cpu_seconds() - cpu < 2.0
        assert get_stats(address).startswith(b"HTTP/1.1 200 ")  # and it keeps serving
        assert "Traceback" not in proxy.log()
    finally:
        proxy.terminate()
        proxy.cleanup()
