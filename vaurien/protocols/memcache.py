"""memcache: the memcached text protocol, classic and meta commands."""

from __future__ import annotations

from typing import Any

from vaurien.errors import ProtocolError
from vaurien.protocols import Protocol
from vaurien.protocols.framed import (
    HOLD,
    NO_ANSWER,
    PARTIAL,
    AnswerVerdict,
    End,
    ErrorReply,
    FramedProtocol,
    Head,
    LineReader,
    RequestVerdict,
)
from vaurien.rules import NO_FIELDS, Field

MAX_LINE = 8192  # bytes in a command or answer line (memcached allows 2048 for most)
MAX_VALUE = 1 << 40  # bytes in one data block

#: Commands followed by a data block, and the position of its length among their words.
STORAGE = {b"set": 4, b"add": 4, b"replace": 4, b"append": 4, b"prepend": 4, b"cas": 4, b"ms": 2}
#: Commands whose answer is a series of lines ended by END (or by an error line).
LISTS = frozenset((b"get", b"gets", b"gat", b"gats", b"stats"))
#: Lines that end a list answer besides END.
LIST_ENDS = (b"END", b"RESET", b"OK", b"ERROR", b"CLIENT_ERROR", b"SERVER_ERROR", b"EN", b"BUSY")
#: Meta commands (they take the q flag).
META = frozenset((b"mg", b"ms", b"md", b"ma", b"mn", b"me"))
#: Commands that name no key.
KEYLESS = frozenset(
    (b"stats", b"version", b"flush_all", b"verbosity", b"quit", b"watch", b"lru_crawler", b"mn")
    + (b"shutdown", b"cache_memlimit", b"slabs", b"lru", b"misbehave", b"debugtime")
)
#: Commands whose first key comes after an expiration time.
KEY_SECOND = frozenset((b"gat", b"gats"))
#: What the proxy sends after a quiet meta command: its answer marks where that command's ends.
SENTINEL = b"mn\r\n"

_LINE, _DATA, _CRLF = range(3)


def _length(word: bytes, line: bytes) -> int:
    if not word.isdigit():
        raise ProtocolError(f"memcache data length is not a number in {line[:60]!r}")
    size = int(word)
    if size > MAX_VALUE:
        raise ProtocolError(f"memcache data block too large: {size}")
    return size


class Command(End):
    """A command read whole: ``name`` (lowercase), ``noreply``, ``quiet`` (meta ``q`` flag),
    ``listing`` (its answer is a list ended by END)."""

    __slots__ = ("name", "noreply", "quiet", "listing")

    def __init__(self, words: list[bytes]) -> None:
        name = words[0].lower() if words else b""
        self.name = name
        self.noreply = len(words) > 1 and words[-1] == b"noreply"
        self.quiet = name in META and b"q" in words[2:]
        self.listing = name in LISTS or (
            name == b"lru_crawler" and len(words) > 1 and words[1] in (b"metadump", b"mgdump")
        )

    def __repr__(self) -> str:
        flags = " noreply" if self.noreply else " quiet" if self.quiet else ""
        return f"<Command {self.name.decode(errors='replace')}{flags}>"


class Answer(End):
    """An answer read whole; ``first`` is its first line's first word (``VALUE``, ``MN`` ...)."""

    __slots__ = ("first",)

    def __init__(self, first: bytes) -> None:
        self.first = first

    def __repr__(self) -> str:
        return f"<Answer {self.first.decode(errors='replace')}>"


class AnswerHead(Head):
    """The first line of an answer (held until complete): ``first`` is its first word."""

    __slots__ = ("first",)

    def __init__(self, raw: bytes, held: int, first: bytes) -> None:
        super().__init__(raw, held)
        self.first = first

    def __repr__(self) -> str:
        return f"<AnswerHead {self.first.decode(errors='replace')} end={self.end}>"


class _Blocks:
    """Counting through a data block and the CRLF after it.

    The CRLF is checked in answers; in commands it is skipped unchecked, as memcached does
    (it answers a bad one with an error and reads on after it).
    """

    strict = True

    def _feed_block(self, data: Any, pos: int, end: int) -> int:
        if self._state is _DATA:
            take = min(self._skip, end - pos)
            pos += take
            self._skip -= take
            if self._skip:
                return pos
            self._state = _CRLF
            self._crlf = 2
        while self._crlf and pos < end:
            if self.strict and data[pos] != (13 if self._crlf == 2 else 10):
                raise ProtocolError("memcache data block not followed by CRLF")
            pos += 1
            self._crlf -= 1
        if not self._crlf:
            self._state = _LINE
        return pos

    def _start_block(self, size: int) -> None:
        self._skip = size
        self._crlf = 2
        self._state = _DATA if size else _CRLF


