"""http: HTTP/1.0 and 1.1 requests and responses, parsed with h11."""

from __future__ import annotations

from typing import Any

from vaurien.errors import ProtocolError
from vaurien.protocols import Protocol
from vaurien.protocols.framed import (
    BUFFER_OPTION,
    PARTIAL,
    REUSE_SOCKET_OPTION,
    AnswerVerdict,
    ErrorReply,
    FramedProtocol,
    RequestVerdict,
)
from vaurien.protocols.http.framing import (
    CACHED_HEAD,
    MAX_HEAD,
    HeadFields,
    HeadParser,
    Request,
    RequestFramer,
    RequestHead,
    ResponseFramer,
    ResponseHead,
    head_end,
    remember,
)
from vaurien.rules import NO_FIELDS, Field

#: Statuses the error behavior answers with.
ERROR_STATUSES = (500, 501, 502, 503)
REASONS = {
    500: b"Internal Server Error",
    501: b"Not Implemented",
    502: b"Bad Gateway",
    503: b"Service Unavailable",
}


@Protocol.register
class HTTP(FramedProtocol):
    """HTTP/1.0 and 1.1: one request and its response are one exchange.

    Heads are parsed with h11; bodies (Content-Length, chunked with trailers, or up to the
    end of the connection) are counted through as they pass. Keep-alive and
    ``Connection: close``, pipelining, HEAD, 1xx (``100 Continue``), 204 and 304 are followed;
    after an accepted ``Upgrade`` (a WebSocket) or ``CONNECT`` the connection is a plain
    stream. With ``error`` the client gets a well-formed 500, 501, 502 or 503 with
    Content-Length, and the backend never sees the request; the connection lives on, as after a
    server's own 5xx, unless something of it is still in flight. Traffic that is not HTTP/1
    ends the session.

    ``overwrite_host_header`` puts the backend's address in each request's ``Host``;
    ``keep_alive`` false makes every request the last of its connection (the proxy sends it
    with ``Connection: close``); ``reuse_socket`` lets several proxies share the port
    (``SO_REUSEPORT``); ``buffer`` is the largest read.
    """

    name = "http"
    alpn = ("http/1.1",)
    event_unit = (
        "One request and its response: the request is read whole (head and body) in one event, "
        "and its response, pipelined or not, is matched to it."
    )
    error_form = (
        "The client gets a 500, 501, 502 or 503 response (chosen with the proxy's random "
        "source) with ``Content-Length``, after the responses to earlier requests; the backend "
        "never sees the request. The connection lives on, as after a server's own 5xx, when the "
        "request was read whole and both the client and the ``keep_alive`` option keep "
        "connections alive. Otherwise the response says ``Connection: close`` and the "
        "connection ends: a request whose body the client holds back for ``100 Continue``, "
        "and, with ``inject``, a request the backend gets, whose response is replaced."
    )
    tcp_keep_alive = False
    rule_fields = {
        "method": Field("The request's method: GET, POST ...", ignore_case=True),
        "path": Field("The request's target up to its query string: /api/payments/42"),
        "host": Field("The request's Host header", ignore_case=True),
        "header.NAME": Field("The value of the request's header NAME (header.content-type)"),
    }
    request_name = ("method", "path")
    peek_limit = MAX_HEAD
    options = {
        "overwrite_host_header": (
            "Rewrite each request's Host with the backend's address",
            bool,
            True,
        ),
        "keep_alive": (
            "Honour the client's keep-alive; false closes the connection after each response",
            bool,
            True,
        ),
        "reuse_socket": REUSE_SOCKET_OPTION,
        "buffer": BUFFER_OPTION,
    }

    def __init__(self) -> None:
        super().__init__()
        self._parser = HeadParser()
        self._peeked: dict[bytes, HeadFields] = {}  # equal heads are read once, as parsed ones

    def request_framer(self) -> RequestFramer:
        return RequestFramer(self._parser)

    def answer_framer(self) -> ResponseFramer:
        return ResponseFramer(self._parser)

    def peek(self, state: Any, data: Any, pos: int, end: int) -> HeadFields | None:
        while pos < end and data[pos] in (13, 10):  # blank lines before a request
            pos += 1
        stop = head_end(data, pos, end)
        if stop < 0:
            return None if end - pos <= MAX_HEAD else NO_FIELDS
        return self._fields(bytes(data[pos:stop]))

    def _fields(self, raw: bytes) -> HeadFields:
        fields = self._peeked.get(raw)
        if fields is None:
            fields = HeadFields(raw)
            if len(raw) <= CACHED_HEAD:
                remember(self._peeked, raw, fields)
        return fields

    skims_fields = True

    def skim(
        self,
        state: Any,
        data: Any,
        pos: int,
        end: int,
        untaken: Any = None,
        most: int | None = None,
    ) -> tuple[int, int, Any]:
        # A plain request: whole (head and Content-Length body) in ``data``, keeping the
        # connection alive, no body to wait for (Expect), no upgrade, not HEAD (its answer
        # frames apart). A Host rewrite of the head's own length is made in place; any other
        # rewrite, and anything else, goes the general way. Heads are parsed here as the
        # framer would (remembered).
        settings = self.settings
        if not settings["keep_alive"]:
            return pos, 0, None
        rewrites = settings["overwrite_host_header"]
        parse = self._parser.request
        first = None
        count = 0
        while pos < end and count != most:
            stop = head_end(data, pos, end)
            if stop < 0:
                break
            raw = bytes(data[pos:stop])
            try:
                head = parse(raw, 0)
            except ProtocolError:
                break  # the general path ends the session
            info = head.info
            after = stop + info.length
            if (
                info.length < 0
                or after > end
                or info.upgrade
                or info.expect_continue
                or not info.keep_alive
                or info.method == b"HEAD"
            ):
                break
            if untaken is not None and not untaken(self._fields(raw)):
                break  # a rule takes it: it gets a pick of its own
            if rewrites:
                verdict = self._rewrite_verdict(info, raw)
                if verdict is not None:
                    send = verdict.send
                    if len(send) != len(raw) or type(data) is not bytearray:
                        break
                    data[pos:stop] = send
            if first is None:
                first = head
            count += 1
            pos = after
        return pos, count, first

    def skim_answers(
        self, state: Any, request: Any, data: Any, pos: int, end: int, most: int
    ) -> tuple[int, int]:
        # A plain response: whole in ``data``, a final one (no 1xx), keeping the connection
        # alive, its body counted (Content-Length, or none), nothing to rewrite.
        if not self.settings["keep_alive"]:
            return pos, 0
        method = request.info.method
        parse = self._parser.response
        count = 0
        while count < most and pos < end:
            stop = head_end(data, pos, end)
            if stop < 0:
                break
            try:
                info = parse(bytes(data[pos:stop]))
            except ProtocolError:
                break
            if info.status < 200 or not info.keep_alive:
                break
            length = info.framing(method)
            if length < 0 or stop + length > end:
                break
            pos = stop + length
            count += 1
        return pos, count

    def error_reply(self, state: Any, request: Any, answered: bool, forwarded: bool) -> ErrorReply:
        status = self.proxy.random.choice(ERROR_STATUSES)
        reason = REASONS[status]
        body = b"%d %s (error injected by vaurien)\n" % (status, reason)
        # As a server's own 5xx, the error keeps the connection when nothing is left in
        # flight: the request read whole, unseen by the backend, and keep-alive on both sides.
        # Else (a body never read, a backend answer to discard) the connection ends with it.
        close = not (
            request is not None
            and request.end
            and not forwarded
            and request.info.keep_alive
            and self.settings["keep_alive"]
        )
        if close:
            connection = b"Connection: close\r\n"
        elif request.info.version == b"1.0":
            connection = b"Connection: keep-alive\r\n"
        else:
            connection = b""
        head = b"HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n%s\r\n" % (
            status,
            reason,
            len(body),
            connection,
        )
        if request is not None and request.info.method == b"HEAD":
            return ErrorReply(head, close=close)
        return ErrorReply(head + body, close=close)

    def request_head(self, state: Any, head: RequestHead, forwarded: bool) -> Any:
        info = head.info
        if not forwarded:
            # An error answers the request at once when the client waits before its body.
            return _CUT if info.expect_continue else None
        if info.upgrade:
            return _GATE
        settings = self.settings
        if not (settings["overwrite_host_header"] or not settings["keep_alive"]):
            return None
        if head.held:
            rewritten = self._rewrite(info, head.raw)
            return RequestVerdict(send=rewritten) if rewritten is not None else None
        return self._rewrite_verdict(info, head.raw)

    def _rewrite_verdict(self, info: Request, raw: bytes) -> RequestVerdict | None:
        """The verdict rewriting the head ``raw`` (read in one piece), made once per head and
        backend."""
        cached = info.rewritten
        backend = self.proxy.backend
        if cached is None or cached[0] is not backend:
            rewritten = self._rewrite(info, raw)
            verdict = RequestVerdict(send=rewritten) if rewritten is not None else None
            cached = info.rewritten = (backend, verdict)
        return cached[1]

    def _rewrite(self, info: Request, raw: bytes) -> bytes | None:
        """The head with the Host and Connection headers the options ask for."""
        edits = []
        if self.settings["overwrite_host_header"] and info.host is not None:
            edits.append((info.host, b" " + str(self.proxy.backend).encode()))
        if not self.settings["keep_alive"]:
            if info.connection is not None:
                edits.append((info.connection, b" close"))
            else:
                edits.append(((info.end_of_head, info.end_of_head), b"Connection: close\r\n"))
        if not edits:
            return None
        edits.sort()
        out = []
        last = 0
        for (start, stop), text in edits:
            out.append(raw[last:start])
            out.append(text)
            last = stop
        out.append(raw[last:])
        rewritten = b"".join(out)
        return None if rewritten == raw else rewritten

    def answer_head(self, state: Any, request: Any, head: ResponseHead) -> Any:
        info = head.info
        if self.settings["keep_alive"] or info.status < 200 or not info.keep_alive:
            return None
        # keep_alive off: the client learns that this response is the connection's last.
        return AnswerVerdict(send=info.closing_head())

    def request_end(self, state: Any, message: Any, forwarded: bool) -> Any:
        info = message.info
        if forwarded and (not info.keep_alive or not self.settings["keep_alive"]):
            return _LAST  # the backend ends the connection after its answer
        return None

    def answer_end(self, state: Any, request: Any, message: Any) -> Any:
        info = message.info
        status = info.status
        if status < 200 and status != 101:
            return PARTIAL  # 100 Continue, 103 Early Hints: the response follows
        method = request.info.method if request is not None else None
        if status == 101 or (method == b"CONNECT" and status < 300):
            return _TUNNEL
        if not info.keep_alive:
            return _LAST_ANSWER  # the backend ends the connection after this answer
        return None


_CUT = RequestVerdict(cut=True)
_GATE = RequestVerdict(gate=True)
_LAST = RequestVerdict(last=True)
_TUNNEL = AnswerVerdict(stream=True)
_LAST_ANSWER = AnswerVerdict(last=True)
