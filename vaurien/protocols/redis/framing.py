"""The framing of RESP2 and RESP3: commands and replies, and the runs of them a session frames
in one match."""

from __future__ import annotations

import re
from typing import Any

from vaurien.errors import ProtocolError
from vaurien.protocols.framed import (
    End,
    LineReader,
)

MAX_LINE = 64 * 1024  # bytes; Redis's own limit for an inline command
MAX_COUNT = 1 << 31  # elements in one array
MAX_LENGTH = 1 << 40  # bytes in one bulk string
CAPTURED_ARGS = 3  # the first arguments kept (command, subcommand, its argument)
CAPTURED_SIZE = 64  # bytes; longer arguments are counted through, not kept

#: The first element of the pub/sub messages and confirmations a subscribed client receives.
PUBSUB_KINDS = frozenset(
    (
        b"message",
        b"pmessage",
        b"smessage",
        b"subscribe",
        b"psubscribe",
        b"ssubscribe",
        b"unsubscribe",
        b"punsubscribe",
        b"sunsubscribe",
    )
)
SUBSCRIBE_COMMANDS = frozenset(
    (b"subscribe", b"psubscribe", b"ssubscribe", b"unsubscribe", b"punsubscribe", b"sunsubscribe")
)

# Framer states.
_LINE, _DATA, _CRLF, _CHUNK = range(4)

# The usual shapes, framed at once when a whole message is in one read (the fast paths).
ARRAY_HEAD = re.compile(rb"\*([1-9][0-9]{0,9})\r\n")
BULK_HEAD = re.compile(rb"\$(0|[1-9][0-9]{0,12})\r\n")
_NULL_OR_BULK = re.compile(rb"\$(-1|0|[1-9][0-9]{0,12})\r\n")


def _integer(text: bytes, what: str) -> int:
    """``text`` as a decimal integer, strictly (no spaces, no underscores)."""
    digits = text[1:] if text[:1] == b"-" else text
    if not digits.isdigit():
        raise ProtocolError(f"Redis {what} is not a number: {bytes(text[:40])!r}")
    return int(text)


class Command(End):
    """A command read whole: ``name`` (lowercase), its first few short arguments, ``argc``."""

    __slots__ = ("name", "args", "argc")

    def __init__(self, args: list[bytes], argc: int) -> None:
        self.args = args
        self.argc = argc
        self.name = args[0].lower() if args else b""

    def __repr__(self) -> str:
        return f"<Command {self.name.decode(errors='replace')} argc={self.argc}>"


class Reply(End):
    """A reply read whole: its RESP ``type`` byte (``b"*"``, ``b">"``, ``b"-"`` ...) and, for
    an aggregate, its first element when that is a short string (lowercase)."""

    __slots__ = ("type", "first")

    def __init__(self, type_: bytes, first: bytes | None) -> None:
        self.type = type_
        self.first = first

    def __repr__(self) -> str:
        return f"<Reply {self.type!r} {self.first!r}>"