class CommandFramer(_Blocks):
    """Frames what a memcached client sends: command lines and the data blocks after the
    storage commands (set, add, replace, append, prepend, cas, ms). Returns a
    :class:`Command` at the end of each."""

    passive = False
    strict = False

    def __init__(self) -> None:
        self.idle = True
        self._lines = LineReader(MAX_LINE, "memcache command line")
        self._state = _LINE
        self._skip = self._crlf = 0
        self._command: Command | None = None

    def feed(self, data: Any, pos: int, end: int) -> tuple[int, Any]:
        if self._state is not _LINE:
            pos = self._feed_block(data, pos, end)
            if self._state is not _LINE:
                return pos, None
            return pos, self._finish()
        if self.idle and data[pos] == 0x80:
            raise ProtocolError("memcache binary protocol: only the text protocol is supported")
        self.idle = False
        line, pos = self._lines.take(data, pos, end)
        if line is None:
            return pos, None
        words = line.split()
        command = self._command = Command(words)
        where = STORAGE.get(command.name)
        if where is None:
            return pos, self._finish()
        if len(words) <= where:
            raise ProtocolError(f"memcache {command.name.decode()} without a length: {line[:60]!r}")
        self._start_block(_length(words[where], line))
        if pos == end:
            return pos, None
        return self.feed(data, pos, end)

    def _finish(self) -> Command:
        command = self._command
        self._command = None
        self.idle = True
        return command

    def feed_eof(self) -> None:
        return None


class AnswerFramer(_Blocks):
    """Frames what memcached sends, knowing the command each answer is for (``begin``).

    An answer is one line (STORED, a number, HD ...), a value (``VA`` and its data block), or,
    for get, gets, gat, gats and stats, a list of lines and values ended by END. Each answer's
    first line is returned as an :class:`AnswerHead` (so that the proxy can see what it is
    before it passes), its end as an :class:`Answer`.
    """

    def __init__(self) -> None:
        self.idle = True
        self._lines = LineReader(MAX_LINE, "memcache answer line")
        self._state = _LINE
        self._skip = self._crlf = 0
        self._listing = False
        self._first: bytes | None = None

    def begin(self, request: Command | None) -> None:
        self._listing = request is not None and request.listing

    def feed(self, data: Any, pos: int, end: int) -> tuple[int, Any]:
        if self.idle:
            whole = self._whole(data, pos, end)
            if whole is not None:
                return whole
        while pos < end:
            if self._state is not _LINE:
                pos = self._feed_block(data, pos, end)
                if self._state is not _LINE:
                    return pos, None
                if not self._listing:
                    return pos, self._finish()
                continue
            self.idle = False
            held = self._lines.held
            line, pos = self._lines.take(data, pos, end)
            if line is None:
                return pos, HOLD if self._first is None else None  # a first line is kept whole
            words = line.split()
            word = words[0] if words else b""
            head = None
            if self._first is None:
                self._first = word
                head = AnswerHead(line, held, word)
            if word in (b"VALUE", b"VA"):
                where = 3 if word == b"VALUE" else 1
                if len(words) <= where:
                    raise ProtocolError(f"memcache value without a length: {line[:60]!r}")
                self._start_block(_length(words[where], line))
            elif not self._listing or word in LIST_ENDS:
                if head is not None:
                    head.end = True
                    self._finish()
                    return pos, head
                return pos, self._finish()
            if head is not None:
                return pos, head
        return pos, None

    def _whole(self, data: Any, pos: int, end: int) -> tuple[int, Any] | None:
        """The usual answers, framed in one go when they are all in ``data[pos:end]``: a
        line (STORED, a number ...) or a list of values ended by END. None for anything else
        (the general path frames it, and reports what is wrong)."""
        limit = min(end, pos + MAX_LINE)
        eol = data.find(b"\n", pos, limit)
        if eol < 0:
            return None
        words = data[pos:eol].split(None, 4)
        first = bytes(words[0]) if words else b""
        if not self._listing or first != b"VALUE":
            if first in _NOT_A_LINE or (self._listing and first not in LIST_ENDS):
                return None
            head = AnswerHead(bytes(data[pos : eol + 1]), 0, first)
            head.end = True  # a one-line answer: its head is all of it
            return eol + 1, head
        while words and words[0] == b"VALUE":
            if len(words) < 4 or not words[3].isdigit():
                return None
            at = eol + 1 + int(words[3])
            if data[at : at + 2] != b"\r\n":
                return None
            at += 2
            eol = data.find(b"\n", at, min(end, at + MAX_LINE))
            if eol < 0:
                return None
            words = data[at:eol].split(None, 4)
        if not words or words[0] != b"END":
            return None
        return eol + 1, Answer(first)

    def _finish(self) -> Answer:
        answer = Answer(self._first or b"")
        self._first = None
        self.idle = True
        return answer

    def feed_eof(self) -> None:
        return None


