"""The HTTP control API of a running Vaurien.

``vaurien --http`` starts it beside the proxies, in the same gevent hub (``gevent.pywsgi``). JSON
in and out, compatible with Vaurien 1.x::

    GET  /behavior          {"behavior": "dummy"}: the name, or the spec when several share events
    PUT  /behavior          {"name": "delay", "sleep": 2} -> {"status": "ok"}
    GET  /behavior/options  {"behavior": "delay", "options": {"delay": {"sleep": 2.0, ...}}}
    GET  /behaviors         {"behaviors": ["abort", "blackout", ...], "options": {...}}
    GET  /protocols         {"protocols": ["tcp", ...]}
    GET  /backend           {"backend": "localhost:8888"}
    PUT  /backend           {"backend": "localhost:8889"} -> {"status": "ok"}
    GET  /enabled           {"enabled": true}: whether the proxy listens
    PUT  /enabled           {"enabled": false} -> {"status": "ok"}: takes it down (or up)
    GET  /rules             {"rules": [{"name", "match", "behavior", "options"}, ...]}
    PUT  /rules             {"rules": [...]}: the whole rule set, in order -> {"status": "ok"}
    DELETE /rules           no more rules
    GET  /scenario          {"scenario": ..., "step": 2, "left": 4.2, "unit": "s", "loop": 1, ...}
    PUT  /scenario          {"scenario": "30s 100:dummy; 10s 50:error"} starts it
    DELETE /scenario        ends it: the behavior mix is back
    GET  /stats             connections, bytes and events each way, behaviors applied, picks per
                            rule and per step, fds
    GET  /metrics           the same figures in the Prometheus text format (vaurien.metrics)

Those routes drive the command line's proxy (``default``, unless ``--name`` says otherwise).
Every proxy of the process has the same routes under ``/proxies/NAME``
(``PUT /proxies/cache/behavior``), and ``GET /proxies`` lists them all
(``GET /proxies/NAME`` shows one). ``GET /`` is the live dashboard, fed by the stream
``GET /dashboard/events`` (:mod:`vaurien.dashboard`).

``GET /behaviors`` also gives each behavior's options, as the command line and the config file
know them (:meth:`Option.to_json <vaurien.options.Option.to_json>`), each ``default`` being the
value this proxy uses where a ``PUT /behavior`` leaves the option out.

``PUT /behavior`` takes ``name`` (a behavior or a spec such as ``"20:delay,80:dummy"``) and the
options of the behaviors it names, either flat (``"sleep": 2`` goes to every behavior of the mix
that has a ``sleep`` option) or by behavior (``"options": {"delay": {"sleep": 2}}``, what
``GET /behavior/options`` returns, so a client can put back exactly what was there). Options not
given take the values of the command line or the config file. Everything is checked before the
new mix is put in force, in one step; a running scenario ends, and a proxy's toxics (see
:mod:`vaurien.toxiproxy_api`) give way to it.

``PUT /rules`` takes the rules in order, each ``{"name": ..., "match": ..., "behavior": ...,
"options": {"delay": {"sleep": 2}}}`` (``name`` and ``options`` may be left out) or a string in
the ``--rule`` form; the set is checked whole, then replaces the one in force in one step.
``PUT /scenario`` takes ``scenario`` and, like ``PUT /behavior``, ``options`` by behavior.

Changes (any method but GET) are refused with a 403 when they carry an ``Origin`` that is not
the API's own, so that no other web site can make a browser send them; without ``http_token``,
also when that origin is not a loopback address (a page reached through another name could be
a DNS rebinding). With ``http_token``, a change without ``Authorization: Bearer TOKEN`` is
refused with a 401.

Refused requests get ``{"status": "error", "errors": [{"location": ..., "name": ...,
"description": ...}]}`` with a 4xx status.
"""

from __future__ import annotations

import hmac
import http
import json
import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from gevent.lock import Semaphore

from vaurien.dashboard import Dashboard
from vaurien.errors import OptionError, SpecError, VaurienError
from vaurien.http_service import (
    ApiError,
    HttpService,
    error_response,
    is_exposed_name,
    parse_json,
    read_body,
)
from vaurien.mix import BehaviorMix, read_spec
from vaurien.network import Address
from vaurien.rules import Rule
from vaurien.scenario import Scenario

log = logging.getLogger(__name__)

_JSON = "application/json"
#: The methods that change nothing: every other one is a change (token and origin checked).
_READS = frozenset({"GET", "HEAD"})


