"""What PostgreSQL's frontend/backend protocol (version 3) says, as the framers report it: the
phases of a connection and what both framers know about it (:class:`Conversation`), the events
the framers return (:class:`Event` and its subclasses), and the error form
(:func:`error_response`).
"""

from __future__ import annotations

import re
import struct

from vaurien.protocols.framed import End
from vaurien.rules import statement_type

__all__ = [
    "ADMIN_SHUTDOWN",
    "CONNECTION_FAILURE",
    "ERROR_MESSAGE",
    "Answer",
    "Batch",
    "Conversation",
    "CopyData",
    "Event",
    "Handshake",
    "Query",
    "Request",
    "Startup",
    "Unsolicited",
    "error_code",
    "error_response",
    "sqlstate",
    "statement_type",
]

#: SQLSTATE of the injected error: admin_shutdown (psycopg raises ``errors.AdminShutdown``).
ADMIN_SHUTDOWN = "57P01"
#: SQLSTATE for behaviors that break the connection: connection_failure.
CONNECTION_FAILURE = "08006"
ERROR_MESSAGE = "Error injected by vaurien"

# Start-up packets: Int32 length, Int32 code (a protocol version, or one of these).
MAX_STARTUP = 10000  # bytes after the length field: the server's MAX_STARTUP_PACKET_LENGTH
CANCEL_CODE = 80877102
SSL_CODE = 80877103
GSSENC_CODE = 80877104
MAX_CANCEL_KEY = 256  # bytes (protocol 3.2; 4 before)
TLS_HANDSHAKE = 0x16  # the first byte of a TLS record carrying a ClientHello (direct TLS)

# Phases of a connection (Conversation.phase).
STARTUP = "startup"  # the client's next packet is a start-up packet (no type byte)
NEGOTIATING = "negotiating"  # an SSLRequest or GSSENCRequest waits for the server's one byte
AUTH = "auth"  # a StartupMessage was sent: authentication and start-up, to ReadyForQuery
READY = "ready"  # normal operation
CANCEL = "cancel"  # the connection carried a CancelRequest: nothing more comes on it
STREAM = "stream"  # TLS, GSSAPI encryption or replication: bytes the proxy does not frame

_SQLSTATE = re.compile(r"[0-9A-Z]{5}")


def sqlstate(text: str) -> str:
    """``text`` as a SQLSTATE: five digits or upper-case letters (``57P01``, ``40001``).

    Raises ValueError otherwise, so it serves as an option's type.
    """
    code = str(text).strip().upper()
    if not _SQLSTATE.fullmatch(code):
        raise ValueError(f"not a SQLSTATE (five digits or letters): {text!r}")
    return code


def error_response(
    code: str = ADMIN_SHUTDOWN,
    message: str = ERROR_MESSAGE,
    severity: str = "ERROR",
    status: str | None = "I",
) -> bytes:
    """An ErrorResponse with SQLSTATE ``code``, then a ReadyForQuery with transaction ``status``.

    ``status`` is what the client's transaction is after the error: ``"I"`` outside a
    transaction block, ``"E"`` in a failed one (what a real error does to a ``"T"`` block: see
    :attr:`Conversation.error_status`); None leaves the ReadyForQuery out (the server's way to
    announce that it closes the connection).

    ``severity`` is ``ERROR`` by default: what a server sends when a command fails and the
    session goes on. The client reads the error, then ReadyForQuery, and its connection stays
    usable: psycopg raises the exception of the SQLSTATE (``AdminShutdown`` for ``57P01``,
    whatever the severity) and runs the next query. A server sends ``FATAL`` only when it ends
    the session and closes the connection; libpq does not act on the severity (the close is
    what breaks the connection), but a client may, so ``FATAL`` belongs with ``status=None``
    and a close.
    """
    code = sqlstate(code)
    if severity not in ("ERROR", "FATAL", "PANIC"):
        raise ValueError(f"not an error severity: {severity!r}")
    if status not in ("I", "T", "E", None):
        raise ValueError(f"not a transaction status: {status!r}")
    level = severity.encode()
    fields = b"S%s\x00V%s\x00C%s\x00M%s\x00\x00" % (
        level,
        level,
        code.encode(),
        message.replace("\x00", " ").encode(),
    )
    reply = b"E" + struct.pack("!i", 4 + len(fields)) + fields
    if status is not None:
        reply += b"Z\x00\x00\x00\x05" + status.encode()
    return reply


