"""The global settings of a proxy, declared once, and :class:`ProxyConfig`.

A :class:`Setting` is an :class:`~vaurien.options.Option` (read, checked and bounded by the same
code as the plugins' options) plus where it is set: its flag and its key in a section of the
config file. Each feeds the command-line parser, the config file, the sample config and the
docs. Plugin options come from the plugins' own tables; this module holds everything else.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import re
from collections.abc import Callable, Mapping
from typing import Any

from vaurien.behaviors import Behavior
from vaurien.errors import ConfigError, OptionError
from vaurien.mix import BehaviorMix, read_spec
from vaurien.network import Address
from vaurien.options import Option, Range, at_least, between
from vaurien.plan import rule_parts, step_specs
from vaurien.protocols import Protocol
from vaurien.registry import Registry
from vaurien.rules import Rule, compile_rule, number_rules
from vaurien.scenario import Scenario

# The converters of settings whose text has its own words in errors (``Option.parse`` shows a
# converter's ConfigError as it is).


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise ConfigError(f"expected a finite number, got {text!r}")
    return value


def _whole_number(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ConfigError(f"expected a whole number, got {text!r}") from None


def _host(text: str) -> str:
    host = text.strip()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not host:
        raise ConfigError("expected a host name or address, got an empty value")
    return host


#: What a proxy's name may hold: it is a part of the control APIs' URLs, and an INI section's.
_NAME = re.compile(r"[A-Za-z0-9_.-]{1,100}")


def proxy_name(text: str) -> str:
    """Check a proxy's name: letters, digits, ``_``, ``.`` and ``-``, at most 100."""
    if not _NAME.fullmatch(text):
        raise ConfigError(
            f"{text!r} is not a proxy name: use letters, digits, '_', '.' and '-' (at most 100)"
        )
    return text


def _path(text: str) -> str:
    if not text.strip():
        raise ConfigError("expected a file path, got an empty value")
    return text


def _token(text: str) -> str:
    # It travels in an HTTP header: visible ASCII only, and long enough not to be guessed.
    if len(text) < 8 or not all("!" <= char <= "~" for char in text):
        raise ConfigError("expected at least 8 visible ASCII characters (no spaces)")
    return text