class CommandFramer:
    """Frames what a Redis client sends: RESP arrays of bulk strings, and inline commands.

    Returns a :class:`Command` at the end of each one. Bulk strings are counted through; only
    the first few short arguments are kept.
    """

    passive = False
    strict = False  # Redis skips the CRLF after a bulk string unchecked

    def __init__(self) -> None:
        self.idle = True
        self._lines = LineReader(MAX_LINE, "Redis command line")
        self._state = _LINE
        self._left = 0  # bulk strings still to come in the array
        self._skip = 0  # bytes of the bulk string in progress still to come
        self._crlf = 0  # bytes of the CRLF after it still to come
        self._args: list[bytes] = []
        self._argc = 0
        self._capture: bytearray | None = None

    def feed(self, data: Any, pos: int, end: int) -> tuple[int, Any]:
        if self.idle:
            whole = self._whole(data, pos, end)
            if whole is not None:
                return whole
        while pos < end:
            state = self._state
            if state is _DATA:
                pos = _count_bulk(self, data, pos, end)
                if self._skip:
                    return pos, None
                continue
            if state is _CRLF:
                pos = _expect_crlf(self, data, pos, end)
                if self._crlf:
                    return pos, None
                if self._argc - self._left < CAPTURED_ARGS:
                    capture = self._capture
                    self._args.append(bytes(capture) if capture is not None else b"")
                    self._capture = None
                self._state = _LINE
                self._left -= 1
                if not self._left:
                    return pos, self._finish()
                continue
            self.idle = False
            line, pos = self._lines.take(data, pos, end)
            if line is None:
                return pos, None
            if self._left:
                if line[:1] != b"$":
                    raise ProtocolError(f"Redis expected a bulk string, got {line[:40]!r}")
                size = _integer(line[1:].rstrip(b"\r\n"), "bulk length")
                if not 0 <= size <= MAX_LENGTH:
                    raise ProtocolError(f"Redis bulk length out of range: {size}")
                if self._argc - self._left < CAPTURED_ARGS and size <= CAPTURED_SIZE:
                    self._capture = bytearray()
                self._skip = size
                self._state = _DATA if size else _CRLF
                self._crlf = 2
                continue
            if line[:1] == b"*":
                count = _integer(line[1:].rstrip(b"\r\n"), "array length")
                if count > MAX_COUNT:
                    raise ProtocolError(f"Redis array too long: {count}")
                if count <= 0:
                    return pos, self._finish()
                self._left = self._argc = count
                continue
            # An inline command: words separated by spaces.
            words = line.split()
            self._argc = len(words)
            self._args = [bytes(w) for w in words[:CAPTURED_ARGS]]
            return pos, self._finish()
        return pos, None

    def _whole(self, data: Any, pos: int, end: int) -> tuple[int, Command] | None:
        """A command array that is all in ``data[pos:end]``, framed in one go; None for
        anything else (the general path frames it, and reports what is wrong)."""
        match = ARRAY_HEAD.match(data, pos, end)
        if match is None:
            return None
        argc = int(match[1])
        if argc > MAX_COUNT:
            return None
        at = match.end()
        args = []
        bulk = BULK_HEAD.match
        for index in range(argc):
            match = bulk(data, at, end)
            if match is None:
                return None
            start = match.end()
            size = int(match[1])
            at = start + size + 2  # Redis skips the CRLF after a bulk string unchecked
            if at > end:
                return None
            if index < CAPTURED_ARGS:
                args.append(bytes(data[start : start + size]) if size <= CAPTURED_SIZE else b"")
        return at, Command(args, argc)

    def _finish(self) -> Command:
        command = Command(self._args, self._argc)
        self._args = []
        self._argc = 0
        self._left = 0
        self.idle = True
        return command

    def feed_eof(self) -> None:
        return None