class _OneProxy:
    """A lone :class:`~vaurien.proxy.Proxy` seen as a server of one."""

    def __init__(self, proxy: Any) -> None:
        self.proxies = {proxy.name: proxy}
        self.default = proxy
        self.lock = Semaphore()


class ControlApp:
    """The WSGI application: routes requests to the proxies of a
    :class:`~vaurien.server.Server` (or to one :class:`~vaurien.proxy.Proxy`), and serves the
    dashboard. With a ``token``, changes need it (see the module's documentation)."""

    def __init__(self, target: Any, token: str | None = None) -> None:
        self.server = target if hasattr(target, "proxies") else _OneProxy(target)
        self.token = token
        self.dashboard = Dashboard(self.server, describe)
        #: Routes of the process, not of one proxy.
        self.root_routes: dict[str, dict[str, Callable[[Any, dict[str, Any]], Any]]] = {
            "/proxies": {"GET": self.get_proxies},
            "/dashboard/events": {"GET": self.get_dashboard_events},
            **self.dashboard.routes,
        }
        self.routes: dict[str, dict[str, Callable[[Any, dict[str, Any]], Any]]] = {
            "": {"GET": self.get_proxy},
            "/behavior": {"GET": self.get_behavior, "PUT": self.put_behavior},
            "/behavior/options": {"GET": self.get_behavior_options},
            "/behaviors": {"GET": self.get_behaviors},
            "/protocols": {"GET": self.get_protocols},
            "/backend": {"GET": self.get_backend, "PUT": self.put_backend},
            "/enabled": {"GET": self.get_enabled, "PUT": self.put_enabled},
            "/rules": {"GET": self.get_rules, "PUT": self.put_rules, "DELETE": self.delete_rules},
            "/scenario": {
                "GET": self.get_scenario,
                "PUT": self.put_scenario,
                "DELETE": self.delete_scenario,
            },
            "/stats": {"GET": self.get_stats},
            "/metrics": {"GET": self.get_metrics},
        }

    @property
    def proxy(self) -> Any:
        """The proxy the 1.x routes drive."""
        return self.server.default

    def __call__(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        method = environ.get("REQUEST_METHOD", "GET")
        path = environ.get("PATH_INFO", "") or "/"
        try:
            status, headers, body = self.dispatch(method, path, environ)
        except ApiError as e:
            status, headers, body = error_response(e)
        except Exception:
            log.exception("control API: %s %s failed", method, path)
            status, headers, body = error_response(
                ApiError(500, "", "internal error; the proxy's log has the details", "url")
            )
        if isinstance(body, bytes):  # already rendered, with its Content-Type in headers
            data = body
        elif not isinstance(body, dict):  # a stream (the dashboard's): sent as it is made
            start_response(f"{status} {http.HTTPStatus(status).phrase}", headers)
            return body
        else:
            data = json.dumps(body, default=str).encode()  # str: options of any custom type
            headers = [("Content-Type", _JSON), *headers]
        phrase = http.HTTPStatus(status).phrase
        start_response(f"{status} {phrase}", [*headers, ("Content-Length", str(len(data)))])
        return [data]

    def dispatch(
        self, method: str, path: str, environ: dict[str, Any]
    ) -> tuple[int, list[tuple[str, str]], Any]:
        """Run the handler of ``method`` on ``path``; refusals are raised as :class:`ApiError`."""
        data = read_body(environ)  # first, whatever the route: a body over the limit is a 413
        if method not in _READS:
            self.check_change(environ)
        path = path.rstrip("/") or "/"
        if path in self.root_routes:
            handlers: dict[str, Any] | None = self.root_routes[path]
            proxy = None
        elif path.startswith("/proxies/"):
            name, slash, rest = path[len("/proxies/") :].partition("/")
            handlers = self.routes.get(slash + rest)
            proxy = self.server.proxies.get(name)
            if handlers is not None and proxy is None:
                known = ", ".join(self.server.proxies) or "none"
                raise ApiError(404, "proxy", f"no proxy named {name!r} (known: {known})", "url")
        else:
            handlers = self.routes.get(path)
            proxy = self.proxy
            if handlers is not None and proxy is None:
                raise ApiError(
                    404,
                    "proxy",
                    "this process has no command-line proxy: use /proxies/NAME" + path,
                    "url",
                )
        if handlers is None:
            raise ApiError(404, "path", f"no such resource: {path}", "url")
        handler = handlers.get(method)
        if handler is None:
            allowed = ", ".join(handlers)
            raise ApiError(
                405,
                "method",
                f"{method} is not allowed on {path} (allowed: {allowed})",
                "url",
                headers=[("Allow", allowed)],
            )
        body = parse_json(data) if method == "PUT" else {}
        result = handler(proxy, body)
        if isinstance(result, tuple):
            return result
        return 200, [], result

    def check_change(self, environ: dict[str, Any]) -> None:
        """Refuse a change without the token (401), or sent by a page of another origin, or
        without a token by a page that is not on a loopback address (403)."""
        if self.token is not None:
            scheme, _, given = environ.get("HTTP_AUTHORIZATION", "").partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(
                given.strip().encode(), self.token.encode()
            ):
                raise ApiError(
                    401,
                    "Authorization",
                    "this API needs its token for changes: Authorization: Bearer TOKEN",
                    "header",
                    headers=[("WWW-Authenticate", 'Bearer realm="vaurien"')],
                )
        origin = environ.get("HTTP_ORIGIN")
        if origin is None:  # not sent by a browser on behalf of a page
            return
        host = environ.get("HTTP_HOST", "")
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or parts.netloc.lower() != host.lower():
            raise ApiError(
                403,
                "Origin",
                f"cross-site request refused: a page of {origin} cannot change this API ({host})",
                "header",
            )
        if self.token is None and is_exposed_name(parts.hostname or ""):
            raise ApiError(
                403,
                "Origin",
                f"a page of {origin} may change this API only with its token (http_token): "
                "without one, only pages on a loopback address (localhost, 127.0.0.1, [::1]) may",
                "header",
            )

    # -- the proxies -----------------------------------------------------------------------

    def get_proxies(self, proxy: Any, body: dict[str, Any]) -> dict[str, Any]:
        """Every proxy of the process, by name."""
        return {"proxies": {each.name: describe(each) for each in self.server.proxies.values()}}

    def get_proxy(self, proxy: Any, body: dict[str, Any]) -> dict[str, Any]:
        """One proxy: where it listens and forwards, its protocol and mix, whether it is up."""
        return describe(proxy)

    def get_dashboard_events(self, proxy: Any, body: dict[str, Any]) -> Any:
        """The dashboard's stream of samples, once a second (``text/event-stream``)."""
        stream = self.dashboard.events()
        if stream is None:
            raise ApiError(503, "dashboard", "too many dashboards are open: close one", "url")
        return stream

    # -- the behavior ----------------------------------------------------------------------

    def get_behavior(self, proxy: Any, body: dict[str, Any]) -> dict[str, Any]:
        """The mix in force: a name when one behavior has every event, else the spec."""
        return {"behavior": str(proxy.behavior)}

    def get_behavior_options(self, proxy: Any, body: dict[str, Any]) -> dict[str, Any]:
        """The mix in force and the option values of each of its behaviors."""
        mix = proxy.mix
        return {
            "behavior": str(mix.spec),
            "options": {name: dict(mix.behaviors[name].settings) for name in mix.spec.names},
        }

    def put_behavior(self, proxy: Any, body: dict[str, Any]) -> dict[str, Any]:
        """Check a new mix and its options, then put it in force for every following event."""
        fields = dict(body)
        if "name" not in fields:
            raise ApiError(
                400,
                "name",
                'the body must have a "name": a behavior, or a spec such as "20:delay,80:dummy"',
            )
        mix = self._mix(proxy, fields.pop("name"))
        nested = fields.pop("options", None)
        options = self._options(proxy, mix, fields, nested)
        try:
            proxy.set_behavior(mix, options)
        except OptionError as e:
            raise ApiError(400, e.option, str(e)) from e
        except VaurienError as e:  # a plugin that cannot be created with these options
            raise ApiError(400, "name", str(e)) from e
        given = "; ".join(
            f"{name}: " + ", ".join(f"{key}={value!r}" for key, value in values.items())
            for name, values in options.items()
            if values
        )
        log.info(
            "control API: behavior of %s set to %s%s",
            proxy.name,
            mix,
            f" ({given})" if given else "",
        )
        return {"status": "ok"}

    def _mix(self, proxy: Any, name: Any) -> BehaviorMix:
        if not isinstance(name, str) or not name.strip():
            raise ApiError(400, "name", f"name must be a behavior name or a spec, got {name!r}")
        spec = name if ":" in name else BehaviorMix.single(name.strip())
        try:
            # Registered names only: the API never imports code named by a dotted path.
            return read_spec(spec, proxy.config.behaviors, imports=False)
        except VaurienError as e:
            raise ApiError(400, "name", str(e)) from e

    def _options(
        self, proxy: Any, mix: BehaviorMix, flat: dict[str, Any], nested: Any
    ) -> dict[str, dict[str, Any]]:
        registry = proxy.config.behaviors
        tables = {name: registry.options(name) for name in mix.names}
        options: dict[str, dict[str, Any]] = {name: {} for name in mix.names}
        for key, value in flat.items():
            owners = [name for name in mix.names if key in tables[name]]
            if not owners:
                known = sorted({option for table in tables.values() for option in table})
                raise ApiError(
                    400,
                    key,
                    f"unknown option {key!r} for {', '.join(mix.names)} "
                    f"(known: {', '.join(known) or 'none'})",
                )
            for name in owners:
                options[name][key] = _check(tables[name][key], value)
        if nested is None:
            return options
        if not isinstance(nested, dict):
            raise ApiError(400, "options", "options must map behavior names to their options")
        for name, values in nested.items():
            if name not in tables:
                raise ApiError(400, "options", f"behavior {name!r} is not in the mix {mix}")
            if not isinstance(values, dict):
                raise ApiError(400, "options", f"the options of {name!r} must be an object")
            for key, value in values.items():
                field = f"{name}.{key}"  # the same option may be another behavior's too
                if key not in tables[name]:
                    known = ", ".join(sorted(tables[name])) or "none"
                    raise ApiError(
                        400, field, f"unknown option {key!r} for {name} (known: {known})"
                    )
                options[name][key] = _check(tables[name][key], value, field)
        return options

    def get_behaviors(self, proxy: Any, body: dict[str, Any]) -> dict[str, Any]:
        """The names of the behaviors this proxy knows, and their options."""
        config = proxy.config
        registry = config.behaviors
        options = {}
        for name in registry.names():
            configured = config.options_for("behavior", name)
            options[name] = {
                key: option.to_json(configured.get(key))
                for key, option in registry.options(name).items()
            }
        return {"behaviors": registry.names(), "options": options}

    def get_protocols(self, proxy: Any, body: dict[str, Any]) -> dict[str, Any]:
        """The names of the protocols this proxy knows."""
        return {"protocols": proxy.config.protocols.names()}

    # -- the backend -----------------------------------------------------------------------

    def get_backend(self, proxy: Any, body: dict[str, Any]) -> dict[str, Any]:
        """Where new connections go."""
        return {"backend": str(proxy.backend)}

    def put_backend(self, proxy: Any, body: dict[str, Any]) -> dict[str, Any]:
        """Send new connections to another backend; open ones stay where they are."""
        _only(body, "backend")
        text = body.get("backend")
        if not isinstance(text, str):
            raise ApiError(400, "backend", f'"backend" must be "HOST:PORT", got {text!r}')
        try:
            address = Address.parse(text)
        except VaurienError as e:
            raise ApiError(400, "backend", str(e)) from e
        proxy.backend = address
        log.info("control API: backend of %s set to %s", proxy.name, address)
        return {"status": "ok"}

    # -- up or down -------------------------------------------------------------------------

    def get_enabled(self, proxy: Any, body: dict[str, Any]) -> dict[str, Any]:
        """Whether the proxy is up (listening, or waiting for its backend)."""
        return {"enabled": proxy.enabled}

    def put_enabled(self, proxy: Any, body: dict[str, Any]) -> dict[str, Any]:
        """Take the proxy down (its sessions are closed, connects refused) or up again on the
        same address."""
        for key in body:
            if key != "enabled":
                raise ApiError(400, key, f'unknown field {key!r} (known: "enabled")')
        enabled = body.get("enabled")
        if not isinstance(enabled, bool):
            raise ApiError(400, "enabled", f'"enabled" must be true or false, got {enabled!r}')
        with self.server.lock:
            if enabled and not proxy.enabled:
                try:
                    proxy.start()
                except VaurienError as e:  # its address is taken now
                    raise ApiError(409, "enabled", str(e)) from e
            elif not enabled and proxy.enabled:
                proxy.disable()
            else:
                return {"status": "ok"}
        log.info("control API: %s %s", proxy.name, "enabled" if enabled else "disabled")
        return {"status": "ok"}

    # -- rules and scenarios (vaurien.plan) ------------------------------------------------

    def get_rules(self, proxy: Any, body: dict[str, Any]) -> dict[str, Any]:
        """The rules in force, in order, with their options."""
        return {"rules": proxy.chaos.rules()}

    def put_rules(self, proxy: Any, body: dict[str, Any]) -> dict[str, Any]:
        """Check a whole rule set, then put it in force in place of the one there was."""
        _only(body, "rules")
        given = body.get("rules")
        if not isinstance(given, list):
            raise ApiError(400, "rules", '"rules" must be a list of rules')
        try:
            rules = [_rule(each) for each in given]
            proxy.chaos.set_rules(rules, imports=False)
        except VaurienError as e:
            raise ApiError(400, "rules", str(e)) from e
        log.info("control API: %s: %d rule(s) set", proxy.name, len(rules))
        return {"status": "ok"}

    def delete_rules(self, proxy: Any, body: dict[str, Any]) -> dict[str, Any]:
        """No more rules: every request gets the behavior mix (or the scenario's step)."""
        proxy.chaos.set_rules([])
        log.info("control API: %s: rules removed", proxy.name)
        return {"status": "ok"}

    def get_scenario(self, proxy: Any, body: dict[str, Any]) -> dict[str, Any]:
        """The running scenario: its step, what is left of it, its pass."""
        return proxy.chaos.scenario()

    def put_scenario(self, proxy: Any, body: dict[str, Any]) -> dict[str, Any]:
        """Start a scenario from its first step, in place of a running one."""
        _only(body, "scenario", "options")
        text = body.get("scenario")
        if not isinstance(text, str):
            raise ApiError(400, "scenario", '"scenario" must be a string: "30s 100:dummy; ..."')
        options = body.get("options") or {}
        if not isinstance(options, dict) or not all(isinstance(v, dict) for v in options.values()):
            raise ApiError(400, "options", "options must map behavior names to their options")
        try:
            proxy.chaos.set_scenario(Scenario.parse(text), options, imports=False)
        except VaurienError as e:
            raise ApiError(400, "scenario", str(e)) from e
        log.info("control API: %s: scenario started: %s", proxy.name, text)
        return {"status": "ok"}

    def delete_scenario(self, proxy: Any, body: dict[str, Any]) -> dict[str, Any]:
        """End the running scenario; the behavior mix is back."""
        proxy.chaos.end_scenario()
        log.info("control API: %s: scenario ended", proxy.name)
        return {"status": "ok"}

    # -- counters --------------------------------------------------------------------------

    def get_stats(self, proxy: Any, body: dict[str, Any]) -> dict[str, Any]:
        """The proxy's counters."""
        return proxy.stats()

    def get_metrics(
        self, proxy: Any, body: dict[str, Any]
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        """The counters in the Prometheus text format."""
        from vaurien.metrics import prometheus_text

        try:
            text, content_type = prometheus_text(proxy)
        except ImportError as e:
            raise ApiError(
                501,
                "metrics",
                f"/metrics needs prometheus-client ({e}): pip install 'vaurien[prometheus]'",
                "url",
            ) from e
        return 200, [("Content-Type", content_type)], text


def describe(proxy: Any) -> dict[str, Any]:
    """What ``GET /proxies/NAME`` shows of a proxy."""
    return {
        "name": proxy.name,
        "proxy": proxy.address_text,
        "backend": str(proxy.backend),
        "protocol": proxy.config.protocol,
        "behavior": str(proxy.behavior),
        "enabled": proxy.enabled,
    }


def _only(body: dict[str, Any], *known: str) -> None:
    for key in body:
        if key not in known:
            expected = ", ".join(f'"{name}"' for name in known)
            raise ApiError(400, key, f"unknown field {key!r} (known: {expected})")


def _rule(given: Any) -> Rule:
    """A rule of a ``PUT /rules`` body: an object or a string in the ``--rule`` form."""
    if isinstance(given, str):
        return Rule.parse(given)
    if not isinstance(given, dict):
        raise SpecError(f"a rule must be an object or a string, got {given!r}")
    unknown = sorted(set(given) - {"name", "match", "behavior", "options"})
    if unknown:
        raise SpecError(
            f"unknown field {unknown[0]!r} in a rule (known: name, match, behavior, options)"
        )
    for key in ("match", "behavior"):
        if key not in given:
            raise SpecError(f"a rule needs {key!r}: {given!r}")
    return Rule.create(
        given.get("name", ""), given["match"], given["behavior"], given.get("options")
    )


def _check(option: Any, value: Any, field: str | None = None) -> Any:
    try:
        return option.check(value)
    except OptionError as e:
        raise ApiError(400, field or e.option, str(e)) from e


class ControlServer(HttpService):
    """The control API of ``target`` (a :class:`~vaurien.server.Server`, or one proxy), served
    on ``host:port``; with ``token``, changes need it."""

    def __init__(
        self, target: Any, host: str = "localhost", port: int = 8080, token: str | None = None
    ) -> None:
        super().__init__(ControlApp(target, token), host, port)
