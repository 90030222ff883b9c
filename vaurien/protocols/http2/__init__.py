"""http2: HTTP/2 in clear text (h2c), gRPC included, with a behavior for each stream.

The protocol is registered whether or not ``h2`` is installed (so that it is listed and
documented); a proxy that uses it without ``h2`` stops at start with one line saying what to
install.
"""

from __future__ import annotations

import http
import socket
from typing import Any

from vaurien.errors import ConfigError
from vaurien.protocols import Protocol
from vaurien.protocols.base import BaseProtocol
from vaurien.protocols.framed import BUFFER_OPTION, REUSE_SOCKET_OPTION
from vaurien.rules import Field

#: gRPC status codes by name (https://grpc.github.io/grpc/core/md_doc_statuscodes.html).
GRPC_CODES = {
    "CANCELLED": 1,
    "UNKNOWN": 2,
    "INVALID_ARGUMENT": 3,
    "DEADLINE_EXCEEDED": 4,
    "NOT_FOUND": 5,
    "ALREADY_EXISTS": 6,
    "PERMISSION_DENIED": 7,
    "RESOURCE_EXHAUSTED": 8,
    "FAILED_PRECONDITION": 9,
    "ABORTED": 10,
    "OUT_OF_RANGE": 11,
    "UNIMPLEMENTED": 12,
    "INTERNAL": 13,
    "UNAVAILABLE": 14,
    "DATA_LOSS": 15,
    "UNAUTHENTICATED": 16,
}
MISSING_H2 = "the http2 protocol needs h2: pip install 'vaurien[http2]'"


def grpc_code(value: Any) -> int:
    """A gRPC error status: its number (1 to 16) or its name (``UNAVAILABLE``)."""
    if isinstance(value, str):
        text = value.strip()
        code = GRPC_CODES.get(text.upper())
        if code is None:
            if not text.isdigit():
                raise ValueError(f"{text!r} is no gRPC status code (14, or a name: UNAVAILABLE)")
            code = int(text)
    elif isinstance(value, int) and not isinstance(value, bool):
        code = value
    else:
        raise ValueError(f"expected a gRPC status code, got {value!r}")
    if not 1 <= code <= 16:
        raise ValueError(f"gRPC error codes go from 1 to 16, got {code}")
    return code