def error_code(captured: bytes | bytearray) -> str | None:
    """The SQLSTATE (the ``C`` field) of an ErrorResponse's body, or of its first bytes (the
    server sends the code early); None when it is not there."""
    pos = 0
    while pos < len(captured) and captured[pos]:
        nul = captured.find(b"\x00", pos + 1)
        if nul < 0:
            return None
        if captured[pos] == 0x43:  # 'C'
            return captured[pos + 1 : nul].decode("ascii", "replace")
        pos = nul + 1
    return None


class Conversation:
    """What both framers of one connection know.

    ``phase`` is one of ``startup``, ``negotiating``, ``auth``, ``ready``, ``cancel`` and
    ``stream``; ``negotiating`` says what waits for the server's one-byte answer (``ssl`` or
    ``gssenc``); ``copy_in`` is ``simple`` or ``extended`` while the server takes COPY data
    (the COPY came in a Query, or in a batch whose Sync the client repeats after the data);
    ``status`` is the transaction status of the last ReadyForQuery (``I``, ``T`` or ``E``);
    ``stream`` why the session became a plain stream.
    """

    __slots__ = ("phase", "negotiating", "copy_in", "status", "stream", "statements")

    def __init__(self) -> None:
        self.phase = STARTUP
        self.negotiating: str | None = None
        self.copy_in: str | None = None
        self.status: str | None = None
        self.stream: str | None = None
        #: The SQL of the prepared statements the client made, by name (the request framer
        #: keeps it; a batch that binds a statement carries its SQL).
        self.statements: dict[bytes, str] = {}

    @property
    def error_status(self) -> str:
        """The transaction status to report after an injected error: ``E`` (failed) in a
        transaction block, as a real error leaves it, else ``I``."""
        return "E" if self.status in ("T", "E") else "I"

    def _become_stream(self, why: str) -> str:
        self.phase = STREAM
        self.stream = why
        return why


# -- events -----------------------------------------------------------------------------------


class Event(End):
    """What a framer says when a message (or a batch, or a COPY stream) is complete.

    ``type`` is the message type (``"Q"``, ``"S"``, ``"Z"`` ...; None for a start-up packet),
    ``stream`` why the session is a plain stream from here on (``"TLS"`` ...), or None.
    """

    __slots__ = ("type", "stream")

    def __init__(self, kind: str | None, stream: str | None = None) -> None:
        self.type = kind
        self.stream = stream

    def _details(self) -> str:
        return f" {self.type}"

    def __repr__(self) -> str:
        stream = f" stream={self.stream!r}" if self.stream else ""
        return f"<{type(self).__name__}{self._details()}{stream}>"


class Request(Event):
    """A request read whole. ``expects`` is true when the server answers it up to a
    ReadyForQuery (a Query, a batch with its Sync, a FunctionCall); ``sql`` is its SQL text
    (as much of it as the framer keeps) and ``statement`` the SQL's first keyword, both None
    when it carries no SQL. This class itself stands for a FunctionCall, a Terminate, an
    authentication message (read while ``passive``), and CopyData, CopyDone or CopyFail sent
    after the server left copy mode (it drops them)."""

    __slots__ = ("expects", "sql", "statement")

    def __init__(
        self,
        kind: str | None,
        expects: bool = False,
        sql: str | None = None,
        stream: str | None = None,
    ) -> None:
        super().__init__(kind, stream)
        self.expects = expects
        self.sql = sql
        self.statement = statement_type(sql) if sql is not None else None

    def _details(self) -> str:
        sql = f" {self.sql[:40]!r}" if self.sql is not None else ""
        return f" {self.type}{sql} expects={self.expects}"


class Query(Request):
    """A simple Query: its ``sql`` may hold several statements (``statement`` is the
    first's)."""

    __slots__ = ()

    def __init__(self, sql: str) -> None:
        super().__init__("Q", True, sql)


