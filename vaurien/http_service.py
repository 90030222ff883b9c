"""Serving a small HTTP API in the proxies' gevent hub: :class:`HttpService` (a WSGI app on a
listening socket), its bounded body reading and JSON parsing, the refusal every API answers with
(:class:`ApiError`), and the warning for an API that other machines can reach. The control API
(:mod:`vaurien.api`) and the Toxiproxy API (:mod:`vaurien.toxiproxy_api`) are both served so.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import socket
from collections.abc import Iterable
from typing import Any

import gevent
from gevent.pywsgi import Input, LoggingLogAdapter, WSGIHandler, WSGIServer

from vaurien.network import Address, listen

log = logging.getLogger(__name__)

#: The largest request body accepted, in bytes.
MAX_BODY = 64 * 1024


class ApiError(Exception):
    """A request the API refuses: the status, and which field is wrong and why."""

    def __init__(
        self,
        status: int,
        name: str,
        description: str,
        location: str = "body",
        headers: Iterable[tuple[str, str]] = (),
    ) -> None:
        super().__init__(description)
        self.status = status
        self.name = name
        self.description = description
        self.location = location
        self.headers = list(headers)


def error_response(error: ApiError) -> tuple[int, list[tuple[str, str]], dict[str, Any]]:
    """The status, headers and JSON body that answer a refused request (the 1.x error form)."""
    body = {
        "status": "error",
        "errors": [
            {"location": error.location, "name": error.name, "description": error.description}
        ],
    }
    return error.status, error.headers, body


def read_body(environ: dict[str, Any]) -> bytes:
    """The request's body, read whole when it is at most :data:`MAX_BODY` bytes.

    A longer one is refused with a 413 that closes the connection, and read no further: at once
    when its Content-Length says so, after ``MAX_BODY + 1`` bytes when it is chunked.
    """
    length_text = environ.get("CONTENT_LENGTH") or ""
    stream = environ["wsgi.input"]
    if length_text:
        try:
            length = int(length_text)
        except ValueError:
            raise ApiError(
                400, "Content-Length", f"invalid Content-Length {length_text!r}", "header"
            )
        if length > MAX_BODY:
            raise _too_large()
        return stream.read(length)
    data = stream.read(MAX_BODY + 1)  # chunked, or no body
    if len(data) > MAX_BODY:
        raise _too_large()
    return data


def parse_json(data: bytes) -> dict[str, Any]:
    """A request body as a JSON object."""
    try:
        value = json.loads(data)
    except ValueError as e:  # also UnicodeDecodeError
        raise ApiError(400, "body", f"the body is not valid JSON: {e}") from None
    if not isinstance(value, dict):
        raise ApiError(400, "body", f"the body must be a JSON object, got {type(value).__name__}")
    return value


def _too_large() -> ApiError:
    return ApiError(
        413, "body", f"the body is over {MAX_BODY} bytes", headers=[("Connection", "close")]
    )


def is_exposed(host: str) -> bool:
    """Whether a listening address is reachable from other machines (not a loopback address)."""
    try:
        return not ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return True


def is_exposed_name(host: str) -> bool:
    """Whether a host name (from a URL) may be another machine: anything but ``localhost`` and
    loopback addresses."""
    return host.lower().rstrip(".") != "localhost" and is_exposed(host)


def warn_if_exposed(host: str, port: int, what: str = "control API") -> None:
    """Log a warning when an API listens on an address other machines can reach."""
    if is_exposed(host):
        log.warning(
            "the %s listens on %s, which is not a loopback address: anyone who can reach it "
            "can reconfigure the proxies",
            what,
            Address(host, port),
        )


#: After a response that closes the connection, what the client still sends is read and
#: dropped for at most this long, and this much (see _Handler.linger).
LINGER_SECONDS = 1.0
LINGER_BYTES = 256 * 1024


class _Handler(WSGIHandler):
    """gevent's WSGI handler, except that a response closing the connection leaves the rest of
    the request's body unread.

    After each response, pywsgi reads what the application left of the body, so that the next
    request on the connection starts at its first byte. A response with ``Connection: close``
    has no next request: reading on would only let a client hold the server for as long as it
    keeps sending (a 413 to a 100 MB upload would still read the 100 MB). The close lingers
    briefly instead (:meth:`linger`).
    """

    def run_application(self) -> None:
        try:
            super().run_application()
            if self.close_connection:
                self.linger()
        finally:
            if self.close_connection:
                # What pywsgi discards next: an empty body, so nothing more is read.
                self.wsgi_input = Input(None, 0)

    def linger(self) -> None:
        """Say the response is all (a FIN), then read and drop what the client still sends
        until it closes, for :data:`LINGER_SECONDS` and :data:`LINGER_BYTES` at most. A socket
        closed with unread data sends a reset, which can reach the client before it has read
        the response (a 413 to a body still being sent)."""
        sock = self.socket
        left = LINGER_BYTES
        try:
            sock.shutdown(socket.SHUT_WR)
            with gevent.Timeout(LINGER_SECONDS, False):
                while left > 0:
                    data = sock.recv(min(left, 65536))
                    if not data:
                        break
                    left -= len(data)
        except OSError:
            pass


class HttpService:
    """A WSGI ``app`` served on ``host:port`` in the proxies' gevent hub; ``what`` names it in
    logs and errors.

    ``port`` 0 picks a free port; :attr:`address` tells which. Use it as a context manager, or
    call :meth:`start` and :meth:`stop`.
    """

    what = "control API"

    def __init__(self, app: Any, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.app = app
        self._server: WSGIServer | None = None

    def start(self) -> Any:
        """Bind and start serving; a bind failure is a :class:`VaurienError`."""
        listener = listen(Address(self.host, self.port), 128, what=self.what)
        self._server = WSGIServer(
            listener,
            self.app,
            handler_class=_Handler,
            log=LoggingLogAdapter(log, logging.DEBUG),
            error_log=LoggingLogAdapter(log, logging.ERROR),
        )
        self._server.start()
        log.info("%s on %s", self.what, self.url)
        warn_if_exposed(*self.address, what=self.what)
        return self

    def stop(self, timeout: float = 1.0) -> None:
        """Stop serving; requests in progress get ``timeout`` seconds to finish."""
        server, self._server = self._server, None
        if server is not None:
            server.stop(timeout=timeout)

    @property
    def address(self) -> tuple[str, int]:
        """The address actually listened on."""
        if self._server is None:
            raise RuntimeError(f"{self.what} is not started")
        host, port = self._server.socket.getsockname()[:2]
        return host, port

    @property
    def url(self) -> str:
        """``http://host:port``."""
        host, port = self.address
        return f"http://{Address(host, port)}"

    def __enter__(self) -> Any:
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()
