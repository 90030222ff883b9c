"""What Toxiproxy's verbs do to a server's proxies: proxies and toxics as Toxiproxy's JSON shows
them, bodies checked whole, and the changes (populate, update, reset) made all or nothing.
:mod:`vaurien.toxiproxy_api` serves them over HTTP; a startup file (``--toxiproxy-config``) goes
through the same :func:`populate`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import socket
from collections.abc import Sequence
from typing import Any

from vaurien.errors import ConfigError, VaurienError
from vaurien.http_service import ApiError, parse_json
from vaurien.network import Address
from vaurien.proxy import Proxy
from vaurien.server import Server
from vaurien.settings import SETTINGS_BY_NAME, proxy_name
from vaurien.toxics import Toxic, ToxicError, make_toxic

log = logging.getLogger(__name__)

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
        read_entry(item, server, where=f" at proxy {index}") for index, item in enumerate(body, 1)
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
        toxic = read_toxic(entry.proxy, body)
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


def read_json(data: bytes) -> Any:
    try:
        return parse_json(data)
    except ApiError as e:
        raise ToxiproxyError(400, f"bad request body: {e.description}") from None


def read_entry(body: Any, server: Server, where: str) -> _Entry:
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


def read_toxic(proxy: Proxy, body: Any, current: Toxic | None = None) -> Toxic:
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
