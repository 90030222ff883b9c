"""What one behavior of a chain hands on to the next: :class:`MemoryEndpoint`, an endpoint
whose bytes are held in memory (:mod:`vaurien.chain`)."""

from __future__ import annotations

import socket
from typing import Any

from vaurien.endpoint import EOF


class MemoryEndpoint:
    """What one behavior of a chain handed on to the next: the event's data, held in memory.

    A chain (:class:`vaurien.chain.Chain`) gives each member but the last one of these as its
    ``dest``: what the member writes is kept, and the next member gets it as its ``source``, so
    the bytes go member to member. It stands in for ``origin``, the endpoint the event's data
    came from: ``role``, ``session`` and ``states`` are origin's (behavior state per connection
    and direction carries over), ``eof`` is origin's, and the public attributes it does not
    have itself are looked up on origin. Reading returns what was written and :data:`EOF` once
    it is all read; a protocol that frames messages (``protocol.read``) returns the bytes as
    they are, since the member before already took one message.
    """

    can_splice = False  # no socket: the tcp protocol copies what a chain hands on

    __slots__ = ("origin", "role", "session", "states", "behavior", "last_read", "_data")

    def __init__(self, origin: Any) -> None:
        self.origin = origin
        self.role = origin.role
        self.session = origin.session
        self.states = origin.states
        self.behavior = origin.behavior
        self.last_read = 0  # never the size that makes tcp splice: there is no socket
        self._data = bytearray()

    def __repr__(self) -> str:
        return f"<MemoryEndpoint {self.role} {len(self._data)} bytes>"

    def __getattr__(self, name: str) -> Any:
        # Only public attributes: a protocol's own socket internals must not reach origin.
        if name.startswith("_") or name == "origin":
            raise AttributeError(name)
        return getattr(self.origin, name)

    @property
    def eof(self) -> bool:
        """Whether origin's peer ended its stream."""
        return self.origin.eof

    @property
    def closed(self) -> bool:
        """True once the session is ending."""
        return self.session.closed

    @property
    def holds(self) -> int:
        """How many bytes wait to be read."""
        return len(self._data)

    @property
    def has_pending(self) -> bool:
        """Whether bytes wait to be read."""
        return bool(self._data)

    # -- written by one member -------------------------------------------------------------

    def sendall(self, data: Any) -> None:
        """Keep ``data`` for the next member."""
        self._data += data

    write = sendall

    def send(self, data: Any) -> int:
        """Keep ``data``; all of it is taken."""
        self._data += data
        return len(data)

    def drain(self) -> None:
        """Nothing to wait for: the memory takes everything at once."""

    def shutdown(self, how: int = socket.SHUT_WR) -> None:
        """A half-close is the session's to pass on, after the event: nothing here."""

    def close(self) -> None:
        """End the session."""
        self.session.close()

    def reset(self) -> None:
        """End the session with a TCP RST."""
        self.session.reset()

    # -- read by the next one --------------------------------------------------------------

    def recv(self, size: int = 65536) -> bytes:
        """At most ``size`` of the bytes held; :data:`EOF` when none is left."""
        data = bytes(self._data[:size])
        del self._data[:size]
        return data or EOF

    read = recv

    def recv_into(self, buffer: Any, nbytes: int = 0) -> int:
        """Copy bytes held into ``buffer``; 0 when none is left."""
        size = min(len(self._data), nbytes or len(buffer))
        buffer[:size] = self._data[:size]
        del self._data[:size]
        return size

    def take(self) -> bytes:
        """Every byte held, which are then gone."""
        data = bytes(self._data)
        self._data.clear()
        return data

    def unread(self, data: bytes) -> None:
        """Put ``data`` back in front of what the next read returns."""
        if data:
            self._data[:0] = data
