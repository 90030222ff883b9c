"""Sans-IO framing of HTTP/1.0 and 1.1 for the ``http`` protocol: heads parsed with h11
(remembered, since equal heads parse alike), bodies counted through."""

from __future__ import annotations

from typing import Any

import h11

from vaurien.errors import ProtocolError
from vaurien.protocols.framed import HOLD, End, Head, LineReader

MAX_HEAD = 64 * 1024  # bytes in a request or response head
MAX_CHUNK_LINE = 4096  # bytes in a chunk-size line or a trailer line
CACHED_HEAD = 8192  # bytes; longer heads are parsed every time
CACHE_SIZE = 1024  # heads remembered per kind (see HeadParser)

CHUNKED = -1  # body framing: chunked transfer coding
UNTIL_CLOSE = -2  # body framing: up to the end of the connection
TUNNEL = -3  # no body: the connection becomes a plain stream


def _keeps_alive(version: bytes, headers: Any) -> bool:
    """Whether a message lets its connection live on: HTTP/1.1 unless ``Connection: close``,
    HTTP/1.0 only with ``Connection: keep-alive``."""
    connection = _tokens(headers, b"connection")
    if version == b"1.0":
        return b"keep-alive" in connection
    return b"close" not in connection


def _tokens(headers: Any, name: bytes) -> set[bytes]:
    """The comma-separated tokens of every ``name`` header, lowercase."""
    found: set[bytes] = set()
    for key, value in headers:
        if key == name:
            found.update(token.strip().lower() for token in value.split(b","))
    return found


def _span(raw: bytes, name: bytes) -> tuple[int, int] | None:
    """Where the value of header ``name`` (lowercase) is in ``raw``, if it has one."""
    start = raw.find(b"\n") + 1
    while 0 < start < len(raw):
        stop = raw.find(b"\n", start)
        if stop < 0:
            break
        colon = raw.find(b":", start, stop)
        if colon > start and raw[start:colon].strip().lower() == name:
            value_start = colon + 1
            value_stop = stop - 1 if raw[stop - 1 : stop] == b"\r" else stop
            return value_start, value_stop
        start = stop + 1
    return None


class Request:
    """What the proxy knows about a request once its head is read (shared by equal heads)."""

    __slots__ = (
        "method",
        "version",
        "length",
        "keep_alive",
        "expect_continue",
        "upgrade",
        "host",
        "connection",
        "end_of_head",
        "rewritten",
        "done",
    )

    def __init__(self, event: Any, raw: bytes) -> None:
        headers = event.headers
        self.method = event.method
        self.version = event.http_version
        self.keep_alive = _keeps_alive(self.version, headers)
        self.length = 0
        for name, value in headers:
            if name == b"transfer-encoding":
                self.length = CHUNKED  # h11 accepts no other transfer coding
                break
            if name == b"content-length":
                self.length = int(value)
        self.expect_continue = b"100-continue" in _tokens(headers, b"expect")
        self.upgrade = self.method == b"CONNECT" or (
            b"upgrade" in _tokens(headers, b"connection")
            and any(name == b"upgrade" for name, _ in headers)
        )
        self.host = _span(raw, b"host")
        self.connection = _span(raw, b"connection")
        self.end_of_head = len(raw) - (2 if raw.endswith(b"\r\n\r\n") else 1)
        self.rewritten: tuple[Any, Any] | None = None  # (backend, its verdict), cached
        self.done = MessageEnd(self)

    def __repr__(self) -> str:
        return f"<Request {self.method.decode(errors='replace')} HTTP/{self.version.decode()}>"


class MessageEnd(End):
    """The end of a request's or a response's body: ``info`` is its :class:`Request` or
    :class:`Response` (one per head, shared)."""

    __slots__ = ("info",)

    def __init__(self, info: Any) -> None:
        self.info = info

    def __repr__(self) -> str:
        return repr(self.info)  # as its head: where a message ends is what matters


