"""The INI configuration file.

::

    [vaurien]
    backend = localhost:6379
    behavior = 20:delay,5:flaky

    [behavior:delay]
    sleep = 0.5

    [behavior:flaky]
    callable = mypkg.chaos.Flaky

Sections: ``[vaurien]`` holds the global settings and ``[statsd]`` the metrics settings (see
:mod:`vaurien.settings`);
``[behavior:NAME]``, ``[handler:NAME]`` and ``[protocol:NAME]`` hold a plugin's options and an
optional ``callable = dotted.path`` that registers a class under ``NAME``. ``${VAR}`` is replaced
by the environment variable ``VAR`` (``$$`` is a literal ``$``).

``[proxy:NAME]`` adds a proxy called ``NAME``. It holds the per-proxy settings (``proxy`` and
``backend``, required, then ``protocol``, ``behavior``, ``scenario``, ``timeout`` ...) and the
plugin options of that proxy, keyed ``KIND.PLUGIN.OPTION``::

    [proxy:cache]
    proxy = localhost:8001
    backend = localhost:6379
    protocol = redis
    behavior = 20:delay
    behavior.delay.sleep = 0.5

``[rule:NAME]`` holds a rule (:mod:`vaurien.rules`): ``match =``, ``behavior =`` and its
behaviors' options as ``BEHAVIOR.OPTION = VALUE``, the rules in file order. A rule is for the
proxy of ``[vaurien]``; ``proxies = cache, api`` gives it to the proxies so named instead.
"""

from __future__ import annotations

import configparser
import dataclasses
import os
import re
import textwrap
from typing import Any

from vaurien.behaviors import Behavior
from vaurien.errors import ConfigError, OptionError, VaurienError
from vaurien.mix import BehaviorMix
from vaurien.options import Option
from vaurien.protocols import Protocol
from vaurien.registry import Registry
from vaurien.rules import Rule, option_key
from vaurien.settings import PER_PROXY, SETTING_SECTIONS, SETTINGS, proxy_name

MAIN_SECTION = "vaurien"
PROXY_SECTION = "proxy"
RULE_SECTION = "rule"
#: The key of a ``[rule:NAME]`` section naming the proxies it is for.
RULE_PROXIES = "proxies"
PLUGIN_SECTIONS = {
    "behavior": "behavior",
    "handler": "behavior",
    "protocol": "protocol",
}
_VARIABLE = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|(\$))")


class _Environment(configparser.Interpolation):
    """``${VAR}`` from the environment; ``$$`` for a ``$``."""

    def before_get(self, parser, section, option, value, defaults):
        def substitute(match: re.Match[str]) -> str:
            if match.group(2):
                return "$"
            name = match.group(1)
            if name not in os.environ:
                raise ConfigError(f"[{section}] {option}: environment variable {name} is not set")
            return os.environ[name]

        return _VARIABLE.sub(substitute, value)


@dataclasses.dataclass
class ProxySection:
    """One ``[proxy:NAME]`` section: its settings, parsed, and its ``KIND.PLUGIN.OPTION`` keys
    as written (they are checked once the plugins are registered: :func:`proxy_options`)."""

    section: str
    name: str
    settings: dict[str, Any]
    options: dict[tuple[str, str, str], str]


@dataclasses.dataclass
class ConfigFile:
    """A loaded config file: parsed global settings, raw plugin sections, and the named
    proxies' sections (their settings parsed, their plugin options raw)."""

    path: str
    settings: dict[str, Any]
    plugins: list[tuple[str, str, str, dict[str, str]]]  # (section, kind, name, raw values)
    proxies: list[ProxySection] = dataclasses.field(default_factory=list)
    #: ``[rule:NAME]`` sections in file order, with the names of the proxies each is for (empty:
    #: the proxy of ``[vaurien]``).
    rules: list[tuple[Rule, tuple[str, ...]]] = dataclasses.field(default_factory=list)


def load(path: str) -> ConfigFile:
    """Read and check the syntax and the ``[vaurien]`` section of a config file."""
    parser = configparser.ConfigParser(interpolation=_Environment(), strict=True)
    try:
        with open(path, encoding="utf-8") as f:
            parser.read_file(f)
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the config file: {e.strerror}") from None
    except configparser.Error as e:
        message = str(e).replace("\n", " ")
        raise ConfigError(f"{path}: {message}") from None
    settings: dict[str, Any] = {}
    plugins: list[tuple[str, str, str, dict[str, str]]] = []
    proxies: list[ProxySection] = []
    rules: list[tuple[Rule, tuple[str, ...]]] = []
    try:
        for section in parser.sections():
            values = dict(parser.items(section))
            if section in SETTING_SECTIONS:
                settings.update(_settings_section(section, values))
                continue
            prefix, colon, name = section.partition(":")
            if colon and prefix == PROXY_SECTION:
                proxies.append(_proxy_section(section, name, values))
                continue
            if colon and prefix == RULE_SECTION and name:
                rules.append(_rule_section(section, name, values))
                continue
            if not colon or prefix not in PLUGIN_SECTIONS or not name:
                expected = ", ".join(f"[{name}]" for name in SETTING_SECTIONS)
                raise ConfigError(
                    f"[{section}]: unknown section (expected {expected}, [proxy:NAME], "
                    f"[behavior:NAME], [handler:NAME], [protocol:NAME] or [rule:NAME])"
                )
            plugins.append((section, PLUGIN_SECTIONS[prefix], name, values))
    except VaurienError as e:
        raise ConfigError(f"{path}: {e}") from None
    return ConfigFile(path, settings, plugins, proxies, rules)


