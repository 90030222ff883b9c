"""One side of a session, as protocols and behaviors see it.

An :class:`Endpoint` wraps the client's or the backend's socket. It offers the socket methods the
Vaurien docs' plugins use (``recv``, ``sendall``, ``close`` ...) and the few things the proxy needs
to run both directions at once on gevent's hub without a greenlet or a ``select`` per chunk:

* it has one io watcher, made once, and waits for readiness on it: what it waits for follows
  who waits (a relay callback, a pump greenlet, a plugin reading the other side), so they never
  trip over one socket object;
* ``sendall`` first tries one non-blocking send, and copies the data only when it must wait, so the
  proxy can read every chunk into one shared buffer;
* it offers the session's relay the same moves without ever waiting (:meth:`Endpoint.receive_now`,
  :meth:`Endpoint.splice_now`, :meth:`Endpoint.flush`), for events handled in a watcher's
  callback.
"""

from __future__ import annotations

import fcntl
import os
import select
import socket
import struct
from typing import TYPE_CHECKING, Any

from gevent import get_hub
from gevent.hub import Waiter
from gevent.lock import Semaphore

if TYPE_CHECKING:
    from vaurien.contract import BehaviorLike, SessionLike

_READ = 1
_WRITE = 2
_LINGER_RESET = struct.pack("ii", 1, 0)
_SPLICE_FLAGS = getattr(os, "SPLICE_F_MOVE", 0) | getattr(os, "SPLICE_F_NONBLOCK", 0)
#: A read that fills the buffer usually leaves more data behind: the next event may skip the
#: trip through the hub, at most this many times in a row so that other sessions get their turn.
_MAX_SKIPPED_WAITS = 8


class PipePool:
    """Pipes for moving bytes from socket to socket with ``os.splice``, never copying them into
    Python. A pipe is taken for one transfer and given back empty; one proxy keeps a few."""

    available = hasattr(os, "splice")

    def __init__(self, size: int = 1048576, keep: int = 16) -> None:
        self.size = size
        self._keep = keep
        self._idle: list[tuple[int, int]] = []

    def take(self) -> tuple[int, int]:
        """An empty pipe ``(read_fd, write_fd)``, non-blocking on both ends."""
        if self._idle:
            return self._idle.pop()
        read_fd, write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            fcntl.fcntl(write_fd, fcntl.F_SETPIPE_SZ, self.size)
        except OSError:  # above /proc/sys/fs/pipe-max-size: keep the default size
            pass
        return read_fd, write_fd

    def give(self, pipe: tuple[int, int], empty: bool = True) -> None:
        """Return a pipe; one that may still hold bytes is closed instead of reused."""
        if empty and len(self._idle) < self._keep:
            self._idle.append(pipe)
        else:
            os.close(pipe[0])
            os.close(pipe[1])

    def close(self) -> None:
        """Close the idle pipes."""
        while self._idle:
            self.give(self._idle.pop(), empty=False)


class _Empty(bytes):
    """``b''`` that also equals ``''``.

    Plugins written for Vaurien 1.x (Python 2) end their read loops with ``if data == ''``;
    returning this value at end of stream keeps those loops finite.
    """

    def __eq__(self, other: object) -> bool:
        if isinstance(other, str):
            return other == ""
        return bytes.__eq__(self, other)

    def __ne__(self, other: object) -> bool:
        return not self.__eq__(other)

    __hash__ = bytes.__hash__


#: What reads return at end of stream.
EOF = _Empty()