class Batch(Request):
    """Extended-protocol messages up to a Sync (``expects``), or up to a message that is not
    one (no Sync: nothing answers it on its own). ``kinds`` lists their types in order (as many
    as the framer keeps, e.g. ``"PBDES"``), ``count`` how many there were; ``sql`` is the text
    of the statement its first Parse or Bind names (a prepared statement is remembered from its
    Parse)."""

    __slots__ = ("kinds", "count")

    def __init__(self, kind: str, kinds: str, count: int, expects: bool, sql: str | None) -> None:
        super().__init__(kind, expects, sql)
        self.kinds = kinds
        self.count = count

    def _details(self) -> str:
        return f" {self.kinds}{'...' if self.count > len(self.kinds) else ''}" + (
            f" {self.sql[:40]!r}" if self.sql is not None else ""
        )


class CopyData(Request):
    """What the client sent in copy-in mode: ``count`` messages (CopyData, then CopyDone or
    CopyFail, and the Sync after them when the COPY came in a batch); ``failed`` when it ended
    with CopyFail. It expects no answer: the exchange that started the COPY gets it."""

    __slots__ = ("count", "failed")

    def __init__(self, count: int, failed: bool) -> None:
        super().__init__("d")
        self.count = count
        self.failed = failed

    def _details(self) -> str:
        return f" {self.count}{' failed' if self.failed else ''}"


class Startup(Request):
    """A start-up packet: ``kind`` is ``startup`` (a StartupMessage: ``version`` is its
    ``(major, minor)`` and ``parameters`` its user, database ...), ``ssl``, ``gssenc``,
    ``cancel``, or ``tls`` (a TLS handshake without SSLRequest: a plain stream from there)."""

    __slots__ = ("kind", "version", "parameters")

    def __init__(
        self,
        kind: str,
        version: tuple[int, int] | None = None,
        parameters: dict[str, str] | None = None,
        stream: str | None = None,
    ) -> None:
        super().__init__(None, stream=stream)
        self.kind = kind
        self.version = version
        self.parameters = parameters or {}

    def _details(self) -> str:
        return f" {self.kind}" + (f" {self.version}" if self.version else "")


class Handshake(Event):
    """A server message before the session is ready: the one-byte answer to an SSLRequest or
    GSSENCRequest (``type`` ``S``/``G`` with a ``stream``, or ``N``), an authentication
    request, ParameterStatus, BackendKeyData, a notice, an error (``error`` is its SQLSTATE:
    the server closes), and the ReadyForQuery that ends the start-up (``ready``)."""

    __slots__ = ("ready", "error")

    def __init__(self, kind: str, error: str | None = None, stream: str | None = None) -> None:
        super().__init__(kind, stream)
        self.ready = kind == "Z"
        self.error = error

    def _details(self) -> str:
        return f" {self.type}" + (f" {self.error}" if self.error else "")


class Answer(Event):
    """The answer to a request is complete (``final``: a ReadyForQuery, whose transaction
    ``status`` is ``I``, ``T`` or ``E``), or has reached a point where the client must act
    (a CopyInResponse, ``type`` ``G``: the client sends its data, then the answer goes on) or
    where the session turns into a stream (a CopyBothResponse, ``W``). ``error`` is the SQLSTATE
    of the answer's first ErrorResponse so far, or None."""

    __slots__ = ("final", "status", "error")

    def __init__(
        self,
        kind: str,
        status: str | None = None,
        error: str | None = None,
        stream: str | None = None,
    ) -> None:
        super().__init__(kind, stream)
        self.final = kind == "Z"
        self.status = status
        self.error = error

    def _details(self) -> str:
        return f" {self.type}" + "".join(
            f" {value}" for value in (self.status, self.error) if value is not None
        )


class Unsolicited(Event):
    """A message the server sent while no request waited for its answer: a
    NotificationResponse (``A``), a NoticeResponse (``N``), a ParameterStatus (``S``), or an
    ErrorResponse (``E``, with its SQLSTATE in ``error``: the server closes the connection)."""

    __slots__ = ("error",)

    def __init__(self, kind: str, error: str | None = None) -> None:
        super().__init__(kind)
        self.error = error

    def _details(self) -> str:
        return f" {self.type}" + (f" {self.error}" if self.error else "")
