"""The Toxiproxy-compatible HTTP API: Toxiproxy 2.x's endpoints, bodies, status codes and error
shapes, over every proxy of the process, so that Toxiproxy's clients drive Vaurien unchanged.

``vaurien --toxiproxy-api HOST:PORT`` starts it (``toxiproxy_api =`` in ``[vaurien]``)::

    GET    /version                          {"version": "2.12.0", "vaurien": ...}
    GET    /proxies                          {NAME: PROXY, ...}
    POST   /proxies                          PROXY -> 201 PROXY (port 0: the one bound)
    POST   /populate                         [PROXY, ...] -> 201 {"proxies": [PROXY, ...]}
    POST   /reset                            every proxy enabled, every toxic removed -> 204
    GET    /proxies/NAME                     PROXY
    POST   /proxies/NAME (or PATCH)          fields to change -> PROXY
    DELETE /proxies/NAME                     -> 204
    GET    /proxies/NAME/toxics              [TOXIC, ...]
    POST   /proxies/NAME/toxics              TOXIC -> TOXIC
    GET    /proxies/NAME/toxics/TOXIC        TOXIC
    POST   /proxies/NAME/toxics/TOXIC (PATCH) attributes, toxicity -> TOXIC
    DELETE /proxies/NAME/toxics/TOXIC        -> 204
    GET    /metrics                          every proxy's counters, Prometheus text format

A PROXY is ``{"name", "listen", "upstream", "enabled", "toxics"}``, a TOXIC ``{"attributes",
"name", "type", "stream", "toxicity"}`` (:mod:`vaurien.toxics`). Vaurien's additions: a proxy
body may also give, when the proxy is made, the settings of :data:`MADE_WITH` (``protocol``, for
a proxy that understands its traffic and answers with the protocol's errors;
``refuse_when_backend_down``; the TLS settings such as ``backend_tls`` and ``tls_cert``).
Errors are Toxiproxy's: ``{"error": MESSAGE, "status": CODE}`` with 400 for a bad body, 404
for a proxy or toxic not found, 409 for a name taken (or a listen address in use). A field no
client sends is refused with a 400 naming it, as is a value of the wrong type; nothing changes
unless the whole request is right. Requests from browsers (a ``User-Agent`` starting with
``Mozilla/``) get a 403, as
from Toxiproxy: a web page must not reconfigure the proxies.
"""

from __future__ import annotations

import http
import json
import logging
from collections.abc import Callable
from typing import Any

from vaurien import __version__
from vaurien.http_service import ApiError, HttpService, read_body
from vaurien.proxy import Proxy
from vaurien.server import Server
from vaurien.toxics import Toxic
from vaurien.toxiproxy_proxies import (
    EXISTS,
    NOT_FOUND,
    TOXIC_EXISTS,
    TOXIC_NOT_FOUND,
    ToxiproxyError,
    apply,
    populate,
    proxy_json,
    read_entry,
    read_json,
    read_toxic,
    reset_all,
    toxics_json,
    update,
)

log = logging.getLogger(__name__)

#: The Toxiproxy version the API answers to: 2.x, whose clients update with PATCH.
TOXIPROXY_VERSION = "2.12.0"
_JSON = "application/json"


