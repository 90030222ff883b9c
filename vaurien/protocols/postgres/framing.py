"""Sans-IO framing of the PostgreSQL frontend/backend protocol (version 3).

Two framers share a :class:`~vaurien.protocols.postgres.messages.Conversation` (:func:`framers`
makes the pair): a :class:`RequestFramer` for what the client sends, an :class:`AnswerFramer`
for what the server sends. They follow the framer contract of :mod:`vaurien.protocols.framed`
(``feed``, ``feed_eof``, ``idle``, ``begin``, ``passive``) and only ever return ``None`` or one
of the events of :mod:`vaurien.protocols.postgres.messages`: no message is held or rewritten,
and every event's ``stream`` says whether the session is a plain byte stream from there on
(TLS, GSSAPI encryption, replication), and why.

What is one exchange:

* The start-up packets (StartupMessage, SSLRequest, GSSENCRequest, CancelRequest) and the
  authentication messages pass while the request framer is ``passive``, up to the server's first
  ReadyForQuery. A CancelRequest is a connection of its own: nothing follows it.
* A simple Query is one exchange; so is an extended-protocol batch (Parse, Bind, Describe,
  Execute, Close, Flush ...) up to and including its Sync; so is a FunctionCall. Each is
  answered up to a ReadyForQuery, errors included (after an ErrorResponse the server skips to
  the Sync). Terminate gets no answer. A batch cut short by a message that is not part of one
  (the Flush psycopg sends after a pipeline's Sync, then a Query) ends there and expects no
  answer of its own: whatever the server says to it comes before the next ReadyForQuery.
* COPY FROM STDIN: the server's CopyInResponse is an :class:`Answer` that is not ``final``;
  then the client's CopyData, CopyDone or CopyFail (and, after a COPY started by a batch, the
  Sync the client sends after them) are one :class:`CopyData` event read while the request
  framer is ``passive``; the answer goes on with CommandComplete and ends with ReadyForQuery.
  COPY TO STDOUT is an ordinary answer. A CopyBothResponse (replication) makes the session a
  stream.
* NotificationResponse, NoticeResponse, ParameterStatus and ErrorResponse that come when no
  request is waiting for its answer (``begin(None)``) are :class:`Unsolicited`; while one is,
  they are part of its answer (a notice is often the first message of one).

Messages are framed by their type byte and length and counted through: only small things are
kept (the SQL text of a Query or Parse up to :data:`SQL_CAPTURE` bytes, statement and portal
names, the SQLSTATE of an error, a transaction status). Lengths are checked against the limits
the server (for requests) and libpq (for answers) apply, so a stream that is not PostgreSQL
raises :class:`~vaurien.errors.ProtocolError` within a few bytes, and a message of a gigabyte
is counted through, never buffered.
"""

from __future__ import annotations

import struct
from typing import Any

from vaurien.errors import ProtocolError
from vaurien.protocols.postgres.messages import (
    AUTH,
    CANCEL,
    CANCEL_CODE,
    GSSENC_CODE,
    MAX_CANCEL_KEY,
    MAX_STARTUP,
    NEGOTIATING,
    READY,
    SSL_CODE,
    STARTUP,
    STREAM,
    TLS_HANDSHAKE,
    Answer,
    Batch,
    Conversation,
    CopyData,
    Event,
    Handshake,
    Query,
    Request,
    Startup,
    Unsolicited,
    error_code,
)

__all__ = ["CAPTURES", "AnswerFramer", "RequestFramer", "framers", "split_name", "sql_text"]

SQL_CAPTURE = 4096  # bytes of SQL text kept from a Query or a Parse
NAME_CAPTURE = 256  # bytes kept of a statement or portal name; a longer one is not followed
STATEMENTS = 256  # prepared statements remembered per session (the oldest is forgotten)
KINDS = 64  # message types listed in a Batch's ``kinds`` (``count`` has them all)
ERROR_CAPTURE = 256  # bytes of an ErrorResponse kept, for its SQLSTATE (the server sends it early)