class Response:
    """What the proxy knows about a response once its head is read (shared by equal heads)."""

    __slots__ = ("status", "version", "length", "keep_alive", "done", "raw", "closing", "heads")

    def __init__(self, event: Any, raw: bytes) -> None:
        self.raw = raw
        self.heads: dict[int, ResponseHead] = {}  # by framing, for heads read in one piece
        self.closing: bytes | None = None  # the head with Connection: close (keep_alive off)
        headers = event.headers
        self.status = event.status_code
        self.version = event.http_version
        self.keep_alive = _keeps_alive(self.version, headers)
        self.length = UNTIL_CLOSE
        for name, value in headers:
            if name == b"transfer-encoding":
                self.length = CHUNKED
                break
            if name == b"content-length":
                self.length = int(value)
        self.done = MessageEnd(self)

    def closing_head(self) -> bytes:
        """This head saying ``Connection: close`` (made once)."""
        if self.closing is None:
            raw = self.raw
            span = _span(raw, b"connection")
            if span is not None:
                self.closing = raw[: span[0]] + b" close" + raw[span[1] :]
            else:
                end = len(raw) - (2 if raw.endswith(b"\r\n\r\n") else 1)
                self.closing = raw[:end] + b"Connection: close\r\n" + raw[end:]
        return self.closing

    def framing(self, method: bytes | None) -> int:
        """The body's framing given the request's method: a length, or CHUNKED ..."""
        status = self.status
        if status < 200:
            return TUNNEL if status == 101 else 0
        if method == b"HEAD" or status in (204, 304):
            return 0
        if method == b"CONNECT" and status < 300:
            return TUNNEL
        return self.length

    def __repr__(self) -> str:
        return f"<Response {self.status}>"


class RequestHead(Head):
    """A request's head: ``info`` is its :class:`Request`."""

    __slots__ = ("info", "whole")

    def __init__(self, raw: bytes, held: int, info: Request, body: int = 0) -> None:
        super().__init__(raw, held, info.length == 0 or body > 0, body)
        self.info = info
        self.whole: RequestHead | None = None  # the same head with its whole body (cached)

    def with_body(self) -> RequestHead:
        """This head (read in one piece) with its whole Content-Length body."""
        if self.whole is None:
            self.whole = RequestHead(self.raw, 0, self.info, self.info.length)
        return self.whole

    def __repr__(self) -> str:
        return repr(self.info)


class ResponseHead(Head):
    """A response's head: ``info`` is its :class:`Response`, ``framing`` its body's."""

    __slots__ = ("info", "framing")

    def __init__(self, raw: bytes, held: int, info: Response, framing: int, body: int = 0) -> None:
        super().__init__(raw, held, framing in (0, TUNNEL) or body > 0, body)
        self.info = info
        self.framing = framing

    def __repr__(self) -> str:
        return repr(self.info)


class HeadParser:
    """Parses heads with h11, remembering the last :data:`CACHE_SIZE` of each kind.

    Parsing is a pure function of the head's bytes (and, for a response, of whether the
    request proposed an upgrade), so equal heads, the rule on a keep-alive connection, are
    parsed once. One parser per proxy.
    """

    def __init__(self) -> None:
        self._requests: dict[bytes, RequestHead] = {}
        self._responses: dict[bytes, Response] = {}

    def request(self, raw: bytes, held: int) -> RequestHead:
        if not held:
            head = self._requests.get(raw)
            if head is not None:
                return head
        connection = h11.Connection(h11.SERVER)
        connection.receive_data(raw)
        try:
            event = connection.next_event()
        except h11.RemoteProtocolError as e:
            raise ProtocolError(f"not an HTTP request: {e}; head {raw[:60]!r}") from None
        if not isinstance(event, h11.Request):
            raise ProtocolError(f"not an HTTP request head: {raw[:60]!r}")
        head = RequestHead(raw, held, Request(event, raw))
        if not held and len(raw) <= CACHED_HEAD:
            remember(self._requests, raw, head)
        return head

    def response(self, raw: bytes) -> Response:
        info = self._responses.get(raw)
        if info is not None:
            return info
        connection = h11.Connection(h11.CLIENT)
        # h11 reads a response once it has sent a request; one proposing an upgrade lets it
        # read a 101 as well as any other answer.
        connection.send(
            h11.Request(
                method=b"GET",
                target=b"/",
                headers=[(b"host", b"vaurien"), (b"connection", b"upgrade"), (b"upgrade", b"x")],
            )
        )
        connection.send(h11.EndOfMessage())
        connection.receive_data(raw)
        try:
            event = connection.next_event()
        except h11.RemoteProtocolError as e:
            raise ProtocolError(f"not an HTTP response: {e}; head {raw[:60]!r}") from None
        if not isinstance(event, (h11.Response, h11.InformationalResponse)):
            raise ProtocolError(f"not an HTTP response head: {raw[:60]!r}")
        info = Response(event, raw)
        if len(raw) <= CACHED_HEAD:
            remember(self._responses, raw, info)
        return info


def remember(cache: dict[bytes, Any], key: bytes, value: Any) -> None:
    if len(cache) >= CACHE_SIZE:
        del cache[next(iter(cache))]  # the oldest
    cache[key] = value


