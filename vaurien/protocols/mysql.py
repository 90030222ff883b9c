"""mysql: the MySQL / MariaDB client protocol, command by command."""

from __future__ import annotations

import logging
from typing import Any

from vaurien.errors import ProtocolError
from vaurien.protocols import Protocol
from vaurien.protocols.framed import (
    NO_ANSWER,
    AnswerVerdict,
    End,
    ErrorReply,
    FramedProtocol,
    RequestVerdict,
)
from vaurien.rules import Field, statement_type

log = logging.getLogger(__name__)

MAX_PAYLOAD = 0xFFFFFF  # a packet this long is continued by the next one
CAPTURE = 64  # bytes of each packet kept: enough for OK, EOF, column counts, PREPARE_OK
CAPTURE_HANDSHAKE = 512  # bytes kept of the handshake packets, for the capability flags
MAX_HANDSHAKE = 65536  # bytes; a longer greeting is not one

# Capability flags (client and server).
CLIENT_MYSQL = 1  # MariaDB: unset when the extended capabilities are in use
CLIENT_COMPRESS = 0x20
CLIENT_PROTOCOL_41 = 0x200
CLIENT_SSL = 0x800
CLIENT_DEPRECATE_EOF = 0x01000000
CLIENT_OPTIONAL_RESULTSET_METADATA = 0x02000000
CLIENT_ZSTD_COMPRESSION = 0x04000000
CLIENT_QUERY_ATTRIBUTES = 0x08000000
MARIADB_CLIENT_CACHE_METADATA = 1 << 4  # in MariaDB's extended capabilities
#: Client capabilities that change the framing beyond what the proxy follows: after the
#: authentication, such a session is a plain stream.
UNFOLLOWED = {
    CLIENT_COMPRESS: "compression",
    CLIENT_ZSTD_COMPRESSION: "zstd compression",
    CLIENT_OPTIONAL_RESULTSET_METADATA: "optional result set metadata",
}

# Server status flags.
SERVER_MORE_RESULTS_EXISTS = 0x0008
SERVER_STATUS_CURSOR_EXISTS = 0x0040

# Commands.
COM_QUIT = 0x01
COM_FIELD_LIST = 0x04
COM_PROCESS_INFO = 0x0A
COM_STATISTICS = 0x09
COM_CHANGE_USER = 0x11
COM_BINLOG_DUMP = 0x12
COM_STMT_PREPARE = 0x16
COM_STMT_EXECUTE = 0x17
COM_STMT_SEND_LONG_DATA = 0x18
COM_STMT_CLOSE = 0x19
COM_STMT_FETCH = 0x1C
COM_BINLOG_DUMP_GTID = 0x1E
COM_QUERY = 0x03
COM_STMT_BULK_EXECUTE = 0xFA  # MariaDB
#: What rules call each command (the ``command`` field).
COMMAND_NAMES = dict(
    enumerate(
        (
            "sleep",
            "quit",
            "init_db",
            "query",
            "field_list",
            "create_db",
            "drop_db",
            "refresh",
            "shutdown",
            "statistics",
            "process_info",
            "connect",
            "process_kill",
            "debug",
            "ping",
            "time",
            "delayed_insert",
            "change_user",
            "binlog_dump",
            "table_dump",
            "connect_out",
            "register_slave",
            "prepare",
            "execute",
            "send_long_data",
            "close",
            "reset",
            "set_option",
            "fetch",
            "daemon",
            "binlog_dump_gtid",
            "reset_connection",
        )
    )
)
COMMAND_NAMES[COM_STMT_BULK_EXECUTE] = "bulk_execute"
#: Commands that carry SQL text.
WITH_SQL = frozenset((COM_QUERY, COM_STMT_PREPARE))
SQL_PEEK = 4096  # bytes of a command's SQL text the rules see
#: Commands answered with result sets (or OK, ERR, LOCAL INFILE).
RESULTS = frozenset((COM_QUERY, COM_STMT_EXECUTE, COM_PROCESS_INFO, COM_STMT_BULK_EXECUTE))
#: Commands the server never answers.
SILENT = frozenset((COM_QUIT, COM_STMT_SEND_LONG_DATA, COM_STMT_CLOSE))
#: Commands after which the server streams (replication).
STREAMING = frozenset((COM_BINLOG_DUMP, COM_BINLOG_DUMP_GTID))

