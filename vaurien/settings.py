"""The global settings of a proxy, declared once.

Each :class:`Setting` feeds the command-line parser, the ``[vaurien]`` section of the config
file, the sample config and the docs. Plugin options come from the plugins' own tables (see
:mod:`vaurien.options`); this module holds everything else.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import Any

from vaurien.errors import ConfigError
from vaurien.mix import BehaviorMix, read_spec
from vaurien.network import Address
from vaurien.options import _FALSE, _TRUE


def _boolean(text: str) -> bool:
    word = text.strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise ConfigError(f"expected true or false, got {text!r}")


def _number(minimum: float) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise ConfigError(f"expected a number, got {text!r}") from None
        if not value >= minimum or value == float("inf"):
            raise ConfigError(f"expected a number of at least {minimum:g}, got {text!r}")
        return value

    parse.__name__ = "number"
    return parse


def _integer(minimum: int, maximum: int | None = None) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise ConfigError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise ConfigError(f"expected a whole number of at least {minimum}, got {text!r}")
        if maximum is not None and value > maximum:
            raise ConfigError(f"expected a whole number of at most {maximum}, got {text!r}")
        return value

    parse.__name__ = "integer"
    return parse


def _rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"expected a number, got {text!r}") from None
    if not 0 < value <= 1:
        raise ConfigError(f"expected a number above 0 and at most 1, got {text!r}")
    return value


def _host(text: str) -> str:
    host = text.strip()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not host:
        raise ConfigError("expected a host name or address, got an empty value")
    return host


def _log_level(text: str) -> str:
    level = text.strip().upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise ConfigError(f"expected debug, info, warning, error or critical, got {text!r}")
    return level.lower()


def _choice(*choices: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        word = text.strip().lower()
        if word not in choices:
            raise ConfigError(f"expected {' or '.join(choices)}, got {text!r}")
        return word

    parse.__name__ = "choice"
    return parse


def _behavior(text: str) -> BehaviorMix:
    return BehaviorMix.parse(text)


def _text(text: str) -> str:
    return text


@dataclasses.dataclass(frozen=True)
class Setting:
    """One global setting: flag ``--name-with-dashes`` and an INI key in ``section``.

    In ``[vaurien]`` the key is ``name``; in another section it is ``name`` without the section's
    prefix (``statsd_host`` is ``host`` in ``[statsd]``).
    """

    name: str
    parse: Callable[[str], Any]
    default: Any
    help: str
    metavar: str | None = None
    cli_only: bool = False
    section: str = "vaurien"

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
        return self.parse is _boolean


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "proxy",
        Address.parse,
        Address("localhost", 8000),
        "Address to listen on.",
        "HOST:PORT",
    ),
    Setting(
        "backend",
        Address.parse,
        None,
        "Address of the backend to forward to.",
        "HOST:PORT",
    ),
    Setting(
        "protocol",
        _text,
        "tcp",
        "Protocol of the traffic: a registered name or a dotted path to a class.",
        "NAME",
    ),
    Setting(
        "behavior",
        _behavior,
        BehaviorMix.single("dummy"),
        "Behavior mix, PERCENT:NAME[,PERCENT:NAME...]; what is left goes to dummy.",
        "SPEC",
    ),
    Setting(
        "scope",
        _choice("event", "connection"),
        "event",
        "When a behavior is picked from the mix: for each event (event), or once per "
        "connection, both directions sharing the pick for the connection's life (connection).",
        "SCOPE",
    ),
    Setting(
        "timeout",
        _number(0.001),
        30.0,
        "Seconds to connect to the backend, and seconds a session may stay idle.",
        "SECONDS",
    ),
    Setting(
        "stay_connected",
        _boolean,
        False,
        "Keep idle sessions open (no idle timeout).",
    ),
    Setting("backlog", _integer(1), 8192, "Listen backlog of the proxy's socket.", "N"),
    Setting(
        "max_connections",
        _integer(1),
        10000,
        "Most clients served at once; beyond it new clients are closed at once.",
        "N",
    ),
    Setting(
        "seed",
        _integer(0),
        None,
        "Seed of the random source behind every choice, for reproducible chaos.",
        "N",
    ),
    Setting(
        "log_level",
        _log_level,
        "info",
        "debug, info, warning, error or critical.",
        "LEVEL",
    ),
    Setting("log_output", _text, "-", "Where logs go: - for stderr, or a file path.", "PATH"),
    Setting(
        "http",
        _boolean,
        False,
        "Start the HTTP control API beside the proxy (vaurienctl and vaurien.Client use it).",
    ),
    Setting(
        "http_host",
        _host,
        "localhost",
        "Address of the control API. Anyone who can reach it can reconfigure the proxy: "
        "keep it on a loopback address.",
        "HOST",
    ),
    Setting("http_port", _integer(0, 65535), 8080, "Port of the control API.", "PORT"),
    Setting(
        "statsd_enabled",
        _boolean,
        False,
        "Send the proxy's counters to statsd (needs the statsd package: vaurien[statsd]).",
        section="statsd",
    ),
    Setting(
        "statsd_host", _host, "localhost", "Host of the statsd server.", "HOST", section="statsd"
    ),
    Setting(
        "statsd_port",
        _integer(1, 65535),
        8125,
        "UDP port of the statsd server.",
        "PORT",
        section="statsd",
    ),
    Setting(
        "statsd_prefix",
        _text,
        "vaurien",
        "Prefix of every statsd counter.",
        "PREFIX",
        section="statsd",
    ),
    Setting(
        "statsd_sample_rate",
        _rate,
        1.0,
        "Share of the counter updates sent to statsd, above 0 and at most 1.",
        "RATE",
        section="statsd",
    ),
)

#: The INI sections that hold settings: ``[vaurien]`` and ``[statsd]``.
SETTING_SECTIONS: tuple[str, ...] = tuple(dict.fromkeys(setting.section for setting in SETTINGS))

SETTINGS_BY_NAME = {setting.name: setting for setting in SETTINGS}


class ProxyConfig:
    """Everything one proxy needs, resolved: defaults < config file < command line.

    Every :data:`SETTINGS` entry is an attribute; values may be given already parsed or as
    text. ``plugin_options`` maps ``("behavior", "delay")`` to the option values the user set;
    ``behaviors`` and ``protocols`` are this proxy's own registries (copies of the global ones,
    extended with the plugins its configuration names).
    """

    def __init__(
        self,
        *,
        plugin_options: dict[tuple[str, str], dict[str, Any]] | None = None,
        behaviors: Any = None,
        protocols: Any = None,
        **values: Any,
    ) -> None:
        from vaurien.behaviors import Behavior
        from vaurien.protocols import Protocol

        unknown = sorted(set(values) - set(SETTINGS_BY_NAME))
        if unknown:
            raise ConfigError(f"unknown setting {unknown[0]!r}")
        for setting in SETTINGS:
            value = values.get(setting.name, setting.default)
            if isinstance(value, str) and setting.parse is not _text:
                try:
                    value = setting.parse(value)
                except ConfigError as e:
                    raise ConfigError(f"{setting.name}: {e}") from None
            setattr(self, setting.name, value)
        if self.backend is None:
            raise ConfigError("no backend: give --backend HOST:PORT (or backend = in [vaurien])")
        self.plugin_options = plugin_options or {}
        self.behaviors = behaviors if behaviors is not None else Behavior.copy()
        self.protocols = protocols if protocols is not None else Protocol.copy()
        self.protocol = self.protocols.resolve(self.protocol)
        self.behavior = read_spec(self.behavior, self.behaviors)

    def options_for(self, kind: str, name: str) -> dict[str, Any]:
        """The option values the user set for plugin ``name`` of ``kind``."""
        return self.plugin_options.get((kind, name), {})


def logging_level(name: str) -> int:
    """The :mod:`logging` level for a ``log_level`` value."""
    return getattr(logging, name.upper())