class ToxiproxyApp:
    """The WSGI application of the Toxiproxy API over a :class:`~vaurien.server.Server`."""

    def __init__(self, server: Server) -> None:
        self.server = server

    def __call__(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        method = environ.get("REQUEST_METHOD", "GET")
        path = environ.get("PATH_INFO", "") or "/"
        headers: list[tuple[str, str]] = []
        try:
            status, body = self.dispatch(method, path, environ)
        except ToxiproxyError as e:
            status, headers, body = e.status, e.headers, {"error": e.message, "status": e.status}
        except ApiError as e:  # the body: unreadable, over the limit
            status, headers = e.status, e.headers
            body = {"error": f"bad request body: {e.description}", "status": e.status}
        except Exception:
            log.exception("Toxiproxy API: %s %s failed", method, path)
            status = 500
            body = {"error": "internal error; the proxy's log has the details", "status": 500}
        if isinstance(body, tuple):  # already rendered: (content type, bytes)
            content_type, data = body
        else:
            content_type = _JSON
            data = b"" if body is None else json.dumps(body).encode()
        phrase = http.HTTPStatus(status).phrase
        response_headers = [*headers, ("Content-Length", str(len(data)))]
        if data:
            response_headers.insert(0, ("Content-Type", content_type))
        start_response(f"{status} {phrase}", response_headers)
        return [data]

    def dispatch(self, method: str, path: str, environ: dict[str, Any]) -> tuple[int, Any]:
        """The status and body answering ``method`` on ``path``."""
        if environ.get("HTTP_USER_AGENT", "").startswith("Mozilla/"):
            raise ToxiproxyError(403, "User agent not allowed")
        data = read_body(environ)
        parts = [part for part in path.split("/") if part]
        route, arguments = self._route(parts)
        handlers = self._routes[route]
        handler = handlers.get(method)
        if handler is None:
            allowed = ", ".join(handlers)
            raise ToxiproxyError(
                405,
                f"method {method} not allowed on {path} (allowed: {allowed})",
                [("Allow", allowed)],
            )
        return handler(self, data, *arguments)

    def _route(self, parts: list[str]) -> tuple[str, list[str]]:
        shapes = {
            ("version",): "version",
            ("reset",): "reset",
            ("populate",): "populate",
            ("metrics",): "metrics",
            ("proxies",): "proxies",
        }
        if tuple(parts) in shapes:
            return shapes[tuple(parts)], []
        if len(parts) >= 2 and parts[0] == "proxies":
            if len(parts) == 2:
                return "proxy", [parts[1]]
            if len(parts) == 3 and parts[2] == "toxics":
                return "toxics", [parts[1]]
            if len(parts) == 4 and parts[2] == "toxics":
                return "toxic", [parts[1], parts[3]]
        raise ToxiproxyError(404, f"not found: /{'/'.join(parts)}")

    # -- the server ------------------------------------------------------------------------

    def version(self, data: bytes) -> tuple[int, Any]:
        return 200, {"version": TOXIPROXY_VERSION, "vaurien": __version__}

    def reset(self, data: bytes) -> tuple[int, Any]:
        with self.server.lock:
            reset_all(self.server)
        return 204, None

    def metrics(self, data: bytes) -> tuple[int, Any]:
        from vaurien.metrics import prometheus_text_of

        try:
            text, content_type = prometheus_text_of(self.server)
        except ImportError as e:
            raise ToxiproxyError(
                501, f"/metrics needs prometheus-client ({e}): pip install 'vaurien[prometheus]'"
            ) from e
        return 200, (content_type, text)

    # -- proxies ---------------------------------------------------------------------------

    def list_proxies(self, data: bytes) -> tuple[int, Any]:
        return 200, {proxy.name: proxy_json(proxy) for proxy in self.server}

    def create_proxy(self, data: bytes) -> tuple[int, Any]:
        body = read_json(data)
        with self.server.lock:
            entry = read_entry(body, self.server, where="")
            if entry.current is not None:
                raise ToxiproxyError(409, EXISTS)
            apply(self.server, [entry])
        return 201, proxy_json(entry.proxy)

    def populate(self, data: bytes) -> tuple[int, Any]:
        try:
            body = json.loads(data)
        except ValueError as e:
            raise ToxiproxyError(400, f"bad request body: {e}") from None
        with self.server.lock:
            proxies = populate(self.server, body)
        return 201, {"proxies": [proxy_json(proxy) for proxy in proxies]}

    def get_proxy(self, data: bytes, name: str) -> tuple[int, Any]:
        return 200, proxy_json(self._proxy(name))

    def update_proxy(self, data: bytes, name: str) -> tuple[int, Any]:
        body = read_json(data)
        with self.server.lock:
            proxy = self._proxy(name)
            update(proxy, body)
        return 200, proxy_json(proxy)

    def delete_proxy(self, data: bytes, name: str) -> tuple[int, Any]:
        with self.server.lock:
            self._proxy(name)
            self.server.remove(name)
        return 204, None

    # -- toxics ----------------------------------------------------------------------------

    def list_toxics(self, data: bytes, name: str) -> tuple[int, Any]:
        return 200, toxics_json(self._proxy(name))

    def add_toxic(self, data: bytes, name: str) -> tuple[int, Any]:
        body = read_json(data)
        with self.server.lock:
            proxy = self._proxy(name)
            toxic = read_toxic(proxy, body)
            if proxy.toxics.get(toxic.name) is not None:
                raise ToxiproxyError(409, TOXIC_EXISTS)
            proxy.set_toxics([*proxy.toxics.toxics, toxic])
        log.info("Toxiproxy API: toxic %s added to %s", toxic.name, proxy.name)
        return 200, toxic.to_json()

    def get_toxic(self, data: bytes, name: str, toxic_name: str) -> tuple[int, Any]:
        return 200, self._toxic(self._proxy(name), toxic_name).to_json()

    def update_toxic(self, data: bytes, name: str, toxic_name: str) -> tuple[int, Any]:
        body = read_json(data)
        with self.server.lock:
            proxy = self._proxy(name)
            current = self._toxic(proxy, toxic_name)
            toxic = read_toxic(proxy, body, current)
            proxy.set_toxics([toxic if t is current else t for t in proxy.toxics.toxics])
        return 200, toxic.to_json()

    def delete_toxic(self, data: bytes, name: str, toxic_name: str) -> tuple[int, Any]:
        with self.server.lock:
            proxy = self._proxy(name)
            current = self._toxic(proxy, toxic_name)
            proxy.set_toxics([t for t in proxy.toxics.toxics if t is not current])
        return 204, None

    def _proxy(self, name: str) -> Proxy:
        proxy = self.server.get(name)
        if proxy is None:
            raise ToxiproxyError(404, NOT_FOUND)
        return proxy

    def _toxic(self, proxy: Proxy, name: str) -> Toxic:
        toxic = proxy.toxics.get(name)
        if toxic is None:
            raise ToxiproxyError(404, TOXIC_NOT_FOUND)
        return toxic

    _routes: dict[str, dict[str, Callable[..., tuple[int, Any]]]] = {
        "version": {"GET": version},
        "reset": {"POST": reset},
        "metrics": {"GET": metrics},
        "populate": {"POST": populate},
        "proxies": {"GET": list_proxies, "POST": create_proxy},
        "proxy": {
            "GET": get_proxy,
            "POST": update_proxy,
            "PATCH": update_proxy,
            "DELETE": delete_proxy,
        },
        "toxics": {"GET": list_toxics, "POST": add_toxic},
        "toxic": {
            "GET": get_toxic,
            "POST": update_toxic,
            "PATCH": update_toxic,
            "DELETE": delete_toxic,
        },
    }


class ToxiproxyServer(HttpService):
    """The Toxiproxy API of ``server``, served on ``host:port``."""

    what = "Toxiproxy API"

    def __init__(self, server: Server, host: str = "localhost", port: int = 8474) -> None:
        super().__init__(ToxiproxyApp(server), host, port)
