"""Test helpers: a proxy running in its own thread, a threaded echo backend, polling."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import gevent

from vaurien.proxy import Proxy
from vaurien.proxy_config import ProxyConfig, ServerConfig
from vaurien.server import Server

DEADLINE = 30.0


def wait_until(
    predicate: Callable[[], Any],
    timeout: float = DEADLINE,
    interval: float = 0.01,
    *,
    what: str | None = None,
    give_up: Callable[[], str | None] | None = None,
    context: Callable[[], str] | None = None,
) -> Any:
    """Poll ``predicate`` until it returns something true, and return that: the one deadline
    helper of the suite.

    Between tries the caller sleeps with ``gevent.sleep``, so the greenlets of its thread (the
    load generators and backends of the reliability tests) keep running. Fails with an
    :class:`AssertionError` after ``timeout`` seconds, or as soon as ``give_up()`` returns a
    reason (a server process that exited); the message says what was awaited (``what``, else the
    predicate) and ends with what ``context()`` returns (a log), if given.
    """
    deadline = time.monotonic() + timeout
    awaited = what or f"the condition {predicate}"
    while not (result := predicate()):
        reason = give_up() if give_up is not None else None
        if reason is not None:
            problem = f"{reason} before {awaited}"
        elif time.monotonic() > deadline:
            problem = f"{awaited}: not met within {timeout:g}s"
        else:
            gevent.sleep(interval)
            continue
        raise AssertionError(problem + (f"\n{context()}" if context is not None else ""))
    return result


class HubThread:
    """Something serving from its own thread and gevent hub: :meth:`serve` sets it up in that
    thread (its errors reach the test thread, raised by :meth:`start`), then serves until
    :meth:`stop`. Tests talk to it with ordinary blocking sockets and client libraries;
    :meth:`call` runs a function in its hub and returns the result."""

    def __init__(self) -> None:
        self._hub: Any = None
        self._done: Any = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Any:
        self._thread.start()
        if not self._ready.wait(DEADLINE):
            raise AssertionError(f"{type(self).__name__} did not start")
        if self._error is not None:
            raise self._error
        return self

    def serve(self) -> None:
        """Set up, in the hub's thread."""
        raise NotImplementedError

    def finish(self) -> None:
        """Stop what :meth:`serve` started, in the hub's thread."""
        raise NotImplementedError

    def _run(self) -> None:
        import gevent.event

        try:
            self._hub = gevent.get_hub()
            self._done = gevent.event.Event()
            self.serve()
        except BaseException as e:  # reported to the test thread
            self._error = e
            self._ready.set()
            return
        self._ready.set()
        while not self._done.wait(3600):  # the timer keeps the hub alive with nothing listening
            pass
        self.finish()

    def call(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run ``function`` in the hub and return its result (or raise its error)."""
        done = threading.Event()
        outcome: dict[str, Any] = {}

        def run() -> None:
            try:
                outcome["value"] = function(*args, **kwargs)
            except BaseException as e:
                outcome["error"] = e
            done.set()

        self._hub.loop.run_callback_threadsafe(lambda: gevent.spawn(run))
        if not done.wait(DEADLINE):
            raise AssertionError(f"{function} did not finish in the hub")
        if "error" in outcome:
            raise outcome["error"]
        return outcome.get("value")

    def stop(self) -> None:
        if self._hub is not None and self._done is not None:
            self._hub.loop.run_callback_threadsafe(self._done.set)
            self._thread.join(DEADLINE)

    def __enter__(self) -> Any:
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()


class ProxyThread(HubThread):
    """A :class:`Proxy` serving from its own thread and gevent hub (see :class:`HubThread`)."""

    def __init__(self, config: ProxyConfig | None = None, **settings: Any) -> None:
        super().__init__()
        settings.setdefault("proxy", "127.0.0.1:0")
        self.settings = settings
        self.config = config
        self.proxy: Proxy | None = None

    def serve(self) -> None:
        self.proxy = Proxy(self.config or ProxyConfig(**self.settings))
        self.proxy.start()

    def finish(self) -> None:
        self.proxy.stop()

    @property
    def address(self) -> tuple[str, int]:
        return self.proxy.address

    def connect(self, timeout: float = 10.0) -> socket.socket:
        return socket.create_connection(self.address, timeout=timeout)


class ServerThread(HubThread):
    """A :class:`Server` (every proxy of a process) serving from its own thread and gevent hub
    (see :class:`HubThread`), with the services ``services(server)`` starts there (the control
    APIs, on free ports)."""

    def __init__(self, config: ServerConfig, services: Callable[[Server], list[Any]] | None = None):
        super().__init__()
        self.config = config
        self.make_services = services
        self.server: Server | None = None
        self.services: list[Any] = []

    def serve(self) -> None:
        self.server = Server(self.config)
        self.server.start()
        if self.make_services is not None:
            self.services = self.make_services(self.server)

    def finish(self) -> None:
        for service in reversed(self.services):
            service.stop()
        self.server.stop()

    def proxy(self, name: str) -> Proxy:
        return self.server.proxies[name]

    def address(self, name: str) -> tuple[str, int]:
        return self.call(lambda: self.server.proxies[name].address)

    def connect(self, name: str, timeout: float = 10.0) -> socket.socket:
        return socket.create_connection(self.address(name), timeout=timeout)


class EchoServer:
    """A threaded TCP echo server on a free port; it half-closes when its client does."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.host, self.port = self.listener.getsockname()
        self.address = f"{self.host}:{self.port}"
        self.connections = 0
        self.received = 0
        self._stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stop:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._echo, args=(conn,), daemon=True).start()

    def _echo(self, conn: socket.socket) -> None:
        with conn:
            try:
                while data := conn.recv(262144):
                    self.received += len(data)
                    conn.sendall(data)
                conn.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    def close(self) -> None:
        self._stop = True
        self.listener.close()


def free_port() -> int:
    """A port that nothing listens on (bound then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def recv_exactly(sock: socket.socket, size: int) -> bytes:
    """Read exactly ``size`` bytes (fewer only if the peer closes)."""
    chunks = []
    while size:
        chunk = sock.recv(min(size, 1 << 20))
        if not chunk:
            break
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


class Recording:
    """What one connection to a :class:`RecordingServer` received, and when."""

    def __init__(self) -> None:
        self.chunks: list[tuple[float, bytes]] = []  # (time.monotonic(), data)
        self.eof_at: float | None = None  # when the peer's end of stream arrived
        self.error: OSError | None = None  # a reset, for one

    @property
    def data(self) -> bytes:
        return b"".join(chunk for _, chunk in self.chunks)

    @property
    def ended(self) -> bool:
        return self.eof_at is not None or self.error is not None


class RecordingServer:
    """A threaded TCP server on a free port that records each connection's bytes with their
    arrival times; with ``echo`` it also sends them back, and half-closes when its client does.
    """

    def __init__(self, echo: bool = True) -> None:
        self.echo = echo
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address = self.listener.getsockname()
        self.connections: list[Recording] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            recording = Recording()
            self.connections.append(recording)
            threading.Thread(target=self._serve, args=(conn, recording), daemon=True).start()

    def _serve(self, conn: socket.socket, recording: Recording) -> None:
        with conn:
            try:
                while data := conn.recv(262144):
                    recording.chunks.append((time.monotonic(), data))
                    if self.echo:
                        conn.sendall(data)
                recording.eof_at = time.monotonic()
                conn.shutdown(socket.SHUT_WR)
            except OSError as e:
                recording.error = e

    def close(self) -> None:
        self.listener.close()