class ReplyFramer:
    """Frames what a Redis server sends: replies of every RESP2 and RESP3 type.

    Aggregates nest to any depth, attributes (``|``) annotate the value that follows them,
    streamed strings (``$?``) and aggregates (``*?`` ... ``.``) are followed to their end, bulk
    strings are counted through. Returns a :class:`Reply` at the end of each top-level value.
    """

    strict = True

    def __init__(self) -> None:
        self.idle = True
        self._lines = LineReader(MAX_LINE, "Redis reply line")
        self._state = _LINE
        # Per open aggregate: [elements left (None: streamed), is an attribute, elements in all]
        self._stack: list[list[Any]] = []
        self._skip = 0
        self._crlf = 0
        self._chunked = False  # inside a streamed string
        self._type: bytes | None = None
        self._first: bytes | None = None
        self._capture: bytearray | None = None

    def begin(self, request: Any) -> None:
        """Nothing to know: a reply's form does not depend on the command."""

    def feed(self, data: Any, pos: int, end: int) -> tuple[int, Any]:
        if self.idle:
            whole = whole_reply(data, pos, end)
            if whole is not None:
                return whole
        while pos < end:
            state = self._state
            if state is _DATA:
                pos = _count_bulk(self, data, pos, end)
                if self._skip:
                    return pos, None
                continue
            if state is _CRLF:
                pos = _expect_crlf(self, data, pos, end)
                if self._crlf:
                    return pos, None
                if self._chunked:
                    self._state = _CHUNK
                    continue
                if self._capture is not None:
                    self._first = bytes(self._capture).lower()
                    self._capture = None
                self._state = _LINE
                if self._value_done():
                    return pos, self._finish()
                continue
            self.idle = False
            line, pos = self._lines.take(data, pos, end)
            if line is None:
                return pos, None
            if self._line(line):
                return pos, self._finish()
        return pos, None

    def _line(self, line: bytes) -> bool:
        """One header line; true when it completes the top-level value."""
        kind = line[:1]
        body = line[1:].rstrip(b"\r\n")
        stack = self._stack
        if self._state is _CHUNK:  # a streamed string: ;<length> parts until ;0
            if kind != b";":
                raise ProtocolError(f"Redis streamed string part expected, got {line[:40]!r}")
            size = _integer(body, "string part length")
            if size == 0:
                self._chunked = False
                self._state = _LINE
                return self._value_done()
            if size > MAX_LENGTH:
                raise ProtocolError(f"Redis string part too long: {size}")
            self._skip = size
            self._state = _DATA
            return False
        first = (
            len(stack) == 1
            and stack[0][0] == stack[0][2]
            and not stack[0][1]
            and self._type in (b"*", b">")
        )
        if not stack and kind != b"|":
            self._type = kind
        if kind in _SIMPLE:
            if first and kind == b"+" and len(body) <= CAPTURED_SIZE:
                self._first = bytes(body).lower()
            return self._value_done()
        if kind in _BLOB:
            if body == b"?":
                self._chunked = True
                self._state = _CHUNK
                return False
            size = _integer(body, "bulk length")
            if size < 0:
                return self._value_done()  # a null
            if size > MAX_LENGTH:
                raise ProtocolError(f"Redis bulk length out of range: {size}")
            if first and size <= CAPTURED_SIZE:
                self._capture = bytearray()
            self._skip = size
            self._state = _DATA if size else _CRLF
            self._crlf = 2
            return False
        if kind in _AGGREGATE:
            attribute = kind == b"|"
            if body == b"?":
                stack.append([None, attribute, None])
                return False
            count = _integer(body, "aggregate length")
            if count > MAX_COUNT:
                raise ProtocolError(f"Redis aggregate too long: {count}")
            if count <= 0:
                return False if attribute else self._value_done()
            count *= 2 if kind in b"%|" else 1
            stack.append([count, attribute, count])
            return False
        if kind == b".":
            if not stack or stack[-1][0] is not None:
                raise ProtocolError("Redis end of a streamed aggregate outside of one")
            attribute = stack.pop()[1]
            return False if attribute else self._value_done()
        raise ProtocolError(f"not a Redis reply: {line[:40]!r}")

    def _value_done(self) -> bool:
        """A value ended: count it in its aggregate; true when the top-level value is done."""
        stack = self._stack
        while stack:
            top = stack[-1]
            if top[0] is None:  # a streamed aggregate ends with "."
                return False
            top[0] -= 1
            if top[0]:
                return False
            stack.pop()
            if top[1]:  # an attribute: the value it annotates comes next
                return False
        return True

    def _finish(self) -> Reply:
        reply = Reply(self._type or b"", self._first)
        self._type = None
        self._first = None
        self.idle = True
        return reply

    def feed_eof(self) -> None:
        return None


_SIMPLE = frozenset((b"+", b"-", b":", b"_", b",", b"#", b"("))
#: A top-level reply of each simple type, and a top-level bulk string: they carry nothing else.
_PLAIN_REPLIES = {kind[0]: Reply(kind, None) for kind in (*_SIMPLE, b"$")}


def whole_reply(data: Any, pos: int, end: int) -> tuple[int, Reply] | None:
    """A simple value or a bulk string that is all in ``data[pos:end]``, framed in one go;
    None for anything else (the general path frames it, and reports what is wrong)."""
    kind = data[pos]
    if kind == 36:  # "$"
        match = _NULL_OR_BULK.match(data, pos, end)
        if match is None:
            return None
        size = int(match[1])
        at = match.end()
        if size >= 0:
            at += size
            if data[at : at + 2] != b"\r\n":
                return None
            at += 2
        return at, _PLAIN_REPLIES[kind]
    reply = _PLAIN_REPLIES.get(kind)
    if reply is None:
        return None
    at = data.find(b"\n", pos, min(end, pos + MAX_LINE))
    if at < 0:
        return None
    return at + 1, reply


SIMPLE_KINDS = frozenset(kind[0] for kind in _SIMPLE)
#: A run of simple values: a line each, no longer than whole_reply takes one.
SIMPLE_RUN = re.compile(rb"(?:[-+:_,#(][^\n]{0,%d}\n)+" % (MAX_LINE - 2))
_BLOB = frozenset((b"$", b"!", b"="))
_AGGREGATE = frozenset((b"*", b"~", b">", b"%", b"|"))