class Endpoint:
    """The client's or the backend's connection within one session.

    ``role`` is ``"client"`` or ``"backend"``; ``session`` is the :class:`~vaurien.session.Session`.
    Attributes that plugins may read: ``eof`` (the peer closed its side), ``bytes_received``,
    ``last_read`` (the size of the last read),
    ``behavior`` (the behavior picked for the event being handled on this side), ``states``
    (behavior state for this connection and direction, see ``BaseBehavior.state``).
    """

    __slots__ = (
        "role",
        "session",
        "sock",
        "eof",
        "bytes_received",
        "behavior",
        "states",
        "_closed",
        "_raw",
        "_fd",
        "_hub",
        "_watcher",
        "_armed",
        "_readers",
        "_writers",
        "_write_lock",
        "_backlog",
        "_spliced",
        "_pending",
        "_skip_wait",
        "last_read",
    )

    #: Whether :meth:`splice_to` can move this side's bytes (not those of a TLS side).
    can_splice = True

    def __init__(self, sock: Any, role: str, session: SessionLike, watcher: Any = None) -> None:
        self.role = role
        self.session = session
        self.sock = sock
        # A plain non-blocking socket (gevent's wrapper keeps one in ``_sock``): read and written
        # directly, waited for with the endpoint's own watcher.
        self._raw = getattr(sock, "_sock", sock)
        self._fd = sock.fileno()
        self._hub = get_hub()
        # One io watcher for the endpoint's life (``watcher``: one made for this socket already,
        # the backend connect's); what it watches follows who waits, see _arm.
        self._watcher = watcher if watcher is not None else self._hub.loop.io(self._fd, _READ)
        self._armed: tuple[int, Any] = (0, None)
        self._readers: list[Any] = []  # called when the socket is readable
        self._writers: list[Any] = []  # called when it is writable
        self._write_lock: Semaphore | None = None
        self._backlog: bytearray | None = None  # written, not yet taken by the socket
        # Bytes spliced into a pipe that the socket has not taken yet: (pipe, count, pool).
        self._spliced: tuple[tuple[int, int], int, PipePool] | None = None
        self._pending = b""
        self._skip_wait = 0
        self.last_read = 0
        self.eof = False
        self._closed = False
        self.bytes_received = 0
        self.behavior: BehaviorLike | None = None
        self.states: dict[Any, Any] = {}

    def __repr__(self) -> str:
        return f"<Endpoint {self.role} fd={self._fd}>"

    # -- readiness, used by the session's pumps ------------------------------------------------

    def wait_readable(self) -> None:
        """Return when data (or end of stream) is probably there to be read.

        After a read that filled its buffer the answer is "probably" without asking the hub
        (a few times in a row at most); a read that then finds nothing simply waits.
        """
        if self._skip_wait:
            self._skip_wait -= 1
            return
        if not (self._pending or self.eof):
            self._wait(_READ)

    def skip_next_wait(self) -> None:
        """Make the next :meth:`wait_readable` return at once (data is probably there)."""
        self._skip_wait = max(self._skip_wait, 1)

    def _after_read(self, count: int, size: int) -> None:
        self.last_read = count
        if count == size:
            if not self._skip_wait:
                self._skip_wait = _MAX_SKIPPED_WAITS
        else:
            self._skip_wait = 0

    def readable_now(self) -> bool:
        """Whether a read would return at once (another event may have read what woke us)."""
        if self._pending or self.eof or self._closed:
            return True
        try:
            return bool(select.select([self._fd], [], [], 0)[0])
        except (OSError, ValueError):
            return True

    # -- reading -------------------------------------------------------------------------------

    def recv_into(self, buffer: Any, nbytes: int = 0) -> int:
        """Read into ``buffer``, waiting for data; 0 means end of stream."""
        if self._pending:
            return self._take_pending_into(buffer, nbytes)
        if self.eof:
            return 0
        while True:
            try:
                count = self._raw.recv_into(buffer, nbytes)
            except (BlockingIOError, InterruptedError):
                self._wait(_READ)
                continue
            if count:
                self.bytes_received += count
                self._after_read(count, nbytes or len(buffer))
            else:
                self.eof = True
            return count

    def splice_to(self, dest: Endpoint, pipes: PipePool, size: int) -> int:
        """Move at most ``size`` bytes to ``dest`` through a pipe, in the kernel; 0 at EOF.

        Only for a side with nothing pushed back (see :meth:`has_pending`).
        """
        while True:
            count = self.splice_now(dest, pipes, size)
            if count is not None:
                break
            self._wait(_READ)
        if dest._spliced is not None:
            dest.drain()
        return count

    def splice_now(self, dest: Endpoint, pipes: PipePool, size: int) -> int | None:
        """:meth:`splice_to` without waiting: None when nothing is there to be read. What
        ``dest`` does not take at once stays in the pipe, its backlog (see :meth:`flush`)."""
        pipe = pipes.take()
        try:
            count = os.splice(self._fd, pipe[1], size, flags=_SPLICE_FLAGS)
        except (BlockingIOError, InterruptedError):
            pipes.give(pipe)
            return None
        except BaseException:
            pipes.give(pipe)
            raise
        if not count:
            pipes.give(pipe)
            self.eof = True
            return 0
        self.bytes_received += count
        self._after_read(count, size)
        try:
            left = count - _splice_quietly(pipe[0], dest._fd, count)
        except BaseException:
            pipes.give(pipe, empty=False)
            raise
        if left:
            dest._spliced = (pipe, left, pipes)
        else:
            pipes.give(pipe)
        return count

    def receive_now(self, buffer: Any) -> int | None:
        """:meth:`recv_into` without waiting: None when nothing is there to be read."""
        if self._pending:
            return self._take_pending_into(buffer, 0)
        if self.eof:
            return 0
        try:
            count = self._raw.recv_into(buffer)
        except (BlockingIOError, InterruptedError):
            return None
        if count:
            self.bytes_received += count
            self._after_read(count, len(buffer))
        else:
            self.eof = True
        return count

    @property
    def has_pending(self) -> bool:
        """Whether bytes were pushed back with :meth:`unread` and wait to be read again."""
        return bool(self._pending)

    @property
    def bytes_consumed(self) -> int:
        """The bytes read from this side and kept: received, less those pushed back."""
        return self.bytes_received - len(self._pending)

    def recv(self, size: int = 65536) -> bytes:
        """Read at most ``size`` bytes, waiting for data; :data:`EOF` at end of stream."""
        if self._pending:
            data, self._pending = self._pending[:size], self._pending[size:]
            return data
        if self.eof:
            return EOF
        while True:
            try:
                data = self._raw.recv(size)
            except (BlockingIOError, InterruptedError):
                self._wait(_READ)
                continue
            if data:
                self.bytes_received += len(data)
                return data
            self.eof = True
            return EOF

    def read(self, size: int = 65536) -> bytes:
        """Wait for data, then return everything already available, up to ``size`` bytes.

        This is the Vaurien ``_get_data`` contract: it returns :data:`EOF` at end of stream and
        keeps reading until the socket would block (EWOULDBLOCK/EAGAIN).
        """
        data = self.recv(size)
        if not data or len(data) >= size:
            return data
        chunks = [data]
        received = len(data)
        while received < size and not self.eof:
            try:
                more = self._raw.recv(size - received)
            except (BlockingIOError, InterruptedError):
                break
            if not more:
                self.eof = True
                break
            self.bytes_received += len(more)
            chunks.append(more)
            received += len(more)
        return b"".join(chunks)

    def unread(self, data: bytes) -> None:
        """Put ``data`` back in front of what the next read returns (for framing protocols)."""
        if data:
            self._pending = bytes(data) + self._pending

    def _take_pending_into(self, buffer: Any, nbytes: int) -> int:
        size = min(len(self._pending), nbytes or len(buffer))
        buffer[:size] = self._pending[:size]
        self._pending = self._pending[size:]
        return size

    # -- writing -------------------------------------------------------------------------------

    def send(self, data: Any) -> int:
        """Send what the socket takes now (waiting until it takes something); return the count."""
        while True:
            try:
                return self._raw.send(data)
            except (BlockingIOError, InterruptedError):
                self._wait(_WRITE)

    def write(self, data: Any) -> None:
        """Send ``data`` without ever waiting: what the socket does not take now is copied
        and kept, in order, for :meth:`drain` (or the next :meth:`sendall`) to send.

        Callers may pass a view of a buffer they reuse; :meth:`drain` must follow before
        anything else is read into that buffer's place in the flow (the peer may be slow).
        """
        backlog = self._backlog
        if backlog or self._spliced is not None:
            if backlog is None:
                backlog = self._backlog = bytearray()
            backlog += data
            return
        try:
            sent = self._raw.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        if sent < len(data):
            if backlog is None:
                backlog = self._backlog = bytearray()
            backlog += memoryview(data)[sent:]

    @property
    def backlogged(self) -> bool:
        """Whether bytes written (or spliced) wait for the socket to take them."""
        return bool(self._backlog) or self._spliced is not None

    def flush(self) -> bool:
        """Send what waits, as far as the socket takes it now, never waiting; true when
        nothing is left."""
        spliced = self._spliced
        if spliced is not None:
            pipe, left, pipes = spliced
            left -= _splice_quietly(pipe[0], self._fd, left)
            if left:
                self._spliced = (pipe, left, pipes)
                return False
            self._spliced = None
            pipes.give(pipe)
        backlog = self._backlog
        if backlog:
            try:
                sent = self._raw.send(backlog)
            except (BlockingIOError, InterruptedError):
                return False
            del backlog[:sent]
            return not backlog
        return True

    def drain(self) -> None:
        """Wait until everything written has been taken by the socket."""
        if not self.backlogged:
            return
        lock = self._write_lock
        if lock is None:
            lock = self._write_lock = Semaphore()
        with lock:
            while not self.flush():
                self._wait(_WRITE)

    def sendall(self, data: Any) -> None:
        """Send all of ``data``.

        The first attempt is one non-blocking send; only when the peer is slow is the rest copied
        and sent as the socket drains, so callers may pass a view of a buffer they reuse.
        """
        self.write(data)
        if self._backlog:
            self.drain()

    # -- closing -------------------------------------------------------------------------------

    def shutdown(self, how: int = socket.SHUT_WR) -> None:
        """Shut down one or both directions; a socket already gone is not an error."""
        try:
            self._raw.shutdown(how)
        except OSError:
            pass

    def close(self) -> None:
        """Close this side of the session; the whole session ends with it."""
        self._closed = True
        self.session.close()

    def reset(self) -> None:
        """Tear this side down with a TCP RST; the whole session ends with it."""
        self._closed = True
        self.session.reset()

    def really_close(self, reset: bool = False) -> None:
        """Close the socket itself (the session does this once both pumps are done)."""
        if reset:
            try:
                self._raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
            except OSError:
                pass
        self._readers.clear()
        self._writers.clear()
        self._watcher.close()
        self._armed = (0, None)
        if self._spliced is not None:
            pipe, _, pipes = self._spliced
            self._spliced = None
            pipes.give(pipe, empty=False)
        self._closed = True
        self.sock.close()

    @property
    def closed(self) -> bool:
        """True once this side was closed by a plugin or by the session."""
        return self._closed

    # -- plain socket methods plugins may use ------------------------------------------------

    def fileno(self) -> int:
        """The socket's file descriptor."""
        return self._fd

    def getpeername(self) -> Any:
        """The peer's address."""
        return self._raw.getpeername()

    def getsockname(self) -> Any:
        """This socket's own address."""
        return self._raw.getsockname()

    def setsockopt(self, *args: Any) -> None:
        """Set a socket option."""
        self._raw.setsockopt(*args)

    def getsockopt(self, *args: Any) -> Any:
        """Read a socket option."""
        return self._raw.getsockopt(*args)

    # -- the watcher ---------------------------------------------------------------------------

    def watch_readable(self, callback: Any) -> None:
        """Call ``callback()`` (in the hub, so it must not wait) each time the socket is
        readable, until :meth:`unwatch_readable`."""
        self._readers.append(callback)
        self._arm()

    def unwatch_readable(self, callback: Any) -> None:
        """Stop calling ``callback`` when the socket is readable."""
        if callback in self._readers:
            self._readers.remove(callback)
            self._arm()

    def watch_writable(self, callback: Any) -> None:
        """Call ``callback()`` (in the hub) each time the socket is writable, until
        :meth:`unwatch_writable`."""
        self._writers.append(callback)
        self._arm()

    def unwatch_writable(self, callback: Any) -> None:
        """Stop calling ``callback`` when the socket is writable."""
        if callback in self._writers:
            self._writers.remove(callback)
            self._arm()

    def _arm(self) -> None:
        """Start the watcher for what its callers wait for; one caller gets called directly."""
        readers, writers = self._readers, self._writers
        events = (_READ if readers else 0) | (_WRITE if writers else 0)
        callback = None
        if len(readers) + len(writers) == 1:
            callback = readers[0] if readers else writers[0]
        if (events, callback) == self._armed:
            return
        watcher = self._watcher
        watcher.stop()
        self._armed = (events, callback)
        if events:
            watcher.events = events
            if callback is not None:
                watcher.start(callback)
            else:
                watcher.start(self._dispatch, pass_events=True)

    def _dispatch(self, events: int) -> None:
        # Several callers: each gets the events it waits for (a copy: they change the lists).
        if events & _WRITE:
            for callback in tuple(self._writers):
                callback()
        if events & _READ:
            for callback in tuple(self._readers):
                callback()

    def _wait(self, events: int) -> None:
        """Wait in the current greenlet until the socket is readable (or writable)."""
        waiters = self._readers if events == _READ else self._writers
        waiter = Waiter(self._hub)
        callback = waiter.switch_args
        waiters.append(callback)
        self._arm()
        try:
            waiter.get()
        finally:
            waiters.remove(callback)
            self._arm()


def _splice_quietly(source_fd: int, dest_fd: int, size: int) -> int:
    """One non-blocking splice; 0 when the destination cannot take anything now."""
    try:
        return os.splice(source_fd, dest_fd, size, flags=_SPLICE_FLAGS)
    except (BlockingIOError, InterruptedError):
        return 0
