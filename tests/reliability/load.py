"""Backends and clients on gevent, in the test process, to put load on a proxy process.

They run in the test's main thread: many connections at once without a thread each. Every
function here is bounded in time by the caller's ``gevent.Timeout``.
"""

from __future__ import annotations

import contextlib
import hashlib
import random
import socket
import struct
import time
from collections.abc import Callable, Iterator
from typing import Any

import gevent
from gevent.server import StreamServer

#: The integrity exchange starts with the sizes of both payloads and the seed of the backend's.
HEADER = struct.Struct("!QQQ")
LINGER_RESET = struct.pack("ii", 1, 0)


class Backend:
    """A gevent TCP server (on 127.0.0.1 and a free port by default) running ``handler(sock)``
    for each client."""

    def __init__(
        self, handler: Callable[[Any], None], address: tuple[str, int] = ("127.0.0.1", 0)
    ) -> None:
        self.handler = handler
        self.connections = 0
        self.active = 0
        self.errors: list[BaseException] = []
        self.server = StreamServer(address, self._handle, spawn="default")
        self.server.init_socket()
        self.server.socket.listen(4096)
        self.server.start()
        self.address = self.server.address[:2]

    def _handle(self, sock: Any, _address: Any) -> None:
        self.connections += 1
        self.active += 1
        try:
            self.handler(sock)
        except OSError:
            pass  # the peer went away: what churn tests do on purpose
        except Exception as e:  # reported by the tests
            self.errors.append(e)
        finally:
            self.active -= 1

    def stop(self) -> None:
        self.server.stop(timeout=0)


def recv_exactly(sock: Any, size: int, digest: Any = None) -> int:
    """Read ``size`` bytes (fewer only at end of stream), feeding ``digest``; return the count."""
    buffer = bytearray(min(size, 1 << 20) or 1)
    view = memoryview(buffer)
    got = 0
    while got < size:
        count = sock.recv_into(view, min(size - got, len(buffer)))
        if not count:
            break
        if digest is not None:
            digest.update(view[:count])
        got += count
    return got


def read_until_eof(sock: Any, limit: int = 1 << 30) -> bytes:
    """Everything until end of stream (at most ``limit`` bytes)."""
    chunks = []
    total = 0
    while total < limit:
        chunk = sock.recv(1 << 18)
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
    return b"".join(chunks)


def ends_within(sock, seconds: float) -> tuple[str, float]:
    """Read until the proxy ends the connection; return how (``eof``/``reset``) and when."""
    started = time.monotonic()
    with gevent.Timeout(seconds, AssertionError(f"connection still open after {seconds}s")):
        try:
            read_until_eof(sock)
            how = "eof"
        except ConnectionResetError:
            how = "reset"
    return how, time.monotonic() - started


