"""The proxy's side of the network: addresses, listening and accepting, reaching the backend.

Nothing here knows about behaviors or protocols: :func:`listen` opens a listening socket,
:class:`AcceptServer` accepts clients on it (pausing while the process is out of descriptors),
and :class:`BackendConnector` opens connections to a backend without blocking the hub.
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import os
import socket
from collections.abc import Callable
from typing import Any

import gevent
import gevent.socket
from gevent.server import StreamServer

from vaurien.errors import ConfigError, VaurienError

log = logging.getLogger(__name__)

#: Seconds a lookup of the backend's name is reused for new connections.
RESOLVE_EVERY = 10.0
#: accept() and connect() errors that mean the process or the system ran out of resources.
EXHAUSTED = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
_CONNECTING = (errno.EINPROGRESS, errno.EAGAIN, errno.EWOULDBLOCK)
_WRITE = 2


@dataclasses.dataclass(frozen=True)
class Address:
    """A ``host:port`` pair; IPv6 hosts are written in brackets: ``[::1]:8000``."""

    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> Address:
        """Parse ``host:port``, ``1.2.3.4:port`` or ``[v6]:port``."""
        text = text.strip()
        if text.startswith("["):
            host, bracket, rest = text[1:].partition("]")
            if not bracket or not rest.startswith(":"):
                raise ConfigError(f"{text!r}: expected [IPV6]:PORT")
            port_text = rest[1:]
        else:
            host, colon, port_text = text.rpartition(":")
            if not colon:
                raise ConfigError(f"{text!r}: expected HOST:PORT")
            if ":" in host:
                raise ConfigError(f"{text!r}: write IPv6 addresses in brackets, as [::1]:8000")
        if not host:
            raise ConfigError(f"{text!r}: missing host before the port")
        if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
            raise ConfigError(f"{text!r}: port must be a number from 0 to 65535")
        return cls(host, int(port_text))

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


class PeerName:
    """A peer's address, formatted as ``host:port`` only when a log line is written."""

    __slots__ = ("address",)

    def __init__(self, address: Any) -> None:
        self.address = address

    def __str__(self) -> str:
        address = self.address
        if isinstance(address, tuple) and len(address) >= 2:
            return str(Address(str(address[0]), int(address[1])))
        return str(address)


