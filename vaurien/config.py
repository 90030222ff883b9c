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
"""

from __future__ import annotations

import configparser
import dataclasses
import os
import re
from typing import Any

from vaurien.errors import ConfigError, VaurienError
from vaurien.registry import Registry
from vaurien.settings import SETTING_SECTIONS, SETTINGS

MAIN_SECTION = "vaurien"
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
class ConfigFile:
    """A loaded config file: parsed global settings and raw plugin sections."""

    path: str
    settings: dict[str, Any]
    plugins: list[tuple[str, str, str, dict[str, str]]]  # (section, kind, name, raw values)


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
    try:
        for section in parser.sections():
            values = dict(parser.items(section))
            if section in SETTING_SECTIONS:
                settings.update(_settings_section(section, values))
                continue
            prefix, colon, name = section.partition(":")
            if not colon or prefix not in PLUGIN_SECTIONS or not name:
                expected = ", ".join(f"[{name}]" for name in SETTING_SECTIONS)
                raise ConfigError(
                    f"[{section}]: unknown section (expected {expected}, [behavior:NAME], "
                    f"[handler:NAME] or [protocol:NAME])"
                )
            plugins.append((section, PLUGIN_SECTIONS[prefix], name, values))
    except VaurienError as e:
        raise ConfigError(f"{path}: {e}") from None
    return ConfigFile(path, settings, plugins)


def _settings_section(section: str, values: dict[str, str]) -> dict[str, Any]:
    """Parse a section of global settings; the result is keyed by setting name."""
    by_key = {s.key: s for s in SETTINGS if s.section == section and not s.cli_only}
    settings = {}
    for key, text in values.items():
        setting = by_key.get(key)
        if setting is None:
            raise ConfigError(f"[{section}] unknown key {key!r} (known: {', '.join(by_key)})")
        try:
            settings[setting.name] = setting.parse(text)
        except VaurienError as e:
            raise ConfigError(f"[{section}] {key}: {e}") from None
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