@contextlib.contextmanager
def blackhole() -> Iterator[tuple[str, int]]:
    """An address where connecting hangs: the listener's accept queue is full, so the kernel
    drops further SYNs."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        with socket.create_connection(listener.getsockname(), timeout=5):
            yield listener.getsockname()


def payload(seed: int, size: int) -> bytes:
    """``size`` pseudo-random bytes determined by ``seed``."""
    return random.Random(seed).randbytes(size)


# -- integrity: random payloads both ways at once, checked by SHA-256 ---------------------------


def integrity_backend(sock: Any) -> None:
    """Read the header; send the payload it asks for while reading the client's; then answer
    with the SHA-256 of what was received."""
    header = bytearray()
    while len(header) < HEADER.size:
        chunk = sock.recv(HEADER.size - len(header))
        if not chunk:
            return
        header += chunk
    up_size, down_size, seed = HEADER.unpack(header)
    sender = gevent.spawn(sock.sendall, payload(seed, down_size))
    digest = hashlib.sha256()
    received = recv_exactly(sock, up_size, digest)
    sender.get()
    if received == up_size:
        sock.sendall(digest.digest())
    sock.shutdown(socket.SHUT_WR)
    read_until_eof(sock, 1)


def integrity_client(address: tuple[str, int], up_size: int, down_size: int, seed: int) -> str:
    """One exchange through the proxy; returns ``"ok"`` or what went wrong."""
    up = payload(seed + 1, up_size)
    expected_up = hashlib.sha256(up).digest()
    expected_down = hashlib.sha256(payload(seed, down_size)).digest()
    with socket_connect(address) as sock:
        sender = gevent.spawn(sock.sendall, HEADER.pack(up_size, down_size, seed) + up)
        digest = hashlib.sha256()
        got = recv_exactly(sock, down_size, digest)
        backend_saw = bytearray()
        while len(backend_saw) < 32:
            chunk = sock.recv(32 - len(backend_saw))
            if not chunk:
                break
            backend_saw += chunk
        sender.get()
    if got != down_size:
        return f"received {got} of {down_size} bytes"
    if digest.digest() != expected_down:
        return f"download of {down_size} bytes corrupted"
    if bytes(backend_saw) != expected_up:
        return f"upload of {up_size} bytes corrupted or cut ({len(backend_saw)}-byte answer)"
    return "ok"


def socket_connect(address: tuple[str, int], timeout: float | None = None) -> Any:
    """A gevent socket connected to ``address`` (with TCP_NODELAY, as the proxy's own)."""
    sock = gevent.socket.create_connection(address, timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def echo(sock: Any) -> None:
    """Echo until end of stream, then half-close."""
    while data := sock.recv(1 << 18):
        sock.sendall(data)
    sock.shutdown(socket.SHUT_WR)


# -- churn: connections that end every way a connection can end ---------------------------------

#: The first byte a churn client sends tells the backend what to do.
ECHO, CLOSE_FIRST = b"E", b"C"
ANSWER_SIZE = 4096


def churn_backend(sock: Any) -> None:
    """``E``: echo until end of stream, then half-close. ``C``: read ANSWER_SIZE bytes, answer
    as many, and close first."""
    mode = sock.recv(1)
    if mode == ECHO:
        echo(sock)
    elif mode == CLOSE_FIRST:
        if recv_exactly(sock, ANSWER_SIZE) == ANSWER_SIZE:
            sock.sendall(payload(ANSWER_SIZE, ANSWER_SIZE))


def send_quietly(sock: Any, data: bytes) -> None:
    """``sendall`` for a sender that may be cut off on purpose: a failure is no error."""
    try:
        sock.sendall(data)
    except OSError:
        pass


def reset(sock: Any) -> None:
    """Close with a TCP RST (SO_LINGER 0)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RESET)
    sock.close()


def churn_reset(address: tuple[str, int], rng: random.Random) -> str:
    """Reset by the client: right after connecting, after sending, or in the middle of reading
    the echo."""
    sock = socket_connect(address)
    when = rng.randrange(3)
    if when:
        data = ECHO + payload(rng.getrandbits(32), rng.randint(1, 256 * 1024))
        sender = gevent.spawn(send_quietly, sock, data)
        if when == 2:
            recv_exactly(sock, rng.randint(1, len(data) - 1))
        sender.kill()
    reset(sock)
    return "ok"


def churn_half_close(address: tuple[str, int], rng: random.Random) -> str:
    """Send, half-close at once, then read the whole echo until the end of stream."""
    data = payload(rng.getrandbits(32), rng.randint(1, 64 * 1024))
    with socket_connect(address) as sock:
        sender = gevent.spawn(sock.sendall, ECHO + data)
        sender.get()
        sock.shutdown(socket.SHUT_WR)
        echoed = read_until_eof(sock)
    return "ok" if echoed == data else f"echo of {len(data)} bytes came back as {len(echoed)}"


def churn_backend_closes(address: tuple[str, int], rng: random.Random) -> str:
    """The backend answers and closes first; the client sees the answer, then the end."""
    with socket_connect(address) as sock:
        sock.sendall(CLOSE_FIRST + payload(rng.getrandbits(32), ANSWER_SIZE))
        answer = read_until_eof(sock)
    expected = payload(ANSWER_SIZE, ANSWER_SIZE)
    return "ok" if answer == expected else f"answer came back as {len(answer)} bytes"


CHURN_CLIENTS = (churn_reset, churn_half_close, churn_backend_closes)