# Phases of a connection.
GREETING, AUTH, COMMANDS = "greeting", "auth", "commands"

# What the next answer packet is (ResultFramer).
_SINGLE, _FIRST, _COLUMNS, _COLUMNS_EOF, _ROWS, _INFILE, _PREPARE, _PARAMS, _PARAMS_EOF = range(9)
_LISTING, _CHANGE_USER = range(9, 11)

_DEFINITIONS = (_COLUMNS, _PARAMS, _COLUMNS_EOF, _PARAMS_EOF)

#: The injected error: ER_UNKNOWN_ERROR, SQLSTATE HY000.
ERROR_CODE = 1105
ERROR_STATE = b"HY000"
ERROR_MESSAGE = b"Error injected by vaurien"


def _lenenc(data: bytes, pos: int) -> tuple[int, int]:
    """A length-encoded integer at ``pos``: its value and the position after it."""
    if pos >= len(data):
        raise ProtocolError("MySQL: packet too short for a length-encoded integer")
    first = data[pos]
    if first < 0xFB:
        return first, pos + 1
    size = {0xFC: 2, 0xFD: 3, 0xFE: 8}.get(first)
    if size is None or pos + 1 + size > len(data):
        raise ProtocolError(f"MySQL: bad length-encoded integer 0x{first:02x}")
    return int.from_bytes(data[pos + 1 : pos + 1 + size], "little"), pos + 1 + size


class Conversation:
    """What both directions of one MySQL connection know: the phase, the capabilities, and
    whether the client's next packets continue an exchange (authentication, LOCAL INFILE data)
    instead of starting one."""

    def __init__(self) -> None:
        self.phase = GREETING
        self.server_caps = 0
        self.client_caps: int | None = None
        self.extended_caps = 0
        self.infile = False  # the client sends a file's packets, up to an empty one
        self.changing_user = False  # COM_CHANGE_USER: authentication packets go back and forth
        self.stream: str | None = None  # why the connection became a plain stream

    @property
    def passive(self) -> bool:
        return self.phase is not COMMANDS or self.infile or self.changing_user

    @property
    def deprecate_eof(self) -> bool:
        return bool((self.client_caps or 0) & self.server_caps & CLIENT_DEPRECATE_EOF)


class Packet(End):
    """A packet that is not a command (authentication, LOCAL INFILE data)."""

    __slots__ = ("size",)

    def __init__(self, size: int) -> None:
        self.size = size

    def __repr__(self) -> str:
        return f"<Packet {self.size}>"


class Command(End):
    """A command packet read whole: its ``code`` (COM_QUERY ...) and the ``seq`` of its last
    packet (the answer's first packet follows it)."""

    __slots__ = ("code", "seq")

    def __init__(self, code: int, seq: int) -> None:
        self.code = code
        self.seq = seq

    def __repr__(self) -> str:
        return f"<Command 0x{self.code:02x} seq={self.seq}>"


class Answer(End):
    """A complete answer: ``kind`` is b"ok", b"err", b"result", b"handshake" ..."""

    __slots__ = ("kind",)

    def __init__(self, kind: str) -> None:
        self.kind = kind

    def __repr__(self) -> str:
        return f"<Answer {self.kind}>"