# The server's limits on a message's length field (which counts itself):
_LARGE_REQUEST = 0x3FFFFFFE  # Query, Parse, Bind, FunctionCall, CopyData (PQ_LARGE_MESSAGE_LIMIT)
_SMALL_REQUEST = 10000  # the other messages (PQ_SMALL_MESSAGE_LIMIT)
_AUTH_REQUEST = 65535  # a password or a SASL/GSS token (PG_MAX_AUTH_TOKEN_LENGTH)
_LONG_ANSWER = 0x7FFFFFFF  # libpq believes any length for these types
_SHORT_ANSWER = 30000  # and at most this for the others


def _table(limits: dict[str, int]) -> tuple[int, ...]:
    """A length limit per type byte: 0 for a type that is not allowed."""
    table = [0] * 256
    for types, limit in limits.items():
        for kind in types:
            table[ord(kind)] = limit
    return tuple(table)


_REQUESTS_AUTH = _table({"p": _AUTH_REQUEST, "X": 4})
_REQUESTS = _table({"QPBFd": _LARGE_REQUEST, "DECf": _SMALL_REQUEST, "HSXc": 4})
_ANSWERS_AUTH = _table({"EN": _LONG_ANSWER, "RSKvZ": _SHORT_ANSWER})
_ANSWERS_BEFORE = _table({"E": _LONG_ANSWER})  # a server speaks before start-up only to refuse
_ANSWERS = _table({"TDdVENA": _LONG_ANSWER, "CGHISWZcnst123": _SHORT_ANSWER})
#: Answer messages that need no look inside while an answer is in progress, and their length
#: limits (the fixed length of those that have one).
_PASSING = _table({"TDdVNA": _LONG_ANSWER, "CHSt": _SHORT_ANSWER, "123nIsc": 4})
#: Lengths (the length field included) of the messages whose length is fixed, or a minimum.
_REQUEST_FIXED = {ord(kind): 4 for kind in "HSXc"}
_ANSWER_FIXED = {**{ord(kind): 4 for kind in "123nIsc"}, ord("Z"): 5}
_ANSWER_MIN = {ord("R"): 8, ord("K"): 12}  # an authentication code; a process id and a key

_BATCH = frozenset(b"PBDECHS")  # the extended protocol's messages, up to Sync
_COPY_IN = frozenset(b"dcfSH")  # what a client may send in copy-in mode (Sync, Flush ignored)
_ASYNC = frozenset(b"ANSE")  # what a server may send without being asked
#: The bytes kept of the body of the messages that name statements or carry SQL, by type.
CAPTURES = {ord("Q"): SQL_CAPTURE, ord("P"): NAME_CAPTURE + SQL_CAPTURE}
CAPTURES.update({ord("B"): 2 * NAME_CAPTURE, ord("C"): 1 + NAME_CAPTURE})

_INT32 = struct.Struct("!i")
_STARTUP_HEADER = struct.Struct("!ii")


def _name(kind: int) -> str:
    """A type byte as logs show it."""
    return chr(kind) if 0x20 < kind < 0x7F else f"0x{kind:02x}"


def framers(conversation: Conversation | None = None) -> tuple[RequestFramer, AnswerFramer]:
    """A request framer and an answer framer for one connection, sharing ``conversation`` (a
    new one by default)."""
    conversation = conversation if conversation is not None else Conversation()
    return RequestFramer(conversation), AnswerFramer(conversation)


# -- framers ----------------------------------------------------------------------------------