def _proxy_section(section: str, name: str, values: dict[str, str]) -> ProxySection:
    """Parse a ``[proxy:NAME]`` section's settings; keep its plugin options as text."""
    try:
        proxy_name(name)
    except ConfigError as e:
        raise ConfigError(f"[{section}]: {e}") from None
    by_key = {setting.key: setting for setting in PER_PROXY}
    parsed = ProxySection(section, name, {}, {})
    for key, text in values.items():
        kind, dot, rest = key.partition(".")
        plugin, dot2, option = rest.partition(".")
        if dot and dot2 and kind in PLUGIN_SECTIONS and plugin and option:
            parsed.options[(PLUGIN_SECTIONS[kind], plugin, option)] = text
            continue
        setting = by_key.get(key)
        if setting is None:
            known = ", ".join([*by_key, "behavior.NAME.OPTION", "protocol.NAME.OPTION"])
            raise ConfigError(f"[{section}] unknown key {key!r} (known: {known})")
        try:
            parsed.settings[setting.name] = setting.parse(text)
        except OptionError as e:
            raise ConfigError(f"[{section}] {key}: {e.problem}") from None
    for required in ("proxy", "backend"):
        if required not in parsed.settings:
            raise ConfigError(f"[{section}] needs {required} = HOST:PORT")
    return parsed


def proxy_options(
    path: str, proxy: ProxySection, registries: dict[str, Registry]
) -> dict[tuple[str, str], dict[str, Any]]:
    """Check a ``[proxy:NAME]`` section's plugin options against the registered plugins;
    return their values by ``(kind, plugin)``."""
    options: dict[tuple[str, str], dict[str, Any]] = {}
    for (kind, plugin, option), text in proxy.options.items():
        key = f"{kind}.{plugin}.{option}"
        try:
            table = registries[kind].options(plugin)
            if option not in table:
                known = ", ".join(sorted(table)) or "none"
                raise ConfigError(f"unknown option {option!r} of {plugin} (known: {known})")
            options.setdefault((kind, plugin), {})[option] = table[option].parse(text)
        except OptionError as e:
            raise ConfigError(f"{path}: [{proxy.section}] {key}: {e.problem}") from None
        except VaurienError as e:
            raise ConfigError(f"{path}: [{proxy.section}] {key}: {e}") from None
    return options


def _rule_section(section: str, name: str, values: dict[str, str]) -> tuple[Rule, tuple[str, ...]]:
    """A ``[rule:NAME]`` section: ``match``, ``behavior``, ``BEHAVIOR.OPTION`` keys, and the
    proxies it is for (``proxies``)."""
    targets = tuple(
        target.strip() for target in values.pop(RULE_PROXIES, "").split(",") if target.strip()
    )
    match = values.pop("match", None)
    behavior = values.pop("behavior", None)
    for key, value in (("match", match), ("behavior", behavior)):
        if value is None:
            raise ConfigError(f"[{section}] has no {key!r} key (a rule needs match and behavior)")
    options: dict[str, dict[str, str]] = {}
    for key, text in values.items():
        found = option_key(key, f"[{section}]")
        if found is None:
            raise ConfigError(
                f"[{section}] unknown key {key!r} "
                "(known: match, behavior, proxies, BEHAVIOR.OPTION)"
            )
        options.setdefault(found[0], {})[found[1]] = text
    return Rule.create(name, match, behavior, options), targets


def _settings_section(section: str, values: dict[str, str]) -> dict[str, Any]:
    """Parse a section of global settings; the result is keyed by setting name."""
    by_key = {s.key: s for s in SETTINGS if s.section == section}
    settings = {}
    for key, text in values.items():
        setting = by_key.get(key)
        if setting is None:
            raise ConfigError(f"[{section}] unknown key {key!r} (known: {', '.join(by_key)})")
        try:
            settings[setting.name] = setting.parse(text)
        except OptionError as e:
            raise ConfigError(f"[{section}] {key}: {e.problem}") from None
    return settings