class _Packets:
    """Counting through packets: the 4-byte header, the payload (its first bytes kept), and
    the 16 MiB packets that continue a logical packet."""

    capture = CAPTURE

    def _reset_packets(self) -> None:
        self._header = bytearray()
        self._left = -1  # payload bytes left in the packet in progress; -1: a header is next
        self._continued = False
        self._first = bytearray()  # the first bytes of the logical packet
        self._length = 0  # the length of its first packet
        self._plen = 0
        self.seq = 0

    def _feed_packet(self, data: Any, pos: int, end: int) -> tuple[int, bool]:
        """Advance through the logical packet in progress; true once it is complete."""
        while pos < end:
            if self._left < 0:
                header = self._header
                take = min(4 - len(header), end - pos)
                header += data[pos : pos + take]
                pos += take
                if len(header) < 4:
                    return pos, False
                self._plen = self._left = header[0] | header[1] << 8 | header[2] << 16
                self.seq = header[3]
                header.clear()
                if not self._continued:
                    self._length = self._plen
                    self._first.clear()
                    self._check_header(self._plen, self.seq)
            if self._left:
                take = min(self._left, end - pos)
                want = self.capture - len(self._first)
                if want > 0 and not self._continued:
                    self._first += data[pos : pos + min(take, want)]
                pos += take
                self._left -= take
                if self._left:
                    return pos, False
            self._left = -1
            if self._plen == MAX_PAYLOAD:
                self._continued = True
                continue
            self._continued = False
            return pos, True
        return pos, False

    def _check_header(self, length: int, seq: int) -> None:
        """A logical packet starts: refuse what cannot be MySQL."""


class CommandFramer(_Packets):
    """Frames what a MySQL client sends: one command packet per request (16 MiB packets
    followed to the end of the logical packet). Authentication and LOCAL INFILE packets are
    returned as :class:`Packet` while the framer is ``passive``."""

    def __init__(self, conversation: Conversation) -> None:
        self.conversation = conversation
        self.idle = True
        self._reset_packets()

    @property
    def passive(self) -> bool:
        return self.conversation.passive

    def _check_header(self, length: int, seq: int) -> None:
        conversation = self.conversation
        if conversation.client_caps is None and seq != 1:
            raise ProtocolError(f"not a MySQL handshake response (sequence id {seq})")
        if not conversation.passive and seq != 0:
            raise ProtocolError(f"not a MySQL command packet (sequence id {seq})")

    def feed(self, data: Any, pos: int, end: int) -> tuple[int, Any]:
        conversation = self.conversation
        self.capture = CAPTURE_HANDSHAKE if conversation.client_caps is None else CAPTURE
        self.idle = False
        pos, done = self._feed_packet(data, pos, end)
        if not done:
            return pos, None
        self.idle = True
        first = bytes(self._first)
        if conversation.phase is not COMMANDS:
            if conversation.client_caps is None:
                self._handshake_response(first)
            return pos, Packet(self._length)
        if conversation.infile:
            if self._length == 0:
                conversation.infile = False  # the end of the file
            return pos, Packet(self._length)
        if conversation.changing_user:
            return pos, Packet(self._length)
        if not first:
            raise ProtocolError("MySQL: empty command packet")
        return pos, Command(first[0], self.seq)

    def _handshake_response(self, payload: bytes) -> None:
        """The client's first packet: its capabilities; an SSL request makes it opaque."""
        conversation = self.conversation
        if len(payload) < 4:
            raise ProtocolError("MySQL: handshake response too short")
        caps = int.from_bytes(payload[:4], "little")
        if not caps & CLIENT_PROTOCOL_41:
            raise ProtocolError("MySQL: pre-4.1 clients are not supported")
        conversation.client_caps = caps
        if not caps & CLIENT_MYSQL and len(payload) >= 32:
            conversation.extended_caps = int.from_bytes(payload[28:32], "little")
        if caps & CLIENT_SSL:
            conversation.stream = "TLS"

    def feed_eof(self) -> None:
        return None