class _Messages:
    """Counting through typed messages: a 5-byte header (type, Int32 length including itself),
    then the body, of which the first ``_want`` bytes are kept in ``_capture``."""

    __slots__ = ("conversation", "idle", "_header", "_type", "_left", "_want", "_capture")

    side = ""
    fixed: dict[int, int] = {}
    minimum: dict[int, int] = {}

    def __init__(self, conversation: Conversation) -> None:
        self.conversation = conversation
        self.idle = True
        self._header = bytearray()
        self._type = -1  # the type byte of the message in progress; -1 between messages
        self._left = 0  # body bytes still to come
        self._want = 0  # body bytes still to keep
        self._capture = bytearray()

    def _header_at(self, data: Any, pos: int, end: int) -> tuple[int, int, int]:
        """Read a header at ``pos``: ``(type, length, newpos)``, type -1 while incomplete."""
        header = self._header
        if not header and end - pos >= 5:
            return data[pos], _INT32.unpack_from(data, pos + 1)[0], pos + 5
        take = min(5 - len(header), end - pos)
        header += data[pos : pos + take]
        if len(header) < 5:
            return -1, 0, pos + take
        kind, length = header[0], _INT32.unpack_from(header, 1)[0]
        header.clear()
        return kind, length, pos + take

    def _check(self, kind: int, length: int, limits: tuple[int, ...]) -> None:
        """Refuse a message that cannot be the protocol's here."""
        limit = limits[kind]
        if not limit:
            raise ProtocolError(
                f"PostgreSQL: unexpected {self.side} message type {_name(kind)}"
                f" ({self.conversation.phase})"
            )
        fixed = self.fixed.get(kind)
        if length < self.minimum.get(kind, 4) or length > limit or (fixed and length != fixed):
            raise ProtocolError(
                f"PostgreSQL: {self.side} message {_name(kind)} with a bad length {length}"
            )

    def _body(self, data: Any, pos: int, end: int) -> int:
        """Count through the body in progress; return the position after what was taken."""
        take = min(self._left, end - pos)
        if self._want:
            keep = min(self._want, take)
            self._capture += data[pos : pos + keep]
            self._want -= keep
        self._left -= take
        return pos + take

    def _finish(self, data: Any, pos: int, end: int) -> tuple[int, int]:
        """Count through the body in progress: the position after what was taken, and the
        type of the message it completes (-1 while it goes on)."""
        if self._left:
            pos = self._body(data, pos, end)
            if self._left:
                return pos, -1
        kind = self._type
        self._type = -1
        return pos, kind

    def _begin_body(self, kind: int, length: int, want: int) -> None:
        self._type = kind
        self._left = length - 4
        self._want = min(want, self._left)
        self._capture.clear()

    def feed_eof(self) -> None:
        """Nothing ends with the connection: a message cut short is just lost."""
        return None