def _word(*words: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        word = text.strip().lower()
        if word not in words:
            expected = ", ".join(words[:-1]) + f" or {words[-1]}"
            raise ConfigError(f"expected {expected}, got {text!r}")
        return word

    parse.__name__ = "word"
    return parse


@dataclasses.dataclass(frozen=True)
class Setting:
    """One global setting: an option, its INI ``section`` and the ``metavar`` of its flag.

    The flag is ``--name-with-dashes``. In ``[vaurien]`` the key is ``name``; in another section
    it is ``name`` without the section's prefix (``statsd_host`` is ``host`` in ``[statsd]``).
    A ``per_proxy`` setting may differ from one named proxy to the next: it is also a key of
    the ``[proxy:NAME]`` sections.
    """

    option: Option
    section: str = "vaurien"
    metavar: str | None = None
    per_proxy: bool = False

    @property
    def name(self) -> str:
        """The setting's name, also the attribute of :class:`ProxyConfig`."""
        return self.option.name

    @property
    def default(self) -> Any:
        """The value when nothing sets it."""
        return self.option.default

    @property
    def help(self) -> str:
        """What it does, for the flag's help, the sample config and the docs."""
        return self.option.description

    @property
    def flag(self) -> str:
        """The command-line flag."""
        return "--" + self.name.replace("_", "-")

    @property
    def key(self) -> str:
        """The key in the INI section."""
        prefix = f"{self.section}_"
        if self.section != "vaurien" and self.name.startswith(prefix):
            return self.name[len(prefix) :]
        return self.name

    @property
    def is_flag(self) -> bool:
        """True for on/off settings, which take ``--x`` / ``--no-x`` on the command line."""
        return self.option.type is bool

    def parse(self, text: str) -> Any:
        """Convert and check a value written as text; errors are ``OptionError``."""
        return self.option.parse(text)


def _setting(
    name: str,
    type_: Callable[[Any], Any],
    default: Any,
    help: str,
    metavar: str | None = None,
    *,
    range: Range | None = None,
    section: str = "vaurien",
    per_proxy: bool = False,
) -> Setting:
    return Setting(Option(name, help, type_, default, range=range), section, metavar, per_proxy)


_PORT = between(0, 65535)

SETTINGS: tuple[Setting, ...] = (
    _setting(
        "name",
        proxy_name,
        "default",
        "Name of the proxy the command line (or [vaurien]) defines; the control APIs and the "
        "logs call it by this name.",
        "NAME",
        per_proxy=True,
    ),
    _setting(
        "proxy",
        Address.parse,
        Address("localhost", 8000),
        "Address to listen on.",
        "HOST:PORT",
        per_proxy=True,
    ),
    _setting(
        "backend",
        Address.parse,
        None,
        "Address of the backend to forward to.",
        "HOST:PORT",
        per_proxy=True,
    ),
    _setting(
        "protocol",
        str,
        "tcp",
        "Protocol of the traffic: a registered name or a dotted path to a class.",
        "NAME",
        per_proxy=True,
    ),
    _setting(
        "behavior",
        BehaviorMix.parse,
        BehaviorMix.single("dummy"),
        "Behavior mix, PERCENT:NAME[+NAME...][,PERCENT:NAME...]; what is left goes to dummy. "
        "NAME+NAME chains behaviors: each acts on the same event in turn.",
        "SPEC",
        per_proxy=True,
    ),
    _setting(
        "scope",
        _word("event", "connection"),
        "event",
        "When a behavior is picked from the mix: for each event (event), or once per "
        "connection, both directions sharing the pick for the connection's life (connection).",
        "SCOPE",
        per_proxy=True,
    ),
    _setting(
        "scenario",
        Scenario.parse,
        None,
        "Steps of behavior mixes over time, LENGTH SPEC; LENGTH SPEC; ...[; repeat]: a length "
        "is a time (500ms, 30s, 2m), picks (100req), new connections (5conn) or bytes relayed "
        "(512KiB, 10MiB). Each step's mix takes the place of behavior while it lasts.",
        "STEPS",
        per_proxy=True,
    ),
    _setting(
        "timeout",
        _number,
        30.0,
        "Seconds to connect to the backend, and seconds a session may stay idle.",
        "SECONDS",
        range=at_least(0.001),
        per_proxy=True,
    ),
    _setting(
        "stay_connected",
        bool,
        False,
        "Keep idle sessions open (no idle timeout).",
        per_proxy=True,
    ),
    _setting(
        "tcp_keepalive",
        bool,
        False,
        "TCP keep-alive probes on both connections of every session, so that a peer that "
        "vanished ends its idle session.",
        per_proxy=True,
    ),
    _setting(
        "backend_tls",
        bool,
        False,
        "Speak TLS to the backend, verifying its certificate (against the system's trust "
        "store, or backend_ca) and its name.",
        per_proxy=True,
    ),
    _setting(
        "backend_ca",
        _path,
        None,
        "CA certificates (PEM) the backend's certificate is verified against, instead of the "
        "system's trust store (with backend_tls).",
        "FILE",
        per_proxy=True,
    ),
    _setting(
        "backend_sni",
        _host,
        None,
        "Name sent to the backend in the TLS handshake (SNI) and checked in its certificate; "
        "the backend's host by default (with backend_tls).",
        "NAME",
        per_proxy=True,
    ),
    _setting(
        "backend_insecure",
        bool,
        False,
        "Do not verify the backend's certificate or name, for test servers (with backend_tls).",
        per_proxy=True,
    ),
    _setting(
        "tls_cert",
        _path,
        None,
        "Certificate (PEM, with its chain) the proxy presents to its clients: it terminates "
        "their TLS, and the protocol sees clear text.",
        "FILE",
        per_proxy=True,
    ),
    _setting(
        "tls_key",
        _path,
        None,
        "Private key (PEM, unencrypted) of tls_cert; by default it is in the tls_cert file.",
        "FILE",
        per_proxy=True,
    ),
    _setting(
        "tls_self_signed",
        bool,
        False,
        "Terminate the clients' TLS with a certificate made at start for the listen host, "
        "localhost, 127.0.0.1 and ::1 (needs the cryptography package: vaurien[tls]).",
        per_proxy=True,
    ),
    _setting(
        "tls_cert_out",
        _path,
        None,
        "Write the certificate made by tls_self_signed to this file (PEM), for clients to trust.",
        "FILE",
        per_proxy=True,
    ),
    _setting(
        "backlog",
        _whole_number,
        8192,
        "Listen backlog of the proxy's socket.",
        "N",
        range=at_least(1),
        per_proxy=True,
    ),
    _setting(
        "max_connections",
        _whole_number,
        10000,
        "Most clients served at once; beyond it new clients are closed at once.",
        "N",
        range=at_least(1),
        per_proxy=True,
    ),
    _setting(
        "refuse_when_backend_down",
        bool,
        False,
        "When the backend cannot be reached, stop listening, so that new clients get "
        "'connection refused' as they would from the backend itself, and listen again once a "
        "probe reaches the backend.",
        per_proxy=True,
    ),
    _setting(
        "seed",
        _whole_number,
        None,
        "Seed of the random source behind every choice, for reproducible chaos. The proxy "
        "named default uses it as it is; every other proxy, one derived from it and its name.",
        "N",
        range=at_least(0),
        per_proxy=True,
    ),
    _setting(
        "log_level",
        _word("debug", "info", "warning", "error", "critical"),
        "info",
        "debug, info, warning, error or critical.",
        "LEVEL",
    ),
    _setting("log_output", str, "-", "Where logs go: - for stderr, or a file path.", "PATH"),
    _setting(
        "http",
        bool,
        False,
        "Start the HTTP control API beside the proxy (vaurienctl and vaurien.Client use it).",
    ),
    _setting(
        "http_host",
        _host,
        "localhost",
        "Address of the control API. Anyone who can reach it can reconfigure the proxy: "
        "keep it on a loopback address.",
        "HOST",
    ),
    _setting("http_port", _whole_number, 8080, "Port of the control API.", "PORT", range=_PORT),
    _setting(
        "http_token",
        _token,
        None,
        "Token the control API requires for every change (in an 'Authorization: Bearer' "
        "header; the dashboard asks for it once): set one whenever the API listens on an "
        "address other machines can reach.",
        "TOKEN",
    ),
    _setting(
        "toxiproxy_api",
        Address.parse,
        None,
        "Address of the Toxiproxy-compatible HTTP API (Toxiproxy's clients drive every proxy "
        "through it); not started unless given. Anyone who can reach it can reconfigure the "
        "proxies: keep it on a loopback address.",
        "HOST:PORT",
    ),
    _setting(
        "toxiproxy_config",
        str,
        None,
        "JSON file of proxies (and their toxics) to create at start, the array that "
        "POST /populate takes, as toxiproxy-server -config reads it.",
        "FILE",
    ),
    _setting(
        "statsd_enabled",
        bool,
        False,
        "Send the proxy's counters to statsd (needs the statsd package: vaurien[statsd]).",
        section="statsd",
    ),
    _setting(
        "statsd_host", _host, "localhost", "Host of the statsd server.", "HOST", section="statsd"
    ),
    _setting(
        "statsd_port",
        _whole_number,
        8125,
        "UDP port of the statsd server.",
        "PORT",
        range=between(1, 65535),
        section="statsd",
    ),
    _setting(
        "statsd_prefix",
        str,
        "vaurien",
        "Prefix of every statsd counter.",
        "PREFIX",
        section="statsd",
    ),
    _setting(
        "statsd_sample_rate",
        _number,
        1.0,
        "Share of the counter updates sent to statsd.",
        "RATE",
        range=Range(0, 1, above_minimum=True),
        section="statsd",
    ),
)

#: The INI sections that hold settings: ``[vaurien]`` and ``[statsd]``.
SETTING_SECTIONS: tuple[str, ...] = tuple(dict.fromkeys(setting.section for setting in SETTINGS))

SETTINGS_BY_NAME = {setting.name: setting for setting in SETTINGS}


def _default(name: str) -> Any:
    return SETTINGS_BY_NAME[name].default


@dataclasses.dataclass(frozen=True)
class ProxyConfig:
    """Everything one proxy needs, resolved: defaults < config file < command line.

    There is a field for each of :data:`SETTINGS` (a test checks they agree). A value may also
    be given as text, as the config file holds it: it is parsed then, and every value is
    checked (a :class:`~vaurien.errors.ConfigError` names the setting). ``plugin_options`` maps
    ``("behavior", "delay")`` to the option values the user set; ``behaviors`` and ``protocols``
    are this proxy's own registries (copies of the global ones by default, extended with the
    plugins its configuration names). ``protocol`` and the names in ``behavior`` end up
    registered names.
    """

    name: str = _default("name")
    proxy: Address = _default("proxy")
    backend: Address = _default("backend")  # required: __post_init__ says so when missing
    protocol: str = _default("protocol")
    behavior: BehaviorMix = _default("behavior")
    scope: str = _default("scope")
    scenario: Scenario | None = _default("scenario")
    timeout: float = _default("timeout")
    stay_connected: bool = _default("stay_connected")
    tcp_keepalive: bool = _default("tcp_keepalive")
    backend_tls: bool = _default("backend_tls")
    backend_ca: str | None = _default("backend_ca")
    backend_sni: str | None = _default("backend_sni")
    backend_insecure: bool = _default("backend_insecure")
    tls_cert: str | None = _default("tls_cert")
    tls_key: str | None = _default("tls_key")
    tls_self_signed: bool = _default("tls_self_signed")
    tls_cert_out: str | None = _default("tls_cert_out")
    backlog: int = _default("backlog")
    max_connections: int = _default("max_connections")
    refuse_when_backend_down: bool = _default("refuse_when_backend_down")
    seed: int | None = _default("seed")
    log_level: str = _default("log_level")
    log_output: str = _default("log_output")
    http: bool = _default("http")
    http_host: str = _default("http_host")
    http_port: int = _default("http_port")
    http_token: str | None = _default("http_token")
    toxiproxy_api: Address | None = _default("toxiproxy_api")
    toxiproxy_config: str | None = _default("toxiproxy_config")
    statsd_enabled: bool = _default("statsd_enabled")
    statsd_host: str = _default("statsd_host")
    statsd_port: int = _default("statsd_port")
    statsd_prefix: str = _default("statsd_prefix")
    statsd_sample_rate: float = _default("statsd_sample_rate")
    plugin_options: Mapping[tuple[str, str], Mapping[str, Any]] = dataclasses.field(
        default_factory=dict
    )
    rules: tuple[Rule, ...] = ()
    behaviors: Registry = None  # type: ignore[assignment]  # set in __post_init__
    protocols: Registry = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        # Frozen: what __init__ was given is replaced once, parsed and resolved.
        normalized: dict[str, Any] = {}
        for setting in SETTINGS:
            value = getattr(self, setting.name)
            if value is not None:  # None: not set (backend, seed)
                try:
                    normalized[setting.name] = setting.option.check(value)
                except OptionError as e:
                    raise ConfigError(f"{setting.name}: {e.problem}") from None
        if self.backend is None:
            raise ConfigError("no backend: give --backend HOST:PORT (or backend = in [vaurien])")
        _check_tls(normalized)
        behaviors = self.behaviors if self.behaviors is not None else Behavior.copy()
        protocols = self.protocols if self.protocols is not None else Protocol.copy()
        normalized["behaviors"], normalized["protocols"] = behaviors, protocols
        normalized["protocol"] = protocols.resolve(normalized["protocol"])
        normalized["behavior"] = read_spec(normalized["behavior"], behaviors)
        normalized["rules"] = self._checked_rules(normalized["protocol"], behaviors, protocols)
        scenario = normalized.get("scenario")
        if scenario is not None:
            steps = tuple(
                dataclasses.replace(step, behavior=spec)
                for step, spec in zip(scenario.steps, step_specs(scenario, behaviors), strict=True)
            )
            normalized["scenario"] = dataclasses.replace(scenario, steps=steps)
        for name, value in normalized.items():
            object.__setattr__(self, name, value)

    def _checked_rules(
        self, protocol: str, behaviors: Registry, protocols: Registry
    ) -> tuple[Rule, ...]:
        """The rules, named, their fields checked against the protocol's, their specs
        resolved and their options checked."""
        fields = getattr(protocols.get(protocol), "rule_fields", {})
        checked = []
        for rule in number_rules(list(self.rules)):
            compile_rule(rule, fields, protocol)
            spec, options = rule_parts(rule, behaviors)
            checked.append(dataclasses.replace(rule, behavior=spec, options=options))
        return tuple(checked)

    def options_for(self, kind: str, name: str) -> Mapping[str, Any]:
        """The option values the user set for plugin ``name`` of ``kind``."""
        return self.plugin_options.get((kind, name), {})


#: The settings that say which proxy it is: a named proxy never takes them from ``[vaurien]``
#: or the command line (the others, ``timeout`` and the like, it inherits from there).
IDENTITY = frozenset({"name", "proxy", "backend", "protocol", "behavior", "scenario", "seed"})
#: The settings a ``[proxy:NAME]`` section may hold (its name is in its header).
PER_PROXY = tuple(s for s in SETTINGS if s.per_proxy and s.name != "name")


def derive_seed(seed: int | None, name: str) -> int | None:
    """The seed of the proxy called ``name`` when the process's is ``seed``: the proxy named
    ``default`` uses ``seed`` itself, every other one a number drawn from both, so each proxy
    has a random source of its own and ``--seed`` still reproduces all of them. None (no
    seed) stays None: each proxy draws its own."""
    if seed is None or name == "default":
        return seed
    digest = hashlib.sha256(f"{seed}/{name}".encode()).digest()
    return int.from_bytes(digest[:4], "big")


@dataclasses.dataclass(frozen=True)
class ServerConfig:
    """The whole process: its settings and the proxies it starts with.

    ``settings`` holds every setting's value, resolved as for a :class:`ProxyConfig` (defaults
    < config file < command line) but without requiring a backend: the global ones (logs,
    control API, ``toxiproxy_api``) are read from it as attributes, and a proxy made later
    (through the Toxiproxy API) inherits its per-proxy ones with :meth:`proxy_config`.
    ``proxies`` are the proxies to start, in order: the command line's first, when it has a
    backend, then the ``[proxy:NAME]`` sections'. ``plugin_options``, ``behaviors`` and
    ``protocols`` are the global plugin option values and registries each proxy starts from.
    """

    settings: Mapping[str, Any]
    proxies: tuple[ProxyConfig, ...] = ()
    plugin_options: Mapping[tuple[str, str], Mapping[str, Any]] = dataclasses.field(
        default_factory=dict
    )
    behaviors: Registry = dataclasses.field(default_factory=Behavior.copy)
    protocols: Registry = dataclasses.field(default_factory=Protocol.copy)

    def __getattr__(self, name: str) -> Any:
        if name in SETTINGS_BY_NAME:
            return self.settings.get(name, SETTINGS_BY_NAME[name].default)
        raise AttributeError(name)

    @classmethod
    def single(cls, config: ProxyConfig) -> ServerConfig:
        """The configuration of a process running one proxy, ``config``."""
        return cls(
            {setting.name: getattr(config, setting.name) for setting in SETTINGS},
            (config,),
            config.plugin_options,
            config.behaviors,
            config.protocols,
        )

    def proxy_config(
        self,
        name: str,
        plugin_options: Mapping[tuple[str, str], Mapping[str, Any]] | None = None,
        **values: Any,
    ) -> ProxyConfig:
        """The configuration of a proxy called ``name``: ``values`` (its ``proxy``, ``backend``
        and any per-proxy setting), and for the others what the process's settings say
        (``protocol`` tcp and ``behavior`` dummy unless given; the seed derived with
        :func:`derive_seed`). ``plugin_options`` replace the global values option by option.
        Its registries are copies of the process's, so its plugins are its own."""
        inherited = {
            key: value
            for key, value in self.settings.items()
            if key not in IDENTITY and value is not None
        }
        merged = {key: dict(value) for key, value in self.plugin_options.items()}
        for key, given in (plugin_options or {}).items():
            merged.setdefault(key, {}).update(given)
        values.setdefault("seed", derive_seed(self.settings.get("seed"), name))
        return ProxyConfig(
            **{**inherited, **values, "name": name},
            plugin_options=merged,
            behaviors=self.behaviors.copy(),
            protocols=self.protocols.copy(),
        )


def _check_tls(values: Mapping[str, Any]) -> None:
    """Refuse TLS settings that would be silently ignored or contradict each other (the
    files are read when the proxy is built: :mod:`vaurien.tls`)."""
    for name in ("backend_ca", "backend_sni", "backend_insecure"):
        if values.get(name) and not values.get("backend_tls"):
            raise ConfigError(f"{name} needs backend_tls (--backend-tls)")
    if values.get("backend_insecure") and values.get("backend_ca"):
        raise ConfigError("backend_insecure verifies nothing: backend_ca would be ignored")
    if values.get("tls_key") and not values.get("tls_cert"):
        raise ConfigError("tls_key needs tls_cert (--tls-cert)")
    if values.get("tls_self_signed") and values.get("tls_cert"):
        raise ConfigError("give either tls_cert or tls_self_signed, not both")
    if values.get("tls_cert_out") and not values.get("tls_self_signed"):
        raise ConfigError("tls_cert_out needs tls_self_signed (--tls-self-signed)")


def logging_level(name: str) -> int:
    """The :mod:`logging` level for a ``log_level`` value."""
    return getattr(logging, name.upper())
