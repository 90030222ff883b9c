"""smtp: SMTP commands, replies and mail data, with pipelining and TLS pass-through."""

from __future__ import annotations

import types
from collections.abc import Mapping
from typing import Any

from vaurien.errors import ProtocolError
from vaurien.protocols import Protocol
from vaurien.protocols.framed import (
    UNSOLICITED,
    AnswerVerdict,
    End,
    ErrorReply,
    FramedProtocol,
    LineReader,
    RequestVerdict,
)
from vaurien.rules import NO_FIELDS, Field

MAX_LINE = 65536  # bytes in a command line (long AUTH lines included) or a reply line
MAX_CHUNK = 1 << 40  # bytes in one BDAT chunk
TLS_HANDSHAKE = 0x16  # the first byte of a TLS ClientHello record

# Content framer states (dot-stuffed mail data).
_LINE_START, _DOT, _DOT_CR, _MIDDLE = range(4)


class Command(End):
    """A command line read whole: ``name`` (uppercase verb), ``line`` (all of it)."""

    __slots__ = ("name", "line")

    def __init__(self, line: bytes) -> None:
        self.line = line
        words = line.split(None, 1)
        self.name = words[0].upper() if words else b""

    def __repr__(self) -> str:
        return f"<Command {self.name.decode(errors='replace')}>"


class MailData(End):
    """The mail data after DATA, up to and with the line holding a lone dot."""

    __slots__ = ()
    name = b"<data>"

    def __repr__(self) -> str:
        return "<MailData>"


class TLSStart(End):
    """The client opened with a TLS handshake (implicit TLS): what follows is opaque."""

    __slots__ = ()
    name = b"<tls>"

    def __repr__(self) -> str:
        return "<TLSStart>"


class Reply(End):
    """A reply read whole (all its lines): its three-digit ``code``."""

    __slots__ = ("code",)

    def __init__(self, code: int) -> None:
        self.code = code

    def __repr__(self) -> str:
        return f"<Reply {self.code}>"


class CommandFramer:
    """Frames what an SMTP client sends: command lines, the mail data after DATA (up to the
    line with a lone dot; dot-stuffed lines are data), and BDAT chunks (their line and the
    bytes it announces). A client that opens with a TLS handshake gets a :class:`TLSStart`.

    The framer reads commands until it is told, with ``expect_data()``, that the server
    accepted DATA (a 354 reply).
    """

    passive = False

    def __init__(self) -> None:
        self.idle = True
        self._lines = LineReader(MAX_LINE, "SMTP command line")
        self._started = False
        self._data = False  # mail data expected next
        self._in_data = False
        self._state = _LINE_START
        self._cr = False
        self._chunk = 0  # BDAT bytes still to come
        self._command: Command | None = None

    def expect_data(self) -> None:
        """The server accepted DATA: the next message is mail data."""
        self._data = True

    def peek(self, data: Any, pos: int, end: int) -> Mapping[str, str] | None:
        """The fields of the message that starts at ``data[pos]`` (see ``SMTP.peek``)."""
        if self._data or self._in_data:
            return _DATA_FIELDS
        if not self._started and data[pos] == TLS_HANDSHAKE:
            return _TLS_FIELDS
        eol = data.find(b"\n", pos, end)
        if eol < 0:
            return None if end - pos <= MAX_LINE else NO_FIELDS
        words = data[pos:eol].split(None, 1)
        return {"command": bytes(words[0]).upper().decode("latin-1")} if words else {}

    def feed(self, data: Any, pos: int, end: int) -> tuple[int, Any]:
        if not self._started:
            self._started = True
            if data[pos] == TLS_HANDSHAKE:
                return end, TLSStart()
        if self._in_data or (self.idle and self._data):
            self._data = False
            self._in_data = True
            self.idle = False
            return self._feed_data(data, pos, end)
        if self._chunk:
            take = min(self._chunk, end - pos)
            self._chunk -= take
            pos += take
            if self._chunk:
                return pos, None
            return pos, self._finish()
        self.idle = False
        line, pos = self._lines.take(data, pos, end)
        if line is None:
            return pos, None
        command = self._command = Command(line)
        if command.name == b"BDAT":
            words = line.split()
            if len(words) < 2 or not words[1].isdigit():
                raise ProtocolError(f"SMTP BDAT without a size: {line[:60]!r}")
            self._chunk = int(words[1])
            if self._chunk > MAX_CHUNK:
                raise ProtocolError(f"SMTP BDAT chunk too large: {self._chunk}")
            if self._chunk:
                return self.feed(data, pos, end) if pos < end else (pos, None)
        return pos, self._finish()

    def _feed_data(self, data: Any, pos: int, end: int) -> tuple[int, Any]:
        state = self._state
        while pos < end:
            if state is _MIDDLE:
                i = data.find(b"\n", pos, end)
                if i < 0:
                    self._cr = data[end - 1] == 13
                    pos = end
                    break
                before = data[i - 1] == 13 if i > pos else self._cr
                pos = i + 1
                if before:
                    state = _LINE_START
                continue
            byte = data[pos]
            pos += 1
            if state is _LINE_START:
                state = _DOT if byte == 0x2E else _MIDDLE
            elif state is _DOT:
                state = _DOT_CR if byte == 13 else _MIDDLE
            else:  # _DOT_CR
                if byte == 10:
                    self._state = _LINE_START
                    self._in_data = False
                    self.idle = True
                    return pos, MailData()
                state = _MIDDLE
            self._cr = byte == 13
        self._state = state
        return pos, None

    def _finish(self) -> Command:
        command = self._command
        self._command = None
        self.idle = True
        return command

    def feed_eof(self) -> None:
        return None