class RequestFramer(_Messages):
    """Frames what a PostgreSQL client sends: the start-up packets, the authentication
    messages (``passive``), then one :class:`Query`, :class:`Batch` or :class:`Request` per
    exchange, and a :class:`CopyData` for what it sends in copy-in mode (``passive``)."""

    __slots__ = (
        "_started",
        "_startup",
        "_kinds",
        "_count",
        "_last",
        "_sql",
        "_copy",
        "_copy_failed",
        "_copy_sync",
        "_statements",
    )

    side = "client"
    fixed = _REQUEST_FIXED

    def __init__(self, conversation: Conversation) -> None:
        super().__init__(conversation)
        self._started = False
        self._startup = 0  # the code of the start-up packet in progress (0: none)
        self._kinds = bytearray()  # the batch in progress
        self._count = 0
        self._last = 0  # the type of the batch's last message
        self._sql: str | None = None
        self._copy = -1  # messages of the copy-in stream in progress; -1: none
        self._copy_failed = False
        self._copy_sync = False  # the stream ends with the Sync that comes next
        self._statements = conversation.statements  # prepared statements' SQL, by name

    @property
    def passive(self) -> bool:
        """True while what the client sends is no exchange: start-up, authentication, and
        copy-in data."""
        conversation = self.conversation
        return (
            conversation.phase is not READY
            or self._copy >= 0
            or (conversation.copy_in is not None and not self._count)
        )

    def feed(self, data: Any, pos: int, end: int) -> tuple[int, Any]:
        conversation = self.conversation
        phase = conversation.phase
        if phase is READY or phase is AUTH:
            return self._feed_messages(data, pos, end, phase is READY)
        if phase is STREAM:
            return end, None
        if phase is CANCEL:
            raise ProtocolError("PostgreSQL: the client sent more after a CancelRequest")
        if not self._header and self._type < 0 and data[pos] == TLS_HANDSHAKE:
            # A TLS ClientHello: direct TLS (no SSLRequest), or one sent right after an
            # SSLRequest without waiting for the server's answer.
            if not self._started or conversation.negotiating == "ssl":
                self.idle = True
                return pos, Startup("tls", stream=conversation._become_stream("TLS"))
        if phase is NEGOTIATING:
            raise ProtocolError(
                "PostgreSQL: the client sent data before the answer to its"
                f" {conversation.negotiating} request"
            )
        self._started = True
        return self._feed_startup(data, pos, end)

    # -- start-up packets ----------------------------------------------------------------------

    def _feed_startup(self, data: Any, pos: int, end: int) -> tuple[int, Any]:
        self.idle = False
        if self._type < 0:
            header = self._header
            take = min(8 - len(header), end - pos)
            header += data[pos : pos + take]
            pos += take
            if len(header) < 8:
                return pos, None
            length, code = _STARTUP_HEADER.unpack(header)
            header.clear()
            self._check_startup(length, code)
            self._startup = code
            self._begin_body(0, length - 4, MAX_STARTUP)  # a body of length - 8 bytes
        pos, kind = self._finish(data, pos, end)
        if kind < 0:
            return pos, None
        self.idle = True
        return pos, self._startup_done(self._startup, bytes(self._capture))

    def _check_startup(self, length: int, code: int) -> None:
        if code in (SSL_CODE, GSSENC_CODE):
            if length != 8:
                raise ProtocolError(f"PostgreSQL: encryption request of length {length}")
        elif code == CANCEL_CODE:
            if not 16 <= length <= 12 + MAX_CANCEL_KEY:
                raise ProtocolError(f"PostgreSQL: CancelRequest of length {length}")
        elif code >> 16 != 3:
            raise ProtocolError(
                f"not a PostgreSQL start-up packet (length {length}, code {code:#010x})"
            )
        elif not 8 < length <= 4 + MAX_STARTUP:
            raise ProtocolError(f"PostgreSQL: StartupMessage of length {length}")

    def _startup_done(self, code: int, body: bytes) -> Startup:
        conversation = self.conversation
        if code == SSL_CODE or code == GSSENC_CODE:
            conversation.phase = NEGOTIATING
            conversation.negotiating = "ssl" if code == SSL_CODE else "gssenc"
            return Startup(conversation.negotiating)
        if code == CANCEL_CODE:
            conversation.phase = CANCEL
            return Startup("cancel")
        # StartupMessage: name and value strings, ended by an empty name.
        if not body.endswith(b"\x00"):
            raise ProtocolError("PostgreSQL: StartupMessage not ended by a zero byte")
        fields = body[:-1].split(b"\x00")
        if len(fields) % 2 != 1 or fields[-1]:
            raise ProtocolError("PostgreSQL: StartupMessage parameters are not name/value pairs")
        text = [field.decode("utf-8", "replace") for field in fields[:-1]]
        conversation.phase = AUTH
        conversation.negotiating = None
        parameters = dict(zip(text[::2], text[1::2], strict=True))
        return Startup("startup", (code >> 16, code & 0xFFFF), parameters)

    # -- typed messages ------------------------------------------------------------------------

    def _feed_messages(self, data: Any, pos: int, end: int, ready: bool) -> tuple[int, Any]:
        while pos < end:
            if self._type < 0:
                if not self._header and ready:
                    event = self._boundary(data[pos])
                    if event is not None:
                        return pos, event
                self.idle = False
                kind, length, pos = self._header_at(data, pos, end)
                if kind < 0:
                    return pos, None
                self._check(kind, length, _REQUESTS if ready else _REQUESTS_AUTH)
                self._begin_body(kind, length, CAPTURES.get(kind, 0) if ready else 0)
            pos, kind = self._finish(data, pos, end)
            if kind < 0:
                return pos, None
            # Authentication: password and SASL messages, or Terminate, each on its own.
            event = self._message(kind) if ready else Request(chr(kind))
            if event is not None:
                self.idle = True
                return pos, event
        return pos, None

    def _boundary(self, kind: int) -> Event | None:
        """A message starts with ``kind``: end what it cannot belong to, start a copy stream."""
        conversation = self.conversation
        if self._copy >= 0:
            if conversation.copy_in is None:  # the server left copy mode (an error)
                return self._copy_done()
            if kind not in _COPY_IN or (self._copy_sync and kind not in b"SH"):
                raise ProtocolError(
                    f"PostgreSQL: message {_name(kind)} from the client in copy-in mode"
                )
        elif self._count and kind not in _BATCH:
            return self._batch_done(False)
        elif conversation.copy_in is not None:
            if kind not in _COPY_IN:
                raise ProtocolError(
                    f"PostgreSQL: message {_name(kind)} from the client in copy-in mode"
                )
            self._copy = 0
        return None

    def _message(self, kind: int) -> Event | None:
        """A message is complete (normal operation): the event, if it ends a request."""
        if self._copy >= 0:
            self._copy += 1
            if kind == 0x63 or kind == 0x66:  # CopyDone, CopyFail
                self._copy_failed = kind == 0x66
                if self.conversation.copy_in == "extended":
                    self._copy_sync = True
                    return None
                return self._copy_done()
            if kind == 0x53 and self._copy_sync:
                return self._copy_done()
            return None
        if kind in _BATCH:
            return self._batch_message(kind)
        if kind == 0x51:  # Query
            return Query(sql_text(self._capture))
        # FunctionCall is answered up to ReadyForQuery; Terminate, and copy messages that come
        # after the server left copy mode, are not answered.
        return Request(chr(kind), expects=kind == 0x46)

    def _batch_message(self, kind: int) -> Batch | None:
        if len(self._kinds) < KINDS:
            self._kinds.append(kind)
        self._count += 1
        self._last = kind
        capture = self._capture
        if kind == 0x50:  # Parse: statement name, SQL text
            name, rest = split_name(capture)
            if name is not None:
                sql = sql_text(rest)
                self._statements.pop(name, None)
                if len(self._statements) >= STATEMENTS:
                    del self._statements[next(iter(self._statements))]
                self._statements[name] = sql
                if self._sql is None:
                    self._sql = sql
        elif kind == 0x42:  # Bind: portal name, statement name
            _, rest = split_name(capture)
            if rest is not None and self._sql is None:
                name, _ = split_name(rest)
                if name is not None:
                    self._sql = self._statements.get(name)
        elif kind == 0x43 and capture[:1] == b"S":  # Close a statement
            name, _ = split_name(capture[1:])
            self._statements.pop(name, None)
        elif kind == 0x53:  # Sync
            return self._batch_done(True)
        return None

    def _batch_done(self, synced: bool) -> Batch:
        kind = "S" if synced else chr(self._last)
        batch = Batch(kind, self._kinds.decode("ascii"), self._count, synced, self._sql)
        self._kinds.clear()
        self._count = 0
        self._sql = None
        self.idle = True
        return batch

    def _copy_done(self) -> CopyData:
        event = CopyData(self._copy, self._copy_failed)
        self._copy = -1
        self._copy_failed = self._copy_sync = False
        self.conversation.copy_in = None
        self.idle = True
        return event


