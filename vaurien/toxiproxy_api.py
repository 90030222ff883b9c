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

import dataclasses
import http
import json
import logging
import socket
from collections.abc import Callable, Sequence
from typing import Any

from vaurien import __version__
from vaurien.api import ApiError, HttpService, parse_json, read_body
from vaurien.errors import ConfigError, VaurienError
from vaurien.network import Address
from vaurien.proxy import Proxy
from vaurien.server import Server
from vaurien.settings import SETTINGS_BY_NAME, proxy_name
from vaurien.toxics import Toxic, ToxicError, make_toxic

log = logging.getLogger(__name__)

#: The Toxiproxy version the API answers to: 2.x, whose clients update with PATCH.
TOXIPROXY_VERSION = "2.12.0"
#: The fields of a proxy's body: Toxiproxy's, then Vaurien's.
PROXY_FIELDS = ("name", "listen", "upstream", "enabled", "toxics")
#: Vaurien's settings a proxy body may give when the proxy is made (its ``[proxy:NAME]`` keys
#: of the same names); changing one later means making the proxy anew.
MADE_WITH = (
    "protocol",
    "refuse_when_backend_down",
    "backend_tls",
    "backend_ca",
    "backend_sni",
    "backend_insecure",
    "tls_cert",
    "tls_key",
    "tls_self_signed",
    "tls_cert_out",
)
#: Where a proxy listens when its body says nothing (Toxiproxy: every interface).
DEFAULT_LISTEN = Address("127.0.0.1", 0)

_JSON = "application/json"


class ToxiproxyError(Exception):
    """A request refused, with Toxiproxy's status and message."""

    def __init__(self, status: int, message: str, headers: Sequence[tuple[str, str]] = ()):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = list(headers)


NOT_FOUND = "proxy not found"
EXISTS = "proxy already exists"
TOXIC_NOT_FOUND = "toxic not found"
TOXIC_EXISTS = "toxic already exists"


@dataclasses.dataclass
class _Entry:
    """One proxy of a create or populate request, checked: what to do with it."""

    name: str
    listen: Address
    upstream: Address
    enabled: bool | None  # None: not given
    toxics: list[Any] | None  # None: not given
    made_with: dict[str, Any]  # settings of MADE_WITH the body gives
    proxy: Proxy | None = None  # the proxy it is (a new one, or the one already there)
    current: Proxy | None = None  # the proxy of that name already there, if any
    action: str = "new"  # new, same, move, replace
    made: list[Toxic] = dataclasses.field(default_factory=list)
    before: tuple[Address, Address, bool] | None = None  # current's listen, backend, enabled


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
        body = _json(data)
        with self.server.lock:
            entry = _entry(body, self.server, where="")
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
        body = _json(data)
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
        body = _json(data)
        with self.server.lock:
            proxy = self._proxy(name)
            toxic = _toxic(proxy, body)
            if proxy.toxics.get(toxic.name) is not None:
                raise ToxiproxyError(409, TOXIC_EXISTS)
            proxy.set_toxics([*proxy.toxics.toxics, toxic])
        log.info("Toxiproxy API: toxic %s added to %s", toxic.name, proxy.name)
        return 200, toxic.to_json()

    def get_toxic(self, data: bytes, name: str, toxic_name: str) -> tuple[int, Any]:
        return 200, self._toxic(self._proxy(name), toxic_name).to_json()

    def update_toxic(self, data: bytes, name: str, toxic_name: str) -> tuple[int, Any]:
        body = _json(data)
        with self.server.lock:
            proxy = self._proxy(name)
            current = self._toxic(proxy, toxic_name)
            toxic = _toxic(proxy, body, current)
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


# -- what the requests do -----------------------------------------------------------------------


def proxy_json(proxy: Proxy) -> dict[str, Any]:
    """A proxy as Toxiproxy's API shows it, its fields in Toxiproxy's order."""
    return {
        "name": proxy.name,
        "listen": str(proxy.listen_address),
        "upstream": str(proxy.config.backend),
        "enabled": proxy.enabled,
        "toxics": toxics_json(proxy),
    }