def apply_plugins(
    config: ConfigFile, registries: dict[str, Registry]
) -> dict[tuple[str, str], dict[str, Any]]:
    """Register the ``callable =`` classes and check every plugin section's keys and values.

    Returns the option values by ``(kind, name)``.
    """
    options: dict[tuple[str, str], dict[str, Any]] = {}
    for section, kind, name, values in config.plugins:
        registry = registries[kind]
        values = dict(values)
        try:
            path = values.pop("callable", None)
            if path is not None:
                registry.register(registry.import_class(path), name=name)
            table = registry.options(name)
            parsed = options.setdefault((kind, name), {})
            for key, text in values.items():
                if key not in table:
                    known = ", ".join(["callable", *sorted(table)])
                    raise ConfigError(f"unknown key {key!r} (known: {known})")
                parsed[key] = table[key].parse(text)
        except VaurienError as e:
            raise ConfigError(f"{config.path}: [{section}] {e}") from None
    return options


# -- vaurien.ini.sample ------------------------------------------------------------------------

#: The backend the sample names: a config file cannot load without one.
SAMPLE_BACKEND = "localhost:8888"

_SAMPLE_HEADER = """\
# vaurien.ini.sample: every key of a Vaurien config file, set to its default.
#
#     vaurien --config vaurien.ini.sample
#
# Flags given on the command line win over this file, which wins over the defaults.
# ${VAR} is replaced by the environment variable VAR; $$ is a literal $.
#
# [behavior:NAME] and [protocol:NAME] sections hold the options of a plugin. In such a
# section, callable = pkg.module.Class first registers that class under NAME, so a file
# can bring its own plugins. [handler:NAME] is the Vaurien 1.x spelling of [behavior:NAME].
#
# [proxy:NAME] sections add proxies beside the one [vaurien] defines. Each holds proxy and
# backend, any of the settings below marked "per proxy" (the others come from [vaurien]), and
# that proxy's plugin options as KIND.PLUGIN.OPTION keys:
#
#     [proxy:cache]
#     proxy = localhost:8001
#     backend = localhost:6379
#     protocol = redis
#     behavior = 20:delay
#     behavior.delay.sleep = 0.5
#
# [rule:NAME] sections, tried in file order, give the requests they match their own mix (for
# the proxy of [vaurien], or for those named by proxies = NAME, NAME):
#     [rule:payments]
#     match = method=POST path=/api/payments/*
#     behavior = 50:error
#     error.warmup = 3
#
# Generated by vaurien.config.render_sample(); the test suite checks that they agree.
"""


def ini_value(value: Any) -> str:
    """``value`` written the way the config file reads it back (``$`` doubled)."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, BehaviorMix):
        text = ",".join(f"{_number(percent)}:{'+'.join(names)}" for percent, names in value.entries)
    elif isinstance(value, float):
        text = repr(value)
    else:
        text = str(value)
    return text.replace("$", "$$")


def _number(value: float) -> str:
    return str(int(value)) if value == int(value) and abs(value) < 1e15 else repr(value)


def _comment(text: str) -> list[str]:
    lines = []
    for line in text.replace("``", "").splitlines():
        lines += [f"# {part}" for part in textwrap.wrap(line, 94)] or ["#"]
    return lines


def _option_lines(option: Option) -> list[str]:
    kind = option.type_name
    if option.choices:
        kind += "; one of " + ", ".join(ini_value(choice) for choice in option.choices)
    if option.range is not None:
        kind += f"; {option.range}"
    lines = _comment(f"{option.description} ({kind}).")
    if option.default is None:
        return [*lines, "# Not set by default.", f"# {option.name} = {option.type_name.upper()}"]
    return [*lines, f"{option.name} = {ini_value(option.default)}"]


def render_sample(
    behaviors: Registry | None = None,
    protocols: Registry | None = None,
    backend: str = SAMPLE_BACKEND,
) -> str:
    """The text of ``vaurien.ini.sample``, from :data:`~vaurien.settings.SETTINGS` and the plugins.

    Every key of the settings sections (``[vaurien]``, ``[statsd]``) and every option of every
    plugin Vaurien ships is written with its description and default (keys without a default
    are shown commented out). ``backend`` is the one value the sample makes up: a config file
    cannot load without it.
    """
    lines = [_SAMPLE_HEADER]
    for section in SETTING_SECTIONS:
        lines.append(f"[{section}]")
        for setting in SETTINGS:
            if setting.section != section:
                continue
            help_text = setting.help
            if setting.option.range is not None:
                help_text = f"{help_text.rstrip('.')} ({setting.option.range})."
            if setting in PER_PROXY:
                help_text += " Per proxy."
            lines += _comment(help_text)
            if setting.name == "backend":
                lines.append(f"backend = {backend}")
            elif setting.default is None:
                placeholder = setting.metavar or "VALUE"
                lines += ["# Not set by default.", f"# {setting.key} = {placeholder}"]
            else:
                lines.append(f"{setting.key} = {ini_value(setting.default)}")
            lines.append("")
    for kind, registry in (
        ("behavior", behaviors or Behavior),
        ("protocol", protocols or Protocol),
    ):
        for name in registry.builtin_names():
            options = registry.options(name)
            if not options:
                continue
            lines.append(f"[{kind}:{name}]")
            summary = (registry.get(name).__doc__ or "").strip().split("\n\n")[0]
            lines += _comment(" ".join(summary.split()))
            for option in options.values():
                lines += ["", *_option_lines(option)]
            lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"