def split_name(data: bytes | bytearray) -> tuple[bytes | None, bytes | bytearray | None]:
    """A zero-ended name at the start of ``data`` and what follows it; None, None when the name
    is longer than what is kept of it."""
    nul = data.find(b"\x00")
    if nul < 0 or nul > NAME_CAPTURE:
        return None, None
    return bytes(data[:nul]), data[nul + 1 :]


def sql_text(data: bytes | bytearray | None) -> str:
    """SQL text from a zero-ended string (cut short where the capture ended)."""
    if data is None:
        return ""
    nul = data.find(b"\x00")
    return bytes(data[: nul if nul >= 0 else SQL_CAPTURE]).decode("utf-8", "replace")


class AnswerFramer(_Messages):
    """Frames what a PostgreSQL server sends: the start-up as :class:`Handshake` events, then
    one :class:`Answer` per request up to its ReadyForQuery (and at a CopyInResponse or a
    CopyBothResponse), and :class:`Unsolicited` messages while nothing is asked. Rows are
    counted through, never kept."""

    __slots__ = ("_request", "_answering", "_error", "_unsolicited")

    side = "server"
    fixed = _ANSWER_FIXED
    minimum = _ANSWER_MIN

    def __init__(self, conversation: Conversation) -> None:
        super().__init__(conversation)
        self._request: Any = None
        self._answering = False  # an answer is in progress (up to its ReadyForQuery)
        self._error: str | None = None  # the SQLSTATE of the answer's first error
        self._unsolicited = False  # the message in progress is not part of an answer

    def begin(self, request: Any) -> None:
        """The next answer answers ``request`` (None: nothing is waiting for one)."""
        self._request = request

    def feed(self, data: Any, pos: int, end: int) -> tuple[int, Any]:
        conversation = self.conversation
        phase = conversation.phase
        if phase is STREAM:
            return end, None
        if phase is NEGOTIATING and self._type < 0 and not self._header:
            answer = data[pos]
            if answer == 0x4E:  # 'N': no encryption, the start-up goes on in the clear
                conversation.phase = STARTUP
                conversation.negotiating = None
                return pos + 1, Handshake("N")
            if answer == (0x53 if conversation.negotiating == "ssl" else 0x47):  # 'S', 'G'
                why = "TLS" if answer == 0x53 else "GSSAPI encryption"
                return pos + 1, Handshake(chr(answer), stream=conversation._become_stream(why))
            if answer != 0x45:  # 'E': an ErrorResponse, framed below
                raise ProtocolError(
                    f"PostgreSQL: bad answer {_name(answer)} to a {conversation.negotiating}"
                    " request"
                )
        if phase is CANCEL:
            raise ProtocolError("PostgreSQL: the server answered a CancelRequest")
        limits = _ANSWERS if phase is READY else _ANSWERS_AUTH if phase is AUTH else _ANSWERS_BEFORE
        while pos < end:
            if self._type < 0:
                if self._answering and not self._header:
                    # Whole rows and the like, skipped without a call (the hot path).
                    while end - pos >= 5:
                        limit = _PASSING[data[pos]]
                        length = _INT32.unpack_from(data, pos + 1)[0]
                        if not 4 <= length <= limit or pos + 1 + length > end:
                            break  # framed below (or refused there)
                        pos += 1 + length
                    if pos == end:
                        return pos, None
                kind, length, pos = self._header_at(data, pos, end)
                if kind < 0:
                    self.idle = False
                    return pos, None
                self._check(kind, length, limits)
                self.idle = False
                if not self._answering and phase is READY:
                    # Nothing asked and nothing said yet: a message that can come unasked
                    # stands alone; anything else starts an answer.
                    self._unsolicited = self._request is None and kind in _ASYNC
                    self._answering = not self._unsolicited
                self._begin_body(
                    kind, length, ERROR_CAPTURE if kind == 0x45 else 1 if kind == 0x5A else 0
                )
            pos, kind = self._finish(data, pos, end)
            if kind < 0:
                return pos, None
            event = self._message(kind) if phase is READY else self._handshake(kind)
            if event is not None:
                return pos, event
        return pos, None

    def _handshake(self, kind: int) -> Handshake:
        self.idle = True
        conversation = self.conversation
        error = error_code(self._capture) if kind == 0x45 else None
        if kind == 0x5A:  # ReadyForQuery: the session is ready
            conversation.status = self._status()
            conversation.phase = READY
        return Handshake(chr(kind), error)

    def _message(self, kind: int) -> Event | None:
        """A message is complete (normal operation): the event, if the answer says one."""
        if kind == 0x45:
            error = error_code(self._capture)
            if self._unsolicited:
                self.idle = True
                return Unsolicited("E", error)
            if self._error is None:
                self._error = error
            return None
        if self._unsolicited:
            self.idle = True
            return Unsolicited(chr(kind))
        conversation = self.conversation
        if kind == 0x5A:  # ReadyForQuery: the answer is complete
            status = conversation.status = self._status()
            conversation.copy_in = None
            answer = Answer("Z", status, self._error)
            self._error = None
            self._answering = False
            self.idle = True
            return answer
        if kind == 0x47:  # CopyInResponse: the client sends its data now
            conversation.copy_in = "extended" if isinstance(self._request, Batch) else "simple"
            return Answer("G", error=self._error)
        if kind == 0x57:  # CopyBothResponse: replication
            why = conversation._become_stream("replication (CopyBothResponse)")
            return Answer("W", error=self._error, stream=why)
        return None

    def _status(self) -> str:
        status = self._capture[:1]
        if status not in (b"I", b"T", b"E"):
            raise ProtocolError(f"PostgreSQL: bad transaction status {bytes(status)!r}")
        return status.decode()
