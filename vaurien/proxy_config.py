"""What a proxy and the process run with, resolved: :class:`ProxyConfig` and
:class:`ServerConfig`, frozen values built from the settings (:mod:`vaurien.settings`), the
plugin options and the rules and scenario, every value checked once."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping
from typing import Any

from vaurien.behaviors import Behavior
from vaurien.errors import ConfigError, OptionError
from vaurien.mix import BehaviorMix, read_spec
from vaurien.network import Address
from vaurien.plan import rule_parts, step_specs
from vaurien.protocols import Protocol
from vaurien.registry import Registry
from vaurien.rules import Rule, compile_rule, number_rules
from vaurien.scenario import Scenario
from vaurien.settings import IDENTITY, SETTINGS, SETTINGS_BY_NAME


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