class ReplyFramer:
    """Frames what an SMTP server sends: replies of one or more lines (``250-`` lines go on,
    a ``250 `` line ends the reply). Returns a :class:`Reply` at the end of each."""

    def __init__(self) -> None:
        self.idle = True
        self._lines = LineReader(MAX_LINE, "SMTP reply line")
        self._code: bytes | None = None

    def begin(self, request: Any) -> None:
        """Nothing to know: a reply's form does not depend on the command."""

    def feed(self, data: Any, pos: int, end: int) -> tuple[int, Any]:
        while pos < end:
            self.idle = False
            line, pos = self._lines.take(data, pos, end)
            if line is None:
                return pos, None
            code = line[:3]
            if not code.isdigit() or (self._code is not None and code != self._code):
                raise ProtocolError(f"not an SMTP reply: {line[:60]!r}")
            self._code = code
            if line[3:4] != b"-":
                self._code = None
                self.idle = True
                return pos, Reply(int(code))
        return pos, None

    def feed_eof(self) -> None:
        return None


class SMTPState:
    """What the smtp protocol knows about one session beyond its exchanges."""

    __slots__ = ("greeted", "commands")

    def __init__(self) -> None:
        self.greeted = False  # the server's first reply, its greeting, went by
        self.commands: CommandFramer | None = None  # told when mail data comes next


@Protocol.register
class SMTP(FramedProtocol):
    """SMTP: one command (or one message's data) is one exchange.

    Commands and replies of any number of lines are matched in order, pipelined commands
    (RFC 2920) included; after a 354 the mail data is read up to the lone dot, dot-stuffed
    lines counted through; BDAT chunks are counted through; AUTH exchanges go line by line.
    The greeting passes as it comes. After STARTTLS is accepted (220), or when the client
    opens with a TLS handshake (implicit TLS), the connection is an opaque stream, a behavior
    picked for each chunk as with ``tcp``; a proxy that terminates implicit TLS itself
    (``--tls-cert`` with ``--backend-tls``) sees the commands in clear. With
    ``error`` the client gets ``451 4.3.0``; an error on the mail data also ends the
    connection (the server, left waiting for the data, drops the message); ``inject`` on DATA
    or STARTTLS (whose answer changes what follows) lets the command pass untouched. Traffic
    that is not SMTP ends the session.
    """

    name = "smtp"
    event_unit = "One command line, or one message's data up to the lone dot, and its reply."
    error_form = (
        "``451 4.3.0`` in place of the reply (smtplib raises ``SMTPResponseException``: "
        "``SMTPSenderRefused``, ``SMTPDataError`` ...) and the server never sees the command; "
        "an error on the mail data also ends the connection, so the server drops the message."
    )

    rule_fields = {
        "command": Field(
            "The command's verb: EHLO, MAIL, RCPT, DATA ...; a message's data after DATA is "
            "``<data>``, a client's TLS handshake ``<tls>``",
            ignore_case=True,
        ),
    }
    request_name = ("command",)

    def request_framer(self) -> CommandFramer:
        return CommandFramer()

    def answer_framer(self) -> ReplyFramer:
        return ReplyFramer()

    def new_session_state(self, session: Any) -> SMTPState:
        return SMTPState()

    def peek(self, state: SMTPState, data: Any, pos: int, end: int) -> Mapping[str, str] | None:
        return state.commands.peek(data, pos, end)

    def framers(self, state: SMTPState) -> tuple[CommandFramer, ReplyFramer]:
        state.commands = CommandFramer()
        return state.commands, ReplyFramer()

    def error_reply(
        self, state: SMTPState, request: Any, answered: bool, forwarded: bool
    ) -> ErrorReply | None:
        if isinstance(request, TLSStart):
            return None
        if isinstance(request, MailData) and not forwarded:
            # The server still waits for the data: only the end of the connection gets it out
            # of there, and makes it drop the message.
            return _ERROR_AND_CLOSE
        return _ERROR

    def request_end(self, state: SMTPState, message: Any, forwarded: bool) -> Any:
        if isinstance(message, TLSStart):
            return _TLS
        if message.name in (b"DATA", b"STARTTLS"):
            # What the client sends next depends on the reply, and replacing a 354 or a 220
            # would desynchronize the session.
            return _GATE
        return None

    def answer_end(self, state: SMTPState, request: Any, reply: Reply) -> Any:
        if not state.greeted:
            state.greeted = True
            return UNSOLICITED
        if request is None:
            return UNSOLICITED
        if request.name == b"DATA" and reply.code == 354:
            state.commands.expect_data()
        elif request.name == b"STARTTLS" and reply.code == 220:
            return _TLS_ACCEPTED
        return None


_DATA_FIELDS = types.MappingProxyType({"command": MailData.name.decode()})
_TLS_FIELDS = types.MappingProxyType({"command": TLSStart.name.decode()})
_ERROR = ErrorReply(b"451 4.3.0 Error injected by vaurien, try again later\r\n")
_ERROR_AND_CLOSE = ErrorReply(_ERROR.data, close=True)
_TLS = RequestVerdict(answered=False, stream=True)
_GATE = RequestVerdict(gate=True, real_answer=True)
_TLS_ACCEPTED = AnswerVerdict(stream=True)