def _count_bulk(framer: Any, data: Any, pos: int, end: int) -> int:
    """Count through the bulk string in progress (keeping it if the framer captures it); once
    it is all there, the CRLF after it is next. Returns the position reached."""
    take = min(framer._skip, end - pos)
    if framer._capture is not None:
        framer._capture += data[pos : pos + take]
    pos += take
    framer._skip -= take
    if not framer._skip:
        framer._state = _CRLF
        framer._crlf = 2
    return pos


def _expect_crlf(framer: Any, data: Any, pos: int, end: int) -> int:
    """Count through the CRLF after a bulk string, byte by byte as it arrives.

    Replies must have it; in commands Redis skips two bytes unchecked, and so does the framer.
    """
    while framer._crlf and pos < end:
        expected = 13 if framer._crlf == 2 else 10
        if framer.strict and data[pos] != expected:
            raise ProtocolError("Redis bulk string not followed by CRLF")
        pos += 1
        framer._crlf -= 1
    return pos


class RedisState:
    """What the redis protocol knows about one session beyond its exchanges."""

    __slots__ = ("pubsub", "replies_off", "skip_next", "shapes", "last_shape")

    def __init__(self) -> None:
        self.pubsub = False  # the client subscribed: pub/sub messages may come at any time
        self.replies_off = False  # CLIENT REPLY OFF
        self.skip_next = False  # CLIENT REPLY SKIP
        # A shape -> the pattern of a run of messages of that shape (see skim, skim_answers)
        self.shapes: dict[tuple, re.Pattern[bytes]] = {}
        # The last shape of command skimmed: its pattern, its size, the command, and the
        # rules' test that let it pass (see Redis.skim).
        self.last_shape: tuple[re.Pattern[bytes], int, Any, Any] | None = None


SHAPES = 32  # patterns of command shapes a session keeps
SHAPED_SIZE = 4096  # bytes; longer commands are skimmed one by one (copying dominates them)
SHAPED_ARGS = 16  # arguments; commands with more are skimmed one by one


def shape_pattern(
    shapes: dict[tuple, re.Pattern[bytes]], name: bytes, sizes: list[int]
) -> re.Pattern[bytes]:
    """The pattern of a run of whole commands of the shape of one just framed (``name`` as
    sent, bulk lengths ``sizes``)."""
    return _pattern(shapes, (name, *sizes), _shape_run)


def same_bulk(
    shapes: dict[tuple, re.Pattern[bytes]], data: Any, pos: int, at: int, end: int
) -> int:
    """Where the run of whole bulk strings of the length of the one at ``data[pos:at]`` (a
    null too) that starts at ``at`` ends."""
    header = bytes(data[pos : data.index(b"\n", pos) + 1])
    match = _pattern(shapes, (header,), _bulk_run).match(data, at, end)
    return at if match is None else match.end()


def _pattern(shapes: dict[tuple, re.Pattern[bytes]], key: tuple, make: Any) -> re.Pattern[bytes]:
    """The session's pattern for ``key``, made by ``make(*key)`` the first time."""
    pattern = shapes.get(key)
    if pattern is None:
        if len(shapes) >= SHAPES:
            shapes.clear()
        pattern = shapes[key] = make(*key)
    return pattern


def _bulk_run(header: bytes) -> re.Pattern[bytes]:
    """The pattern of a run of bulk strings (or nulls) whose header line is ``header``."""
    size = int(header[1:-2])
    string = b".{%d}\r\n" % size if size >= 0 else b""
    return re.compile(b"(?:%s%s)+" % (re.escape(header), string), re.DOTALL)


def _shape_run(name: bytes, *sizes: int) -> re.Pattern[bytes]:
    """The pattern of a run of commands named ``name`` (as sent) whose bulk strings have the
    lengths ``sizes``: the framer's own reading of them (any two bytes after each string, as
    Redis skips them unchecked), so that a run is framed by one match."""
    parts = [b"\\*%d\r\n" % len(sizes)]
    for index, size in enumerate(sizes):
        parts.append(b"\\$%d\r\n" % size)
        parts.append(re.escape(name) if index == 0 else b".{%d}" % size)
        parts.append(b"..")
    return re.compile(b"(?:%s)+" % b"".join(parts), re.DOTALL)