class ResultFramer(_Packets):
    """Frames what a MySQL server sends: the handshake, the authentication packets, and the
    answer to each command (``begin`` says which): OK, ERR, result sets with their column
    definitions and rows (several with SERVER_MORE_RESULTS_EXISTS), LOCAL INFILE requests and
    what follows the file, prepared statements' definitions, field lists. Row packets are
    counted through, never kept."""

    def __init__(self, conversation: Conversation) -> None:
        self.conversation = conversation
        self.idle = True
        self._reset_packets()
        self._expect = _SINGLE
        self._code = 0
        self._count = 0  # column or parameter definitions still to come
        self._columns = 0  # columns after the parameters (prepare)
        self._kind = "ok"

    def _check_header(self, length: int, seq: int) -> None:
        if self.conversation.phase is GREETING and (seq != 0 or length > MAX_HANDSHAKE):
            raise ProtocolError(f"not a MySQL handshake (length {length}, sequence id {seq})")

    def begin(self, request: Any) -> None:
        code = request.code if isinstance(request, Command) else None
        self._code = code
        if code in RESULTS:
            self._expect = _FIRST
        elif code == COM_STMT_PREPARE:
            self._expect = _PREPARE
        elif code == COM_FIELD_LIST:
            self._expect = _LISTING
        elif code == COM_STMT_FETCH:
            self._expect = _ROWS
        elif code == COM_CHANGE_USER:
            self._expect = _CHANGE_USER
        else:
            self._expect = _SINGLE

    def feed(self, data: Any, pos: int, end: int) -> tuple[int, Any]:
        conversation = self.conversation
        self.capture = CAPTURE_HANDSHAKE if conversation.phase is GREETING else CAPTURE
        while pos < end:
            self.idle = False
            pos, done = self._feed_packet(data, pos, end)
            if not done:
                return pos, None
            if conversation.phase is not COMMANDS:
                answer = self._connection_phase(bytes(self._first))
            else:
                answer = self._next(bytes(self._first))
            if answer is not None:
                self.idle = True
                return pos, answer
        return pos, None

    def _connection_phase(self, first: bytes) -> Answer:
        conversation = self.conversation
        head = first[:1]
        if conversation.phase is GREETING:
            if head == b"\xff":
                return Answer("err")  # the server refuses the connection and closes it
            if head != b"\x0a":
                raise ProtocolError(f"not a MySQL handshake: {first[:16]!r}")
            self._handshake(first)
            conversation.phase = AUTH
            return Answer("handshake")
        # Authentication: switch requests (0xfe) and more data (0x01) until OK or ERR.
        if head == b"\x00":
            conversation.phase = COMMANDS
            for flag, what in UNFOLLOWED.items():
                if (conversation.client_caps or 0) & conversation.server_caps & flag:
                    conversation.stream = what
            if conversation.extended_caps & MARIADB_CLIENT_CACHE_METADATA:
                conversation.stream = "metadata caching"
            return Answer("ok")
        if head == b"\xff":
            return Answer("err")
        return Answer("auth")

    def _handshake(self, payload: bytes) -> None:
        """The server's greeting (protocol 10): its capabilities."""
        nul = payload.find(b"\x00", 1)
        if nul < 0 or len(payload) < nul + 1 + 4 + 8 + 1 + 2:
            raise ProtocolError("MySQL: handshake too short")
        pos = nul + 1 + 4 + 8 + 1
        caps = int.from_bytes(payload[pos : pos + 2], "little")
        if len(payload) >= pos + 2 + 1 + 2 + 2:
            caps |= int.from_bytes(payload[pos + 5 : pos + 7], "little") << 16
        self.conversation.server_caps = caps

    def _status(self, first: bytes) -> int:
        """The status flags of an OK or EOF packet (0 when absent)."""
        if first[0] == 0xFE and not self.conversation.deprecate_eof:
            return int.from_bytes(first[3:5], "little") if len(first) >= 5 else 0
        _, pos = _lenenc(first, 1)
        _, pos = _lenenc(first, pos)
        return int.from_bytes(first[pos : pos + 2], "little") if len(first) >= pos + 2 else 0

    def _is_end(self, first: bytes) -> bool:
        """An EOF packet, or the OK packet that replaces it (CLIENT_DEPRECATE_EOF)."""
        return first[:1] == b"\xfe" and self._length < MAX_PAYLOAD

    def _next(self, first: bytes) -> Answer | None:
        """One logical packet of an answer; the answer when it is complete."""
        expect = self._expect
        head = first[0] if first else -1
        if expect is _SINGLE:
            return Answer("err" if head == 0xFF else "ok")
        if head == 0xFF and expect not in _DEFINITIONS:  # a definition never starts with 0xff
            self.conversation.infile = self.conversation.changing_user = False
            return Answer("err")
        if expect is _FIRST:
            if head == 0x00:
                return self._more(self._status(first), "ok")
            if head == 0xFB:
                self.conversation.infile = True
                self._expect = _INFILE
                return None
            count, _ = _lenenc(first, 0)
            if count == 0:
                raise ProtocolError("MySQL: result set with no columns")
            self._count = count
            self._expect = _COLUMNS
            return None
        if expect is _COLUMNS:
            self._count -= 1
            if self._count:
                return None
            if self._code == COM_STMT_PREPARE:
                if self.conversation.deprecate_eof:
                    return Answer("prepared")
                self._expect = _COLUMNS_EOF
                return None
            self._expect = _ROWS if self.conversation.deprecate_eof else _COLUMNS_EOF
            return None
        if expect is _COLUMNS_EOF:
            if not self._is_end(first):
                raise ProtocolError("MySQL: EOF expected after the column definitions")
            if self._code == COM_STMT_PREPARE:
                return Answer("prepared")
            if self._status(first) & SERVER_STATUS_CURSOR_EXISTS:
                return Answer("cursor")  # the rows come with COM_STMT_FETCH
            self._expect = _ROWS
            return None
        if expect is _ROWS:
            if self._is_end(first):
                if self._code in RESULTS:
                    return self._more(self._status(first), "result")
                return Answer("result")
            return None
        if expect is _INFILE:
            self.conversation.infile = False
            if head == 0x00:
                return self._more(self._status(first), "ok")
            raise ProtocolError("MySQL: OK or ERR expected after LOCAL INFILE data")
        if expect is _PREPARE:
            if head != 0x00 or len(first) < 12:
                raise ProtocolError("MySQL: bad answer to COM_STMT_PREPARE")
            self._columns = int.from_bytes(first[5:7], "little")
            params = int.from_bytes(first[7:9], "little")
            return self._definitions(params, _PARAMS)
        if expect is _PARAMS:
            self._count -= 1
            if self._count:
                return None
            if self.conversation.deprecate_eof:
                return self._definitions(self._columns, _COLUMNS)
            self._expect = _PARAMS_EOF
            return None
        if expect is _PARAMS_EOF:
            if not self._is_end(first):
                raise ProtocolError("MySQL: EOF expected after the parameter definitions")
            return self._definitions(self._columns, _COLUMNS)
        if expect is _LISTING:
            return Answer("fields") if self._is_end(first) else None
        if expect is _CHANGE_USER:
            if head == 0x00:
                self.conversation.changing_user = False
                return Answer("ok")
            self.conversation.changing_user = True  # switch request or more data: the
            return None  # client answers, then the server again
        raise AssertionError(expect)

    def _definitions(self, count: int, expect: int) -> Answer | None:
        """``count`` parameter or column definitions come next (prepare)."""
        if count:
            self._count = count
            self._expect = expect
            return None
        if expect is _PARAMS:
            return self._definitions(self._columns, _COLUMNS)
        return Answer("prepared")

    def _more(self, status: int, kind: str) -> Answer | None:
        """The end of one result: another follows when the status says so."""
        if status & SERVER_MORE_RESULTS_EXISTS:
            self._expect = _FIRST
            return None
        return Answer(kind)

    def feed_eof(self) -> None:
        return None


