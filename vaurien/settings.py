"""The global settings of a proxy, declared once.

A :class:`Setting` is an :class:`~vaurien.options.Option` (read, checked and bounded by the same
code as the plugins' options) plus where it is set: its flag and its key in a section of the
config file. Each feeds the command-line parser, the config file, the sample config and the
docs. Plugin options come from the plugins' own tables; this module holds everything else.
The values they resolve to are :class:`vaurien.proxy_config.ProxyConfig` and
:class:`~vaurien.proxy_config.ServerConfig`.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
from collections.abc import Callable
from typing import Any

from vaurien.errors import ConfigError
from vaurien.mix import BehaviorMix
from vaurien.network import Address
from vaurien.options import Option, Range, at_least, between
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


#: The settings that say which proxy it is: a named proxy never takes them from ``[vaurien]``
#: or the command line (the others, ``timeout`` and the like, it inherits from there).
IDENTITY = frozenset({"name", "proxy", "backend", "protocol", "behavior", "scenario", "seed"})
#: The settings a ``[proxy:NAME]`` section may hold (its name is in its header).
PER_PROXY = tuple(s for s in SETTINGS if s.per_proxy and s.name != "name")


def logging_level(name: str) -> int:
    """The :mod:`logging` level for a ``log_level`` value."""
    return getattr(logging, name.upper())
