"""The framers' vocabulary: what a framer says about the bytes it is fed.

A framer is sans-IO: bytes in, message boundaries out, never a socket. Each session has two,
one for what the client sends (requests) and one for what the backend sends (answers).
``feed(data, pos, end)`` looks at ``data[pos:end]`` (a ``bytes`` or ``bytearray``) and returns
``(newpos, event)``:

``None``
    ``data[pos:newpos]`` belongs to the message in progress and may pass on.
:data:`HOLD`
    ``data[pos:newpos]`` was kept by the framer (an unfinished head); nothing passes yet.
a :class:`Head`
    The head of a message is complete: ``head.raw`` holds all of its bytes, the ones just fed
    (``data[pos:newpos - head.body]``) included, and passes instead of them; the ``head.body``
    bytes after it pass as they are. ``head.end`` says whether the message ends there.
an :class:`End`
    ``data[pos:newpos]`` passes and the message is complete.

``feed_eof()`` tells the end of the stream (it may complete a message that ends with the
connection, such as an HTTP body without a length, and returns it), and ``idle`` is true
between messages. An answer framer is told, with ``begin(request)``, which request the next
answer answers (None for data nobody asked for). A request framer's ``passive`` is true while
what the client sends is no request (a handshake): it passes without an exchange.

Framers keep a small ``bytearray`` for an unfinished line or head and never search the same
byte twice; values and bodies are counted through, never kept. Traffic that breaks the protocol
raises :class:`~vaurien.errors.ProtocolError`, which ends the session with one log line.
"""

from __future__ import annotations

from typing import Any, Protocol

from vaurien.errors import ProtocolError

#: A framer kept the bytes it was fed (an unfinished head): nothing passes yet.
HOLD = object()


class Framer(Protocol):
    """What the driver asks of a framer (see the module documentation)."""

    idle: bool

    def feed(self, data: Any, pos: int, end: int) -> tuple[int, Any]:
        """Frame ``data[pos:end]``; return the position reached and what it found."""

    def feed_eof(self) -> Any:
        """The stream ended: the message it completes, if any."""


class End:
    """The end of a message. Framers return :data:`END` or an instance describing the message."""

    __slots__ = ()
    end = True
    raw = None


#: A message ended and there is nothing more to say about it.
END = End()


class Head:
    """A complete message head: ``raw`` is all of its bytes, ``held`` how many of them came
    from earlier feeds, ``end`` whether the message ends with it. ``body`` bytes that follow
    the head in the same feed may come with it (a whole small body): they pass as they are,
    and the message then ends with the event. Protocols subclass it to carry what they
    parsed."""

    __slots__ = ("raw", "held", "end", "body")

    def __init__(self, raw: bytes, held: int = 0, end: bool = False, body: int = 0) -> None:
        self.raw = raw
        self.held = held
        self.end = end
        self.body = body

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.raw[:40]!r} end={self.end}>"


class LineReader:
    """Finds the end of a line in fed data without searching any byte twice.

    ``take(data, pos, end)`` returns ``(line, newpos)``: the complete line (with its ``\\n``)
    as ``bytes`` once its end is in ``data``, else ``None`` after keeping ``data[pos:end]``.
    A line longer than ``limit`` is a protocol error.
    """

    __slots__ = ("partial", "limit", "what")

    def __init__(self, limit: int, what: str = "line") -> None:
        self.partial = bytearray()
        self.limit = limit
        self.what = what

    def take(self, data: Any, pos: int, end: int) -> tuple[bytes | None, int]:
        """The next complete line and the position after it, or ``(None, end)``."""
        i = data.find(b"\n", pos, end)
        partial = self.partial
        if i < 0:
            if len(partial) + end - pos > self.limit:
                raise ProtocolError(f"{self.what} longer than {self.limit} bytes")
            partial += data[pos:end]
            return None, end
        if partial:
            partial += data[pos : i + 1]
            line = bytes(partial)
            partial.clear()
        else:
            line = bytes(data[pos : i + 1])
        if len(line) > self.limit:
            raise ProtocolError(f"{self.what} longer than {self.limit} bytes")
        return line, i + 1

    @property
    def held(self) -> int:
        """How many bytes of an unfinished line are kept."""
        return len(self.partial)