class _Message:
    """Finding the end of a head, then counting through the body."""

    def _reset(self) -> None:
        self.idle = True
        self._head = bytearray()  # an unfinished head
        self._left = 0  # body bytes still to come (Content-Length)
        self._chunked: _Chunks | None = None
        self._until_close = False

    def _blank_lines(self, data: Any, pos: int, end: int) -> int:
        """Where the blank lines some peers send between messages end (they pass)."""
        while pos < end and data[pos] in (13, 10):
            pos += 1
        return pos

    def _find_head(self, data: Any, pos: int, end: int) -> tuple[int, bytes | None, int]:
        """Look for the blank line that ends a head; return (newpos, raw head or None, held)."""
        head = self._head
        if not head:
            crlf = data.find(b"\n\r\n", pos, end)
            if crlf >= 0 and data.find(b"\n\n", pos, crlf) < 0:  # the usual case
                return crlf + 3, bytes(data[pos : crlf + 3]), 0
            stop = head_end(data, pos, end)
            if stop >= 0:
                return stop, bytes(data[pos:stop]), 0
            if end - pos > MAX_HEAD:
                raise ProtocolError(f"HTTP head longer than {MAX_HEAD} bytes")
            head += data[pos:end]
            return end, None, 0
        held = len(head)
        scan = max(0, held - 3)
        head += data[pos:end]
        stop = head_end(head, scan, len(head))
        if stop < 0:
            if len(head) > MAX_HEAD:
                raise ProtocolError(f"HTTP head longer than {MAX_HEAD} bytes")
            return end, None, 0
        raw = bytes(head[:stop])
        head.clear()
        return pos + stop - held, raw, held

    def _body(self, data: Any, pos: int, end: int) -> tuple[int, bool]:
        """Count through the body; true when it is complete."""
        chunked = self._chunked
        if chunked is not None:
            pos, done = chunked.feed(data, pos, end)
            if done:
                self._chunked = None
            return pos, done
        if self._until_close:
            return end, False
        take = min(self._left, end - pos)
        self._left -= take
        return pos + take, not self._left

    def _start_body(self, length: int) -> None:
        if length == CHUNKED:
            self._chunked = _Chunks()
        elif length == UNTIL_CLOSE:
            self._until_close = True
        else:
            self._left = length


def head_end(data: Any, pos: int, end: int) -> int:
    """The position just after the blank line that ends a head in ``data[pos:end]``, or -1."""
    crlf = data.find(b"\n\r\n", pos, end)
    lf = data.find(b"\n\n", pos, crlf if crlf >= 0 else end)
    if lf >= 0:
        return lf + 2
    return crlf + 3 if crlf >= 0 else -1


class HeadFields:
    """What rules match in a request's head: ``method``, ``path`` (the target up to its query),
    ``host`` and ``header.NAME``, each read from the head when a rule first asks."""

    __slots__ = ("raw", "_method", "_path", "_headers")

    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        self._method: str | None = None
        self._path: str | None = None
        self._headers: dict[str, str] | None = None

    def get(self, name: str) -> str | None:
        if name == "method":
            if self._method is None:
                raw = self.raw
                self._method = raw[: max(raw.find(b" ", 0, raw.find(b"\n")), 0)].decode("latin-1")
            return self._method
        if name == "path":
            if self._path is None:
                self._path = self._target_path()
            return self._path
        headers = self._headers
        if headers is None:
            headers = self._headers = _headers(self.raw)
        if name == "host":
            return headers.get("host")
        return headers.get(name[7:]) if name.startswith("header.") else None

    def _target_path(self) -> str:
        raw = self.raw
        eol = raw.find(b"\n")
        space = raw.find(b" ", 0, eol)
        stop = raw.find(b" ", space + 1, eol)
        if stop < 0:  # no version: the target ends the line
            stop = eol - 1 if raw[eol - 1 : eol] == b"\r" else eol
        start = space + 1
        if raw[start : start + 1] not in (b"/", b"*"):  # absolute form (to a proxy): its path
            after = raw.find(b"://", start, stop)
            slash = raw.find(b"/", after + 3, stop) if after >= 0 else -1
            start = slash if slash >= 0 else stop
        query = raw.find(b"?", start, stop)
        return raw[start : query if query >= 0 else stop].decode("latin-1") or "/"


def _headers(raw: bytes) -> dict[str, str]:
    """A head's headers by lowercase name; repeated ones joined with ``", "``."""
    headers: dict[str, str] = {}
    for line in raw.decode("latin-1").splitlines()[1:]:
        name, colon, value = line.partition(":")
        if colon:
            name = name.strip().lower()
            value = value.strip()
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return headers


