"""The global settings of a proxy, declared once, and :class:`ProxyConfig`.

A :class:`Setting` is an :class:`~vaurien.options.Option` (read, checked and bounded by the same
code as the plugins' options) plus where it is set: its flag and its key in a section of the
config file. Each feeds the command-line parser, the config file, the sample config and the
docs. Plugin options come from the plugins' own tables; this module holds everything else.
"""

from __future__ import annotations

import dataclasses
import logging
import math
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
    """

    option: Option
    section: str = "vaurien"
    metavar: str | None = None

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
) -> Setting:
    return Setting(Option(name, help, type_, default, range=range), section, metavar)


_PORT = between(0, 65535)

SETTINGS: tuple[Setting, ...] = (
    _setting(
        "proxy", Address.parse, Address("localhost", 8000), "Address to listen on.", "HOST:PORT"
    ),
    _setting("backend", Address.parse, None, "Address of the backend to forward to.", "HOST:PORT"),
    _setting(
        "protocol",
        str,
        "tcp",
        "Protocol of the traffic: a registered name or a dotted path to a class.",
        "NAME",
    ),
    _setting(
        "behavior",
        BehaviorMix.parse,
        BehaviorMix.single("dummy"),
        "Behavior mix, PERCENT:NAME[,PERCENT:NAME...]; what is left goes to dummy.",
        "SPEC",
    ),
    _setting(
        "scope",
        _word("event", "connection"),
        "event",
        "When a behavior is picked from the mix: for each event (event), or once per "
        "connection, both directions sharing the pick for the connection's life (connection).",
        "SCOPE",
    ),
    _setting(
        "scenario",
        Scenario.parse,
        None,
        "Steps of behavior mixes over time, LENGTH SPEC; LENGTH SPEC; ...[; repeat]: a length "
        "is a time (500ms, 30s, 2m), picks (100req), new connections (5conn) or bytes relayed "
        "(512KiB, 10MiB). Each step's mix takes the place of behavior while it lasts.",
        "STEPS",
    ),
    _setting(
        "timeout",
        _number,
        30.0,
        "Seconds to connect to the backend, and seconds a session may stay idle.",
        "SECONDS",
        range=at_least(0.001),
    ),
    _setting("stay_connected", bool, False, "Keep idle sessions open (no idle timeout)."),
    _setting(
        "tcp_keepalive",
        bool,
        False,
        "TCP keep-alive probes on both connections of every session, so that a peer that "
        "vanished ends its idle session.",
    ),
    _setting(
        "backlog",
        _whole_number,
        8192,
        "Listen backlog of the proxy's socket.",
        "N",
        range=at_least(1),
    ),
    _setting(
        "max_connections",
        _whole_number,
        10000,
        "Most clients served at once; beyond it new clients are closed at once.",
        "N",
        range=at_least(1),
    ),
    _setting(
        "seed",
        _whole_number,
        None,
        "Seed of the random source behind every choice, for reproducible chaos.",
        "N",
        range=at_least(0),
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

    proxy: Address = _default("proxy")
    backend: Address = _default("backend")  # required: __post_init__ says so when missing
    protocol: str = _default("protocol")
    behavior: BehaviorMix = _default("behavior")
    scope: str = _default("scope")
    scenario: Scenario | None = _default("scenario")
    timeout: float = _default("timeout")
    stay_connected: bool = _default("stay_connected")
    tcp_keepalive: bool = _default("tcp_keepalive")
    backlog: int = _default("backlog")
    max_connections: int = _default("max_connections")
    seed: int | None = _default("seed")
    log_level: str = _default("log_level")
    log_output: str = _default("log_output")
    http: bool = _default("http")
    http_host: str = _default("http_host")
    http_port: int = _default("http_port")
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


def logging_level(name: str) -> int:
    """The :mod:`logging` level for a ``log_level`` value."""
    return getattr(logging, name.upper())