def toxics_json(proxy: Proxy) -> list[dict[str, Any]]:
    """A proxy's toxics as Toxiproxy lists them: the upstream ones first, each stream's in the
    order they were added (the order they act in)."""
    toxics = sorted(proxy.toxics.toxics, key=lambda toxic: toxic.stream != "upstream")
    return [toxic.to_json() for toxic in toxics]


def populate(server: Server, body: Any) -> list[Proxy]:
    """Create, or replace by name, the proxies of ``body`` (a JSON array of proxies); return
    them in order.

    A proxy whose ``listen`` and ``upstream`` are those it has keeps its connections and, unless
    the entry lists ``toxics``, its toxics; one whose addresses (or ``protocol``) differ is made
    anew, on those addresses. Everything is checked, and every new address bound, before
    anything changes: a request refused changes nothing.
    """
    if not isinstance(body, list):
        raise ToxiproxyError(
            400, f"bad request body: expected an array of proxies, not {_kind(body)}"
        )
    entries = [
        _entry(item, server, where=f" at proxy {index}") for index, item in enumerate(body, 1)
    ]
    names = [entry.name for entry in entries]
    for index, name in enumerate(names, 1):
        if name in names[: index - 1]:
            raise ToxiproxyError(
                400, f"bad request body: two proxies named {name} (at proxy {index})"
            )
    apply(server, entries)
    return [entry.proxy for entry in entries]


def apply(server: Server, entries: list[_Entry]) -> None:
    """Make checked ``entries`` real: bind, then swap; if a bind fails, undo what was bound and
    raise (409), so that nothing changed."""
    for entry in entries:
        _prepare(server, entry)
    done: list[_Entry] = []
    try:
        for entry in entries:
            _bind(entry)
            done.append(entry)
    except VaurienError as e:
        for entry in reversed(done):
            _unbind(entry)
        raise ToxiproxyError(409, str(e)) from None
    for entry in entries:
        if entry.action in ("new", "replace"):
            if entry.current is not None:
                server.proxies.pop(entry.name, None)
            server.add(entry.proxy)
        proxy = entry.proxy
        if entry.toxics is not None or entry.action in ("move",):
            proxy.set_toxics(entry.made)
        if entry.enabled is False and proxy.enabled:
            proxy.disable()
        log.info("Toxiproxy API: proxy %s %s", proxy.name, _DONE[entry.action])


_DONE = {"new": "created", "same": "kept", "move": "moved", "replace": "made anew"}


def _prepare(server: Server, entry: _Entry) -> None:
    """Settle what to do with ``entry`` and make its proxy and toxics, checking everything."""
    current = entry.current
    if current is None:
        entry.action = "new"
    elif any(getattr(current.config, key) != value for key, value in entry.made_with.items()):
        entry.action = "replace"
    elif same_listen(current, entry.listen) and entry.upstream == current.config.backend:
        entry.action = "same"
    else:
        entry.action = "move"
    if entry.action in ("new", "replace"):
        values = {"proxy": entry.listen, "backend": entry.upstream, **entry.made_with}
        try:
            entry.proxy = Proxy(server.config.proxy_config(entry.name, **values))
        except VaurienError as e:
            raise ToxiproxyError(400, f"bad request body: {e}") from None
    else:
        entry.proxy = current
    seen: set[str] = set()
    for body in entry.toxics or []:
        toxic = _toxic(entry.proxy, body)
        if toxic.name in seen:
            raise ToxiproxyError(409, TOXIC_EXISTS)
        seen.add(toxic.name)
        entry.made.append(toxic)