def http_error(value: Any) -> int:
    """An HTTP error status, from 400 to 599."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError(f"expected an HTTP status, got {value!r}")
    status = int(value)
    if not 400 <= status <= 599:
        raise ValueError(f"an error status goes from 400 to 599, got {status}")
    return status


def percent_encode(text: str) -> bytes:
    """``grpc-message`` encoding: UTF-8, with ``%`` and bytes outside printable ASCII escaped."""
    return b"".join(
        bytes((byte,)) if 0x20 <= byte <= 0x7E and byte != 0x25 else b"%%%02X" % byte
        for byte in text.encode("utf-8")
    )


@Protocol.register
class HTTP2(BaseProtocol):
    """HTTP/2 in clear text (h2c), gRPC included: one behavior per stream.

    The proxy speaks HTTP/2 with both sides, as a server to the client and as a client to the
    backend (two connections terminated with the sans-IO ``h2`` library), and maps streams one
    to one: headers, data, trailers, resets and priorities pass on. A client starts with the
    HTTP/2 preface (prior knowledge, as gRPC does) or with an HTTP/1.1 ``Upgrade: h2c``
    request; the backend is always spoken to with prior knowledge.

    SETTINGS pass on: the proxy advertises to the client what the backend accepts (the
    initial window, the number of concurrent streams, frame and header list sizes), and to the
    backend what the client accepts. Data is acknowledged to its sender only as the other side
    takes it, so large and many concurrent streams keep their flow control: a slow reader slows
    its own stream, not the connection, and the proxy holds no more than the windows it
    advertised. A graceful GOAWAY lets the streams in flight finish; new streams are then
    refused (``REFUSED_STREAM``: the client may retry them elsewhere). Server push is refused.
    Over TLS (``--tls-cert``, ``--backend-tls``) HTTP/2 is agreed with ALPN (``h2``) on each
    side that speaks TLS, and the connection starts with the preface at once.

    A behavior is picked for each stream, that is each request or gRPC call, and acts on that
    stream only, on its request (or, with ``direction = to_client``, on its response) while
    the other streams of the connection flow:

    * ``error`` and ``transient`` answer the stream themselves (see below).
    * ``abort`` lets the request reach the backend and resets the stream (``RST_STREAM``
      ``INTERNAL_ERROR``; gRPC reports ``INTERNAL``) when its response starts; with
      ``to_client``, at once. The connection lives on.
    * ``delay`` holds the request before it goes to the backend (with ``to_client``, the
      response before it goes to the client).
    * ``hang``: the stream is never answered (its request never reaches the backend; with
      ``to_client``, its response never reaches the client); the client's deadline or cancel
      ends it.
    * ``bandwidth``, ``slicer`` and ``corrupt`` act on the stream's DATA (the request body,
      with ``to_client`` the response body): that stream's message is paced, cut or damaged,
      its headers and trailers untouched. The stream, not the connection, because the
      connection carries the streams of other picks too.
    * ``limit`` lets ``bytes`` bytes of the stream's DATA through, then closes the connection:
      a connection cut in the middle of a transfer.
    * ``blackout``, ``reset`` and ``timeout`` act on the connection, as they do for ``tcp``:
      every stream on it fails, as when a server or the network dies. ``timeout`` with a
      timeout of 0 drops the stream's DATA instead; its headers and its end go on.
    * ``slow_close`` and a ``delay`` with ``before`` false act once the stream has ended, and
      change nothing, since nothing on a stream follows its end.

    Frames of the connection itself (SETTINGS, PING, WINDOW_UPDATE) are never picked for, and
    ``--scope connection`` gives every stream of a connection the same pick.
    """

    name = "http2"
    duplex = True
    alpn = ("h2",)
    errors_on_request = True
    picks_itself = True
    options = {
        "grpc_status": (
            "gRPC status of the error answer to a gRPC call: a number or a name",
            grpc_code,
            14,
        ),
        "grpc_message": (
            "grpc-message of the error answer to a gRPC call",
            str,
            "error injected by vaurien",
        ),
        "http_status": ("Status of the error answer to other requests", http_error, 503),
        "buffer": BUFFER_OPTION,
        "reuse_socket": REUSE_SOCKET_OPTION,
    }
    rule_fields = {
        "method": Field("The stream's :method: GET, POST ...", ignore_case=True),
        "path": Field(
            "The stream's :path up to its query string; for a gRPC call, /package.Service/Method"
        ),
        "host": Field("The stream's :authority", ignore_case=True),
        "header.NAME": Field("The value of the request's header NAME (header.content-type)"),
    }
    request_name = ("method", "path")
    event_unit = (
        "One stream: a request and its response, a gRPC call. Frames of the connection itself "
        "(SETTINGS, PING, WINDOW_UPDATE) are relayed or answered and never picked for."
    )
    error_form = (
        "A gRPC call (``content-type: application/grpc``) gets a trailers-only response with "
        "``grpc-status`` 14, ``UNAVAILABLE`` (options ``grpc_status`` and ``grpc_message``); "
        "another request gets a ``503`` (option ``http_status``) with a short text body. Only "
        "that stream fails: the connection and its other streams go on, and the backend never "
        "sees the request (with ``inject`` it does, and its response is replaced)."
    )

    def __init__(self) -> None:
        super().__init__()
        try:
            from vaurien.protocols.http2 import session
        except ImportError as e:
            if (e.name or "").split(".")[0] in ("h2", "hpack", "hyperframe"):
                raise ConfigError(MISSING_H2) from None
            raise
        self._session = session
        self._hooks: dict[type, Any] = {}
        self._errors: dict[bool, tuple[list[Any], bytes]] = {}

    def open_session(self, session: Any) -> Any:
        return self._session.Connection(self, session)

    def handle(self, source: Any, dest: Any, to_backend: bool, behavior: Any) -> bool:
        return source.session.state.receive(source, to_backend)

    def hooks_of(self, behavior: Any) -> Any:
        """Which hooks of ``behavior`` act (cached per class)."""
        cls = type(behavior)
        hooks = self._hooks.get(cls)
        if hooks is None:
            hooks = self._hooks[cls] = self._session.Hooks(behavior)
        return hooks

    # -- the verbs behaviors use ---------------------------------------------------------------

    def read(self, sock: Any, size: int | None = None) -> bytes:
        """What the peer of ``sock`` (a side of one stream) sent on the stream: up to ``size``
        bytes of the request body from the client, of the response body from the backend."""
        return sock.read(size or self.buffer_size)

    _get_data = read

    def send_error(self, source: Any, dest: Any, to_backend: bool, inject: bool = False) -> None:
        """Answer the stream with the protocol's error (see ``error_form``); with ``inject``,
        let the request reach the backend and replace its response."""
        stream = source.stream
        connection = source.connection
        answer = self.error_answer(stream.request.head)
        if inject and to_backend:
            stream.replace = answer
            connection.relay.release(stream.request)
        else:
            connection.relay.answer(stream, *answer)
        connection.send()

    def hang(self, source: Any, dest: Any, to_backend: bool) -> None:
        """Leave the stream unanswered: what its sender sends on it is acknowledged and
        dropped, and nothing of it goes on; the other streams flow."""
        source.connection.relay.drop(source.incoming)
        source.connection.send()

    def abort(self, source: Any, dest: Any, to_backend: bool) -> None:
        """Reset the stream once its request reached the backend and its response starts;
        picked for the response, at once. The connection lives on."""
        stream = source.stream
        connection = source.connection
        if to_backend:
            stream.abort = True
            connection.relay.release(stream.request)
        else:
            connection.relay.reset(stream)
        connection.send()

    def error_answer(self, head: list[Any]) -> tuple[list[Any], bytes]:
        """The error answer (headers and body) to a request with headers ``head``."""
        grpc = head_method = False
        for name, value in head:
            if name == b"content-type" and value.startswith(b"application/grpc"):
                grpc = True
            elif name == b":method" and value == b"HEAD":
                head_method = True
        key = "grpc" if grpc else "head" if head_method else "http"
        answer = self._errors.get(key)
        if answer is None:
            answer = self._errors[key] = self._make_error(key)
        return answer

    def _make_error(self, key: str) -> tuple[list[Any], bytes]:
        settings = self.settings
        if key == "grpc":
            head = [
                (b":status", b"200"),
                (b"content-type", b"application/grpc"),
                (b"grpc-status", b"%d" % settings["grpc_status"]),
                (b"grpc-message", percent_encode(settings["grpc_message"])),
            ]
            return head, b""
        status = settings["http_status"]
        try:
            phrase = http.HTTPStatus(status).phrase
        except ValueError:
            phrase = "Error"
        body = f"{status} {phrase} (error injected by vaurien)\n".encode()
        head = [
            (b":status", b"%d" % status),
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", b"%d" % len(body)),
        ]
        return head, b"" if key == "head" else body

    def setup_listener(self, sock: Any) -> None:
        if self.settings.get("reuse_socket"):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