@Protocol.register
class Memcache(FramedProtocol):
    """The memcached text protocol: one command is one exchange.

    Storage commands (set, add, replace, append, prepend, cas) and their data blocks,
    get/gets/gat/gats with any number of keys, incr/decr, delete, touch, stats, version, flush_all
    and the meta commands (mg, ms, md, ma, mn, me); data blocks of any size are counted through.
    ``noreply`` commands get no answer. After a quiet meta command (flag ``q``) the proxy sends
    the server an ``mn`` and removes its ``MN`` from the answers, so it knows where that
    command's (possibly empty) answer ends. With ``error`` the client gets ``SERVER_ERROR``.
    The binary protocol and traffic that is not memcache end the session.
    """

    name = "memcache"
    event_unit = "One command, with its data block, and its answer."
    error_form = (
        "``SERVER_ERROR error injected by vaurien`` in place of the answer (pymemcache raises "
        "``MemcacheServerError``) and memcached never sees the command (with ``inject`` it "
        "does, and its answer is replaced). A ``noreply`` command is dropped without a word."
    )

    skims_fields = True
    rule_fields = {
        "command": Field("The command's name: get, set, delete, mg ...", ignore_case=True),
        "key": Field("The command's first key"),
    }
    request_name = ("command", "key")

    def request_framer(self) -> CommandFramer:
        return CommandFramer()

    def answer_framer(self) -> AnswerFramer:
        return AnswerFramer()

    def peek(self, state: Any, data: Any, pos: int, end: int) -> dict[str, str] | None:
        eol = data.find(b"\n", pos, min(end, pos + MAX_LINE))
        if eol < 0:
            return None if end - pos < MAX_LINE and data[pos] != 0x80 else NO_FIELDS
        return _command_fields(bytes(data[pos:eol]).split())

    def error_reply(
        self, state: Any, command: Command, answered: bool, forwarded: bool
    ) -> ErrorReply | None:
        if not answered:
            return None  # noreply: the client reads no answer
        return _ERROR

    def skim(
        self,
        state: Any,
        data: Any,
        pos: int,
        end: int,
        untaken: Any = None,
        most: int | None = None,
    ) -> tuple[int, int, Any]:
        first = None
        count = 0
        passing: dict[bytes, bool] = {}  # command name -> whether the name alone lets it pass
        while pos < end and count != most:
            eol = data.find(b"\n", pos, min(end, pos + MAX_LINE))
            if eol < 0 or data[pos] == 0x80:
                break
            words = bytes(data[pos:eol]).split()
            if not words:
                break
            name = words[0].lower()
            if name in _NOTED or words[-1] == b"noreply" or (name in META and b"q" in words[2:]):
                break
            command = Command(words)
            if first is not None and command.listing is not first.listing:
                break  # its answer frames otherwise: the run ends here
            if untaken is not None:
                passes = passing.get(name)
                if passes is None:
                    passes = passing[name] = untaken.rejected("command", name.decode("latin-1"))
                if not passes and not untaken(_command_fields(words)):
                    break  # a rule takes it: it gets a pick of its own
            at = eol + 1
            where = STORAGE.get(name)
            if where is not None:
                if len(words) <= where or not words[where].isdigit():
                    break
                at += int(words[where]) + 2  # the CRLF after the data is skipped unchecked
                if at > end:
                    break
            if first is None:
                first = command
            count += 1
            pos = at
        return pos, count, first

    def skim_answers(
        self, state: Any, request: Any, data: Any, pos: int, end: int, most: int
    ) -> tuple[int, int]:
        framer = AnswerFramer()
        framer.begin(request)
        count = 0
        while count < most and pos < end:
            whole = framer._whole(data, pos, end)
            if whole is None or whole[1].first == b"MN":
                break
            pos = whole[0]
            count += 1
        return pos, count

    def request_end(self, state: Any, command: Command, forwarded: bool) -> RequestVerdict | None:
        if command.noreply or command.name == b"quit":
            return NO_ANSWER
        if command.name == b"watch" and forwarded:
            return _WATCHING  # log lines follow, for as long as the connection lasts
        if command.quiet and forwarded:
            return _SENTINEL_AFTER
        return None

    def answer_head(
        self, state: Any, command: Command | None, head: AnswerHead
    ) -> AnswerVerdict | None:
        if head.first == b"MN" and command is not None and command.quiet:
            return _HIDDEN  # the proxy's own mn: the client never sent it
        return None

    def answer_end(self, state: Any, command: Command | None, answer: Answer) -> Any:
        if command is not None and command.quiet and answer.first != b"MN":
            return PARTIAL  # the quiet command's own answer; the MN comes next
        return None


def _command_fields(words: list[bytes]) -> dict[str, str]:
    """The fields of a command from the words of its line."""
    if not words:
        return {}
    name = words[0].lower()
    fields = {"command": name.decode("latin-1")}
    where = 0 if name in KEYLESS else 2 if name in KEY_SECOND else 1
    if 0 < where < len(words):
        fields["key"] = words[where].decode("utf-8", "replace")
    return fields


#: First words of answers that the fast path leaves to the general one.
_NOT_A_LINE = frozenset((b"VALUE", b"VA", b"MN", b""))
#: Commands whose answers the session must see one by one (the others are framed in runs).
_NOTED = frozenset((b"quit", b"watch", b"lru_crawler"))

_ERROR = ErrorReply(b"SERVER_ERROR error injected by vaurien\r\n")
_WATCHING = RequestVerdict(answered=False, stream=True)
_SENTINEL_AFTER = RequestVerdict(send=SENTINEL)
_HIDDEN = AnswerVerdict(hide=True)