def _bind(entry: _Entry) -> None:
    """Bind what ``entry`` needs: a failure raises, and :func:`_unbind` undoes the others."""
    enabled = entry.enabled is not False
    current = entry.current
    if current is not None:
        entry.before = (current.config.proxy, current.config.backend, current.enabled)
    if entry.action == "new":
        if enabled:
            entry.proxy.start()
    elif entry.action == "replace":
        current.disable()  # first: the new proxy may take the same address
        try:
            if enabled:
                entry.proxy.start()
        except VaurienError:
            _undo(entry)
            raise
    elif entry.action == "move":
        current.move(listen=entry.listen, backend=entry.upstream)
        if enabled and not current.enabled:
            current.start()
    elif entry.enabled is True and not current.enabled:  # left as it is, unless told
        current.start()


def _unbind(entry: _Entry) -> None:
    """Undo :func:`_bind` for an entry bound before another one failed."""
    if entry.action in ("new", "replace"):
        entry.proxy.stop()
    if entry.current is not None:
        _undo(entry)


def _undo(entry: _Entry) -> None:
    """Put the proxy that was there back as it was (best effort: its port may be gone)."""
    proxy = entry.current
    listen, backend, enabled = entry.before
    try:
        if (listen, backend) != (proxy.config.proxy, proxy.config.backend):
            proxy.move(listen=listen, backend=backend)
        if enabled and not proxy.enabled:
            proxy.start()
        elif not enabled and proxy.enabled:
            proxy.disable()
    except VaurienError as e:
        log.error("Toxiproxy API: cannot put proxy %s back as it was: %s", proxy.name, e)


def update(proxy: Proxy, body: Any) -> None:
    """Change ``proxy`` as a ``POST``/``PATCH /proxies/NAME`` body says: a new ``listen`` or
    ``upstream`` restarts it (its connections are closed), ``enabled`` takes it down or up."""
    if not isinstance(body, dict):
        raise ToxiproxyError(400, f"bad request body: a proxy is a JSON object, not {_kind(body)}")
    fields = _fields(body, "")
    if fields.get("name", proxy.name) != proxy.name:
        raise ToxiproxyError(
            400, "bad request body: a proxy's name cannot change: delete it and create it anew"
        )
    for key in MADE_WITH:
        current = getattr(proxy.config, key)
        if fields.get(key, current) != current:
            raise ToxiproxyError(
                400,
                f"bad request body: a proxy's {key} is set when it is made: "
                "delete it and create it anew",
            )
    listen = _address(fields, "listen", None)
    upstream = _address(fields, "upstream", None)
    enabled = fields.get("enabled")
    moves = {}
    if listen is not None and not same_listen(proxy, listen):
        moves["listen"] = listen
    if upstream is not None and upstream != proxy.config.backend:
        moves["backend"] = upstream
    try:
        if enabled is True and not proxy.enabled:
            proxy.start(moves.pop("listen", None))  # up on the new address, or nothing changes
        if moves:
            proxy.move(**moves)
    except VaurienError as e:
        raise ToxiproxyError(409, str(e)) from None
    if enabled is False and proxy.enabled:
        proxy.disable()


def reset_all(server: Server) -> None:
    """Every proxy enabled, its toxics removed and its configured mix back (``POST /reset``).
    A proxy that cannot listen again is a 409 naming it, once every other one is reset."""
    failed = []
    for proxy in server:
        try:
            proxy.reset()
        except VaurienError as e:
            failed.append(f"{proxy.name}: {e}")
    if failed:
        raise ToxiproxyError(409, "; ".join(failed))


def same_listen(proxy: Proxy, address: Address) -> bool:
    """Whether listening on ``address`` is what ``proxy`` does already: the address it was
    asked for (port 0 included), the one it bound, or a name for that one (``localhost``)."""
    bound = proxy.listen_address
    if address in (proxy.config.proxy, bound):
        return True
    if address.port != bound.port:
        return False
    try:
        found = socket.getaddrinfo(address.host, address.port, type=socket.SOCK_STREAM)
    except OSError:
        return False
    return any(info[4][0] == bound.host for info in found)


# -- reading bodies -------------------------------------------------------------------------------


def _json(data: bytes) -> Any:
    try:
        return parse_json(data)
    except ApiError as e:
        raise ToxiproxyError(400, f"bad request body: {e.description}") from None