def listen(
    address: Address,
    backlog: int,
    prepare: Callable[[gevent.socket.socket], None] | None = None,
    what: str = "",
) -> gevent.socket.socket:
    """A listening socket on ``address``; ``prepare`` adjusts it before it is bound.

    Failures are :class:`VaurienError` naming the address (and ``what`` listens, if given).
    """
    where = f"{what}: cannot listen on {address}" if what else f"cannot listen on {address}"
    try:
        family, type_, proto, _, sockaddr = socket.getaddrinfo(
            address.host, address.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as e:
        raise VaurienError(f"{where}: {e.strerror}") from None
    sock = gevent.socket.socket(family, type_, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if prepare is not None:
            prepare(sock)
        sock.bind(sockaddr)
        sock.listen(backlog)
    except OSError as e:
        sock.close()
        raise VaurienError(f"{where}: {e.strerror}") from None
    return sock


class AcceptServer(StreamServer):
    """gevent's StreamServer without its per-client costs, pausing (and logging) rather than
    failing when accept() runs out of file descriptors or memory.

    Its watcher on the listening socket, its bursts of accepts and its back-off are gevent's;
    what it does with each client is not: the accepted descriptor becomes a plain non-blocking
    socket (not gevent's socket class), and ``handle(sock, address)`` is called right there, in
    the hub, rather than in a greenlet of its own. So ``handle`` must not wait (it starts what
    needs waiting), and it owns the socket: nothing closes it when it returns.

    gevent backs off on accept errors too, but reports each one with a traceback on stderr.
    Here the pause doubles from 10 ms up to 1 s while the error lasts; one warning starts the
    episode and one line ends it. ``name`` is the proxy's, for those lines.
    """

    def __init__(self, listener: Any, handle: Callable[[Any, Any], None], name: str) -> None:
        super().__init__(listener, handle)
        self.name = name
        self._pause = self.min_delay
        self._paused_since: float | None = None
        self._resume_timer: Any = None
        raw = getattr(listener, "_sock", listener)
        self._accept = raw._accept
        self._kind = (listener.family, listener.type, listener.proto)

    def do_read(self) -> Any:
        try:
            fd, address = self._accept()
        except (BlockingIOError, InterruptedError):
            return None
        except OSError as e:
            if e.errno not in EXHAUSTED:
                raise
            self._back_off(e)
            return None
        sock = socket.socket(*self._kind, fileno=fd)
        sock.setblocking(False)
        if self._paused_since is not None:
            log.warning(
                "%s: accepting clients again after %.1fs",
                self.name,
                self.loop.now() - self._paused_since,
            )
            self._paused_since = None
            self._pause = self.min_delay
        return sock, address

    def do_handle(self, *args: Any) -> None:
        self._handle(*args)

    def _back_off(self, error: OSError) -> None:
        if self._paused_since is None:
            self._paused_since = self.loop.now()
            log.warning(
                "%s: cannot accept clients: %s; retrying, waiting up to %gs between tries",
                self.name,
                error.strerror or error,
                self.max_delay,
            )
        self.stop_accepting()
        self._resume_timer = self.loop.timer(self._pause)
        self._resume_timer.start(self._resume)
        self._pause = min(self.max_delay, self._pause * 2)

    def _resume(self) -> None:
        self._resume_timer.close()
        self._resume_timer = None
        if not self.closed:
            self.start_accepting()

    def close(self) -> None:
        if self._resume_timer is not None:
            self._resume_timer.close()
            self._resume_timer = None
        super().close()


class BackendConnector:
    """Opens connections to a backend, each within ``timeout`` seconds.

    The backend's addresses are looked up at most every :data:`RESOLVE_EVERY` seconds (a
    lookup per client would cost a trip through gevent's thread pool each time), and each
    connection is a plain non-blocking socket with ``TCP_NODELAY``, waited for with one write
    watcher, which the session's backend endpoint keeps: gevent's socket wrapper would only
    add work to every connection. :meth:`connect` waits in the calling greenlet;
    :meth:`connect_later` reports to a callback instead. Make it in the thread that serves.
    """

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._hub = gevent.get_hub()
        self._resolved: tuple[Address, float, list[tuple[Any, ...]]] | None = None

    def connect(self, backend: Address) -> socket.socket:
        """A connected socket to ``backend``, trying each of its addresses in turn.

        Raises the :class:`OSError` of the last address tried (``TimeoutError`` when it did
        not answer in time).
        """
        error: OSError = OSError("no address")
        for family, type_, proto, _, sockaddr in self._resolve(backend):
            sock = socket.socket(family, type_, proto)
            sock.setblocking(False)
            try:
                status = sock.connect_ex(sockaddr)
                if status in _CONNECTING:
                    watcher = self._hub.loop.io(sock.fileno(), _WRITE)
                    try:
                        with gevent.Timeout(self.timeout, TimeoutError("timed out")):
                            self._hub.wait(watcher)
                    finally:
                        watcher.close()
                    status = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if status:
                    raise OSError(status, os.strerror(status))
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError as e:
                sock.close()
                error = e
                continue
            except BaseException:  # the proxy is stopping (GreenletExit)
                sock.close()
                raise
            return sock
        raise error

    def connect_later(
        self, backend: Address, done: Callable[..., None], *args: Any
    ) -> PendingConnect | None:
        """Start connecting to ``backend`` without waiting, when its addresses are known
        (looked up less than :data:`RESOLVE_EVERY` seconds ago); else None (use
        :meth:`connect` in a greenlet). Call the result's ``start``: then, in the hub,
        ``done(*args, pending, sock, watcher, error)`` reports (``pending`` being the result)
        a connected socket and the io watcher made for it, or the :class:`OSError` of the
        last address tried."""
        addresses = self._cached(backend)
        if addresses is None:
            return None
        return PendingConnect(self._hub.loop, addresses, self.timeout, done, args)

    def _cached(self, backend: Address) -> list[tuple[Any, ...]] | None:
        cached = self._resolved
        if (
            cached is not None
            and cached[0] == backend
            and self._hub.loop.now() - cached[1] < RESOLVE_EVERY
        ):
            return cached[2]
        return None

    def _resolve(self, backend: Address) -> list[tuple[Any, ...]]:
        cached = self._cached(backend)
        if cached is not None:
            return cached
        try:
            addresses = gevent.socket.getaddrinfo(
                backend.host, backend.port, type=socket.SOCK_STREAM
            )
        except socket.gaierror as e:
            raise OSError(e.errno, e.strerror) from None
        self._resolved = (backend, self._hub.loop.now(), addresses)
        return addresses


class PendingConnect:
    """A backend connect under way, made by :meth:`BackendConnector.connect_later`: its
    addresses tried in turn, each within the timeout, the end reported to a callback."""

    __slots__ = ("_loop", "_addresses", "_timeout", "_done", "_args", "_sock", "_watcher", "_timer")

    def __init__(
        self,
        loop: Any,
        addresses: list[tuple[Any, ...]],
        timeout: float,
        done: Callable[..., None],
        args: tuple[Any, ...],
    ) -> None:
        self._loop = loop
        self._addresses = iter(addresses)
        self._timeout = timeout
        self._done = done
        self._args = args
        self._sock: socket.socket | None = None
        self._watcher: Any = None
        self._timer: Any = None

    def start(self) -> None:
        """Try the first address (a connect that ends at once reports at once)."""
        self._next(OSError("no address"))

    def cancel(self) -> None:
        """Give up without reporting: the socket is closed."""
        self._clear()
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _next(self, error: OSError) -> None:
        for family, type_, proto, _, sockaddr in self._addresses:
            sock = self._sock = socket.socket(family, type_, proto)
            sock.setblocking(False)
            status = sock.connect_ex(sockaddr)
            if status in _CONNECTING:
                self._watcher = self._loop.io(sock.fileno(), _WRITE)
                self._watcher.start(self._writable)
                self._timer = self._loop.timer(self._timeout)
                self._timer.start(self._timed_out)
                return
            if not status:
                self._connected()
                return
            sock.close()
            self._sock = None
            error = OSError(status, os.strerror(status))
        self._report(None, None, error)

    def _writable(self) -> None:
        sock = self._sock
        status = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if status:
            self._failed(OSError(status, os.strerror(status)))
        else:
            self._connected()

    def _timed_out(self) -> None:
        self._failed(TimeoutError("timed out"))

    def _failed(self, error: OSError) -> None:
        self._clear(close_watcher=True)
        self._sock.close()
        self._sock = None
        self._next(error)

    def _connected(self) -> None:
        sock = self._sock
        self._sock = None
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError as e:
            self._clear(close_watcher=True)
            sock.close()
            self._next(e)
            return
        watcher = self._clear(close_watcher=False)
        if watcher is None:
            watcher = self._loop.io(sock.fileno(), _WRITE)
        self._report(sock, watcher, None)

    def _clear(self, close_watcher: bool = True) -> Any:
        """Stop the watcher and the timer; return the watcher unless it was closed."""
        watcher, self._watcher = self._watcher, None
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.close()
        if watcher is not None:
            watcher.stop()
            if close_watcher:
                watcher.close()
                return None
        return watcher

    def _report(self, sock: Any, watcher: Any, error: OSError | None) -> None:
        done, args = self._done, self._args
        self._done = self._args = None  # reported once; no cycle through the callback
        done(*args, self, sock, watcher, error)


def describe_failure(error: OSError) -> str:
    """What went wrong with a connection, for a log line: out of resources, or the system's
    own words."""
    reason = error.strerror or str(error) or type(error).__name__
    return f"out of resources ({reason})" if error.errno in EXHAUSTED else reason


def open_fds() -> int | None:
    """How many file descriptors this process has open; ``None`` where the system cannot tell."""
    for directory in ("/proc/self/fd", "/dev/fd"):
        try:
            # The directory's own descriptor, open while it is listed, is not counted.
            return len(os.listdir(directory)) - 1
        except OSError:
            continue
    return None
