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

    def _handle(self, source, dest, to_backend):
        pipes = self.proxy.pipes if self.proxy is not None else None
        # Splicing pays off for bulk data; a small message is cheaper copied (two system calls
        # instead of two splices and a pipe), so the size of the last read decides.
        if (
            pipes is not None
            and source.last_read >= SPLICE_FROM
            and not source.has_pending
            and source.can_splice
            and dest.can_splice
        ):
            count = source.splice_to(dest, pipes, self.settings["buffer"])
        else:
            chunk = self._chunk
            if chunk is None:
                # One buffer per proxy serves every session: Endpoint.sendall copies what it
                # cannot send at once, so the buffer is free again when this returns.
                self._chunk = chunk = memoryview(bytearray(self.settings["buffer"]))
            count = source.recv_into(chunk)
            if count:
                dest.sendall(chunk[:count])
        if count:
            self._between(source, dest, to_backend)
        return True

    def setup_listener(self, sock):
        if self.settings["reuse_socket"]:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