class _Chunks:
    """The chunked transfer coding: size lines, data, trailers, counted through."""

    __slots__ = ("_lines", "_left", "_crlf", "_trailer")

    def __init__(self) -> None:
        self._lines = LineReader(MAX_CHUNK_LINE, "HTTP chunk line")
        self._left = 0  # chunk data bytes still to come
        self._crlf = 0  # bytes of the CRLF after the data still to come
        self._trailer = False

    def feed(self, data: Any, pos: int, end: int) -> tuple[int, bool]:
        while pos < end:
            if self._left:
                take = min(self._left, end - pos)
                self._left -= take
                pos += take
                continue
            if self._crlf:
                byte = data[pos]
                if self._crlf == 2 and byte == 13:
                    self._crlf = 1
                elif byte == 10:
                    self._crlf = 0
                else:
                    raise ProtocolError("HTTP chunk data not followed by CRLF")
                pos += 1
                continue
            line, pos = self._lines.take(data, pos, end)
            if line is None:
                return pos, False
            if self._trailer:
                if line in (b"\r\n", b"\n"):
                    return pos, True
                continue
            size = line.split(b";", 1)[0].strip()
            if not size or len(size) > 16 or size.strip(b"0123456789abcdefABCDEF"):
                raise ProtocolError(f"bad HTTP chunk size line: {line[:40]!r}")
            self._left = int(size, 16)
            if self._left:
                self._crlf = 2
            else:
                self._trailer = True
        return pos, False


class RequestFramer(_Message):
    """Frames what an HTTP client sends: each request's head (held until complete, returned
    as a :class:`RequestHead`, parsed by h11), then its body (Content-Length or chunked, with
    trailers), counted through."""

    passive = False

    def __init__(self, parser: HeadParser) -> None:
        self._parser = parser
        self._info: Request | None = None
        self._reset()

    def feed(self, data: Any, pos: int, end: int) -> tuple[int, Any]:
        if self.idle or self._head:
            if not self._head and data[pos] in (13, 10):
                return self._blank_lines(data, pos, end), None
            pos, raw, held = self._find_head(data, pos, end)
            self.idle = False
            if raw is None:
                return pos, HOLD
            head = self._parser.request(raw, held)
            if head.end:
                self.idle = True
            elif not held and 0 < head.info.length <= end - pos:
                self.idle = True  # the whole body is here too: one event
                head = head.with_body()
                return pos + head.body, head
            else:
                self._info = head.info
                self._start_body(head.info.length)
            return pos, head
        pos, done = self._body(data, pos, end)
        if done:
            self.idle = True
            return pos, self._info.done
        return pos, None

    def feed_eof(self) -> None:
        return None


class ResponseFramer(_Message):
    """Frames what an HTTP server sends, knowing each response's request (``begin``): the
    head (held until complete, a :class:`ResponseHead`), then the body: Content-Length,
    chunked, none (HEAD, 1xx, 204, 304), or up to the end of the connection."""

    def __init__(self, parser: HeadParser) -> None:
        self._parser = parser
        self._method: bytes | None = None
        self._info: Response | None = None
        self._reset()

    def begin(self, request: Any) -> None:
        self._method = request.info.method if request is not None else None

    def feed(self, data: Any, pos: int, end: int) -> tuple[int, Any]:
        if self.idle or self._head:
            if not self._head and data[pos] in (13, 10):
                return self._blank_lines(data, pos, end), None
            pos, raw, held = self._find_head(data, pos, end)
            self.idle = False
            if raw is None:
                return pos, HOLD
            info = self._parser.response(raw)
            framing = info.framing(self._method)
            if held:
                head = ResponseHead(raw, held, info, framing)
            else:
                whole = 0 < framing <= end - pos  # the whole body is here too: one event
                key = -framing if whole else framing
                head = info.heads.get(key)
                if head is None:
                    head = ResponseHead(raw, 0, info, framing, framing if whole else 0)
                    info.heads[key] = head
                if whole:
                    self.idle = True
                    return pos + framing, head
            if head.end:
                self.idle = True
            else:
                self._info = info
                self._start_body(framing)
            return pos, head
        pos, done = self._body(data, pos, end)
        if done:
            self.idle = True
            return pos, self._finish()
        return pos, None

    def _finish(self) -> MessageEnd:
        info = self._info
        self._info = None
        self._until_close = False
        return info.done

    def feed_eof(self) -> Any:
        if self._until_close:
            self.idle = True
            return self._finish()
        return None
