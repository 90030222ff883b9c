"""tcp: a transparent full-duplex byte stream."""

from __future__ import annotations

import socket

from vaurien.options import at_least
from vaurien.protocols import Protocol
from vaurien.protocols.base import BaseProtocol

#: Reads at least this large are followed by spliced ones.
SPLICE_FROM = 16384


@Protocol.register
class TCP(BaseProtocol):
    """A transparent byte stream in both directions at once, the default protocol.

    Each event moves at most ``buffer`` bytes; on Linux they go from socket to socket through
    a pipe (``splice``) without being copied into the proxy, unless a side speaks TLS.
    ``reuse_socket`` lets several proxies listen on the same port (``SO_REUSEPORT``), the
    kernel spreading clients among them.
    (The ``keep_alive`` option of Vaurien 1.x is the global ``--tcp-keepalive`` now.)
    """

    name = "tcp"
    duplex = True
    options = {
        "buffer": ("Most bytes one event carries", int, 262144, at_least(1)),
        "reuse_socket": (
            "Listen with SO_REUSEPORT so several proxies share the port",
            bool,
            False,
        ),
    }
    event_unit = (
        "Whatever has arrived on one side, up to ``buffer`` bytes, forwarded to the other. The "
        "two directions are separate events, so a request and its answer are at least two events."
    )
    error_form = (
        "A plain stream has no error message, so a call is a chunk of the backend's answer: it "
        "is replaced by as many random bytes (with the ``inject`` option of ``error``, random "
        "bytes are inserted in its middle instead). What goes to the backend always passes."
    )

    def __init__(self):
        super().__init__()
        self._chunk = None

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        # A subclass that reads or handles events its own way gets them all in greenlets.
        if "relay" not in vars(cls) and any(
            name in vars(cls) for name in ("handle", "_handle", "read", "_get_data")
        ):
            cls.relay = None

    def _handle(self, source, dest, to_backend):
        if self._splices(source, dest):
            count = source.splice_to(dest, self.proxy.pipes, self.settings["buffer"])
        else:
            chunk = self._buffer()
            count = source.recv_into(chunk)
            if count:
                dest.sendall(chunk[:count])
        if count:
            self._between(source, dest, to_backend)
        return True

    def relay(self, source, dest, pick):
        """Move what ``source`` has to ``dest`` without ever waiting, for a session that runs
        the event in a watcher's callback, as :meth:`_handle` would for a behavior that does
        nothing.

        ``pick()`` picks the event's behavior: true when it changes nothing; false when a pump
        greenlet takes the event over (what was read is pushed back for it). Returns the count
        moved (0 at the end of the stream), or None when nothing was there or the event went
        to a pump. What ``dest`` does not take at once waits in its backlog.
        """
        if self._splices(source, dest):
            if not pick():
                return None
            return source.splice_now(dest, self.proxy.pipes, self.settings["buffer"])
        chunk = self._buffer()
        count = source.receive_now(chunk)
        if count is None:
            return None
        if not pick():
            source.unread(chunk[:count])
            return None
        if count:
            dest.write(chunk[:count])
        return count

    def relays_next(self, source, to_backend):
        """After a pump's event: back to the callbacks once an event's pick was quiet (a run
        of faults keeps its pump; the events between them are relayed)."""
        return id(source.behavior) in self.proxy.plan.quiet and not source.has_pending

    def _splices(self, source, dest):
        # Splicing pays off for bulk data; a small message is cheaper copied (two system calls
        # instead of two splices and a pipe), so the size of the last read decides.
        return (
            source.last_read >= SPLICE_FROM
            and self.proxy is not None
            and self.proxy.pipes is not None
            and not source.has_pending
            and source.can_splice
            and dest.can_splice
        )

    def _buffer(self):
        chunk = self._chunk
        if chunk is None:
            # One buffer per proxy serves every session: what a socket does not take at once
            # is copied (Endpoint.write), so the buffer is free again when an event returns.
            self._chunk = chunk = memoryview(bytearray(self.settings["buffer"]))
        return chunk

    def setup_listener(self, sock):
        if self.settings["reuse_socket"]:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