def _entry(body: Any, server: Server, where: str) -> _Entry:
    if not isinstance(body, dict):
        raise ToxiproxyError(
            400, f"bad request body: a proxy is a JSON object, not {_kind(body)}{where}"
        )
    fields = _fields(body, where)
    for required in ("name", "upstream"):
        if not fields.get(required):
            raise ToxiproxyError(400, f"missing required field: {required}{where}")
    name = fields["name"]
    try:
        proxy_name(name)
    except ConfigError as e:
        raise ToxiproxyError(400, f"bad request body: {e}{where}") from None
    toxics = fields.get("toxics")
    if toxics is not None and not isinstance(toxics, list):
        raise ToxiproxyError(400, f"bad request body: toxics must be an array{where}")
    return _Entry(
        name=name,
        listen=_address(fields, "listen", DEFAULT_LISTEN, where),
        upstream=_address(fields, "upstream", None, where),
        enabled=fields.get("enabled"),
        toxics=toxics,
        made_with={key: fields[key] for key in MADE_WITH if key in fields},
        current=server.get(name),
    )


_TYPES = {
    "name": str,
    "listen": str,
    "upstream": str,
    "enabled": bool,
    "toxics": list,
    **{key: bool if SETTINGS_BY_NAME[key].option.type is bool else str for key in MADE_WITH},
}


def _fields(body: dict[str, Any], where: str) -> dict[str, Any]:
    """The fields of a proxy body that are not null, each of its type."""
    known = (*PROXY_FIELDS, *MADE_WITH)
    fields = {}
    for key, value in body.items():
        if key not in known:
            raise ToxiproxyError(
                400, f"bad request body: unknown field {key!r}{where} (known: {', '.join(known)})"
            )
        if value is None:
            continue
        if not isinstance(value, _TYPES[key]):
            raise ToxiproxyError(
                400,
                f"bad request body: {key} must be {_TYPE_NAMES[_TYPES[key]]}, "
                f"not {_kind(value)}{where}",
            )
        fields[key] = value
    return fields


_TYPE_NAMES = {str: "a string", bool: "true or false", list: "an array"}


def _address(fields: dict[str, Any], key: str, default: Address | None, where: str = "") -> Any:
    text = fields.get(key)
    if text is None or (key == "listen" and not text):
        return default
    if key == "listen" and text.startswith(":"):
        text = "0.0.0.0" + text  # Toxiproxy's ":PORT", every interface
    try:
        return Address.parse(text)
    except VaurienError as e:
        raise ToxiproxyError(400, f"bad request body: {key}: {e}{where}") from None


def _toxic(proxy: Proxy, body: Any, current: Toxic | None = None) -> Toxic:
    try:
        return make_toxic(proxy, body, current)
    except ToxicError as e:
        raise ToxiproxyError(e.status, str(e)) from None


def _kind(value: Any) -> str:
    names = {list: "an array", dict: "an object", str: "a string", bool: "a boolean"}
    if value is None:
        return "null"
    return names.get(
        type(value), "a number" if isinstance(value, (int, float)) else type(value).__name__
    )


class ToxiproxyServer(HttpService):
    """The Toxiproxy API of ``server``, served on ``host:port``."""

    what = "Toxiproxy API"

    def __init__(self, server: Server, host: str = "localhost", port: int = 8474) -> None:
        super().__init__(ToxiproxyApp(server), host, port)


def load_startup_file(server: Server, path: str) -> list[Proxy]:
    """Create the proxies of a startup file (``--toxiproxy-config``), the JSON array
    ``POST /populate`` takes, toxics included. Errors are :class:`ConfigError` naming the
    file."""
    try:
        with open(path, encoding="utf-8") as f:
            body = json.load(f)
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the Toxiproxy config: {e.strerror}") from None
    except ValueError as e:
        raise ConfigError(f"{path}: not valid JSON: {e}") from None
    try:
        with server.lock:
            return populate(server, body)
    except ToxiproxyError as e:
        raise ConfigError(f"{path}: {e.message}") from None