@Protocol.register
class MySQL(FramedProtocol):
    """MySQL and MariaDB: one command is one exchange.

    Packets are framed by their 3-byte length and sequence id, 16 MiB packets followed to the
    end of their logical packet. The handshake and the authentication pass untouched (no
    behavior applies to them); then each command packet and its whole answer (OK, ERR, result
    sets, several of them for multi-statements and procedures, LOCAL INFILE requests and the
    file the client sends, prepared statements, cursors' fetches) are one exchange; rows are
    counted through, never kept. With ``error`` the client gets an ERR packet (1105, HY000)
    with the sequence id its command expects. Sessions that use TLS, compression or metadata
    caching become a plain stream once those start; replication streams too. Traffic that is
    not MySQL ends the session.
    """

    name = "mysql"
    event_unit = (
        "One command packet and its whole answer (all its result sets, a LOCAL INFILE "
        "transfer); the handshake and the authentication are no events."
    )
    error_form = (
        "An ERR packet (1105, SQLSTATE HY000) with the sequence id the client expects "
        "(PyMySQL raises ``OperationalError``) and the server never runs the command (with "
        "``inject`` it does, and its answer is replaced). Commands that get no answer "
        "(COM_STMT_CLOSE, COM_QUIT) are dropped silently."
    )

    rule_fields = {
        "command": Field(
            "The command: query, prepare, execute, ping, init_db, quit ...", ignore_case=True
        ),
        "sql": Field(
            "The SQL text of a query or a prepare (its first 4096 bytes); a prepared "
            "statement's execute carries none"
        ),
        "statement": Field(
            "The SQL's first keyword, upper-cased: SELECT, INSERT, UPDATE, BEGIN ...",
            ignore_case=True,
        ),
    }
    request_name = ("command", "sql")

    def new_session_state(self, session: Any) -> Conversation:
        return Conversation()

    def framers(self, state: Conversation) -> tuple[CommandFramer, ResultFramer]:
        return CommandFramer(state), ResultFramer(state)

    def peek(self, state: Conversation, data: Any, pos: int, end: int) -> dict[str, str] | None:
        if end - pos < 5:
            return None
        length = data[pos] | data[pos + 1] << 8 | data[pos + 2] << 16
        code = data[pos + 4]
        fields = {"command": COMMAND_NAMES.get(code, f"0x{code:02x}")}
        if code not in WITH_SQL:
            return fields
        stop = pos + 4 + min(length, 1 + SQL_PEEK)
        if end < stop:
            return None
        start = pos + 5
        if code == COM_QUERY and (state.client_caps or 0) & state.server_caps & (
            CLIENT_QUERY_ATTRIBUTES
        ):
            # Query attributes come first: a parameter count and a parameter set count.
            payload = bytes(data[start:stop])
            try:
                count, at = _lenenc(payload, 0)
                _, at = _lenenc(payload, at)
            except ProtocolError:
                return fields
            if count:  # the attributes' values come before the text: it is not looked for
                return fields
            start += at
        sql = bytes(data[start:stop]).decode("utf-8", "replace")
        fields["sql"] = sql
        fields["statement"] = statement_type(sql)
        return fields

    def error_reply(
        self, state: Conversation, command: Any, answered: bool, forwarded: bool
    ) -> ErrorReply | None:
        if not isinstance(command, Command) or not answered:
            return None  # COM_STMT_CLOSE and the like: the client reads no answer
        payload = b"\xff" + ERROR_CODE.to_bytes(2, "little") + b"#" + ERROR_STATE + ERROR_MESSAGE
        header = len(payload).to_bytes(3, "little") + bytes(((command.seq + 1) & 0xFF,))
        return ErrorReply(header + payload)

    def request_end(self, state: Conversation, message: Any, forwarded: bool) -> Any:
        if self._streaming(state):
            return _STREAM
        if not isinstance(message, Command):
            return None  # the handshake
        if message.code in SILENT:
            return NO_ANSWER
        if message.code in STREAMING and forwarded:
            return _STREAM
        return None

    def answer_end(self, state: Conversation, command: Any, answer: Answer) -> Any:
        return _STREAMING_ANSWER if self._streaming(state) else None

    def _streaming(self, state: Conversation) -> bool:
        if state.stream:
            log.debug("MySQL session uses %s: a plain stream from now on", state.stream)
            return True
        return False


_STREAM = RequestVerdict(answered=False, stream=True)
_STREAMING_ANSWER = AnswerVerdict(stream=True)
