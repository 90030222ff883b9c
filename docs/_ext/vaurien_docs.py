"""Sphinx extension: Vaurien's reference pages, generated from the code at build time.

Directives (each takes ``:heading:``, the underline character of the sections it writes):

``.. vaurien-cli::``
    The command line, from :func:`vaurien.cli.build_parser`: every global flag and every
    built-in plugin's option flags.
``.. vaurien-settings::``
    The ``[vaurien]`` keys of the config file, from :data:`vaurien.settings.SETTINGS`.
``.. vaurien-events::``
    What one event is under each protocol.
``.. vaurien-rule-fields::``
    The fields rules can match under each protocol, from the protocols' ``rule_fields``.
``.. vaurien-metrics::``
    Every figure of ``GET /stats`` with its statsd and Prometheus names, from
    :data:`vaurien.metrics.METRICS`.
``.. vaurien-toxics::``
    Toxiproxy's toxics and the behaviors that act for them, from
    :data:`vaurien.toxics.TOXIC_TYPES`.
``.. vaurien-behaviors::`` and ``.. vaurien-protocols::``
    One section per built-in behavior or protocol, from the registries: docstring, options
    table, flags and INI section, and for behaviors what a client sees under each protocol
    (``client_sees`` on the behavior, filled in with the protocol's ``error_form``).

A built-in plugin without a docstring, a ``client_sees``, an ``event_unit`` or an
``error_form`` is reported as a warning, which ``sphinx-build -W`` turns into an error: the
reference cannot fall behind the code.
"""

from __future__ import annotations

import argparse
import inspect
from collections.abc import Iterable
from typing import Any

from docutils import nodes
from docutils.parsers.rst import directives
from sphinx.application import Sphinx
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective

from vaurien import cli, config, metrics, rules, settings, toxics
from vaurien.behaviors import Behavior
from vaurien.protocols import Protocol
from vaurien.registry import Registry

log = logging.getLogger(__name__)

_RST_SPECIAL = str.maketrans({ch: "\\" + ch for ch in "\\*`|_[]<>"})


def escape(text: str) -> str:
    """Plain text (a help string, an option description) made safe for reStructuredText."""
    return text.translate(_RST_SPECIAL)


def builtin(registry: Registry) -> Registry:
    """A registry holding only the plugins Vaurien ships, not those of installed packages."""
    return registry.copy(registry.builtin_names())


def heading(title: str, underline: str) -> list[str]:
    """A section title."""
    return [title, underline * len(title), ""]


def literal(value: Any) -> str:
    """An option or setting value as an inline literal, written as the config file takes it."""
    if value is None:
        return "none"
    return f"``{config.ini_value(value).replace('$$', '$')}``"


def list_table(header: list[str], rows: Iterable[list[str]], widths: str = "auto") -> list[str]:
    """A ``list-table`` directive; cells are reStructuredText, one line each."""
    lines = [".. list-table::", "   :header-rows: 1", f"   :widths: {widths}", ""]
    for row in [header, *rows]:
        lines.append(f"   * - {row[0]}")
        lines += [f"     - {cell}" for cell in row[1:]]
    return [*lines, ""]


def docstring(cls: type) -> str:
    """The class's own docstring, dedented (never one inherited from a base class)."""
    return inspect.cleandoc(cls.__doc__ or "")


# -- the command line ------------------------------------------------------------------------


def cli_reference(parser: argparse.ArgumentParser, underline: str = "-") -> str:
    """Every flag of ``parser``, as ``option`` directives, one section per argument group."""
    formatter = parser.formatter_class(prog=parser.prog)
    lines = [".. program:: vaurien", ""]
    for group in parser._action_groups:
        actions = [a for a in group._group_actions if a.help is not argparse.SUPPRESS]
        if not actions:
            continue
        if group is parser._optionals:
            lines += heading("Global flags", underline)
        else:
            kind, _, plugin = group.title.partition(" ")  # "behavior delay"
            lines += heading(f"{kind.capitalize()} {plugin}", underline)
            lines += [f"Options of the :ref:`{kind} {plugin} <{kind}-{plugin}>`.", ""]
        for action in actions:
            flags = ", ".join(action.option_strings)
            if action.nargs != 0:
                flags += " " + (action.metavar or action.dest.upper())
            help_text = formatter._expand_help(action) if action.help else ""
            lines += [f".. option:: {flags}", "", f"   {escape(help_text)}", ""]
    return "\n".join(lines)


# -- the config file -------------------------------------------------------------------------


def settings_reference() -> str:
    """A table of the settings: config key, flag, value, default and meaning."""
    rows = []
    for setting in settings.SETTINGS:
        value = "``true`` or ``false``" if setting.is_flag else escape(setting.metavar or "VALUE")
        if setting.option.range is not None:
            value += f", {setting.option.range}"
        flag = f"``{setting.flag}``"
        if setting.is_flag:
            flag += f", ``--no-{setting.flag[2:]}``"
        if setting.section == config.MAIN_SECTION:
            key = f"``{setting.key}``"
        else:
            key = f"``{setting.key}`` in ``[{setting.section}]``"
        default = literal(setting.default)
        if setting.name == "backend":
            default = "none: required"
        meaning = escape(setting.help)
        if setting in settings.PER_PROXY:
            meaning += " Per proxy: also a key of ``[proxy:NAME]``."
        rows.append([key, flag, value, default, meaning])
    return "\n".join(
        list_table(["Key", "Flag", "Value", "Default", "Meaning"], rows, "15 25 15 15 30")
    )


# -- metrics ---------------------------------------------------------------------------------


def metrics_reference() -> str:
    """A table of the figures of ``GET /stats``: kind, statsd name, Prometheus name, meaning."""
    rows = []
    for metric in metrics.METRICS:
        prometheus = metric.prometheus + ("_total" if metric.kind == metrics.COUNTER else "")
        if metric.label == "direction":
            keys = [metric.stat.format(direction=d) for d in metrics.DIRECTIONS]
            names = [metric.statsd_name(d) for d in metrics.DIRECTIONS]
        elif metric.label:
            keys = [f"{metric.stat}.<name>"]
            names = [metric.statsd_name("<name>")]
        else:
            keys, names = [metric.stat], [metric.statsd]
        if metric.label:
            prometheus += f"{{{metric.label}}}"
        rows.append(
            [
                ", ".join(f"``{key}``" for key in keys),
                metric.kind,
                ", ".join(f"``{name}``" for name in names),
                f"``{prometheus}``",
                escape(metric.help),
            ]
        )
    return "\n".join(
        list_table(["In /stats", "Kind", "statsd", "Prometheus", "Meaning"], rows, "18 8 20 24 30")
    )


# -- toxics ----------------------------------------------------------------------------------


def _factor(scale: float) -> str:
    return {0.001: "/ 1000", 1e-6: "/ 1,000,000", 1000 / 1024: "* 1000 / 1024"}.get(scale, "")


def toxics_reference(behaviors: Registry) -> str:
    """A table of Toxiproxy's toxics: their attributes and the behavior options they set."""
    rows = []
    for kind in toxics.TOXIC_TYPES.values():
        attributes = []
        for attribute in kind.attributes:
            option = f"``{attribute.option}``"
            if attribute.scale != 1:
                option += f" = ``{attribute.name}`` {_factor(attribute.scale)}"
            if attribute.least is not None:
                option += f", at least {attribute.least:g}"
            attributes.append(f"``{attribute.name}`` ({attribute.unit}): {option}")
        fixed = [f"``{name}`` = {literal(value)}" for name, value in kind.fixed.items()]
        rows.append(
            [
                f"``{kind.name}``",
                f":ref:`{kind.behavior} <behavior-{kind.behavior}>`",
                "; ".join(attributes + fixed) or "none",
            ]
        )
    table = list_table(
        ["Toxic", "Behavior", "Attributes (0 unless given): option set"], rows, "15 15 70"
    )
    own = ", ".join(
        f":ref:`{name} <behavior-{name}>`"
        for name in behaviors.names()
        if name not in toxics.TOXIC_TYPES
    )
    return "\n".join(
        [
            *table,
            f"Every other behavior is a toxic type under its own name, its options as attributes "
            f"(in its own units) but ``direction``, which ``stream`` sets: {own}.",
            "",
        ]
    )


# -- plugins ---------------------------------------------------------------------------------


def options_table(kind: str, name: str, registry: Registry) -> list[str]:
    """The options of one plugin, and where to set them."""
    options = registry.options(name)
    if not options:
        return ["It has no options.", ""]
    rows = []
    for option in options.values():
        accepted = []
        if option.choices:
            accepted.append("one of " + ", ".join(literal(c) for c in option.choices))
        if option.range is not None:
            accepted.append(str(option.range))
        rows.append(
            [
                f"``{option.name}``",
                option.type_name,
                literal(option.default),
                "; ".join(accepted) or "any",
                escape(option.description),
            ]
        )
    lines = list_table(
        ["Option", "Type", "Default", "Values", "Description"], rows, "15 10 12 15 48"
    )
    flags = []
    for option in options.values():
        flag = cli.plugin_flag(kind, name, option.name)
        flags.append(f"``{flag}``" + (f" / ``--no-{flag[2:]}``" if option.type is bool else ""))
    lines += [
        f"On the command line: {', '.join(flags)}. In a config file: the keys of the "
        f"``[{kind}:{name}]`` section. Through the control API: the same names.",
        "",
    ]
    return lines


def client_sees(behavior: type, protocols: Registry) -> list[tuple[list[str], str]]:
    """What a client sees under each protocol: ``[(protocol names, text), ...]``.

    Protocols for which the behavior reads the same are grouped together.
    """
    grouped: dict[str, list[str]] = {}
    for name in protocols.names():
        text = behavior.client_sees.format(protocol=protocols.get(name))
        grouped.setdefault(text, []).append(name)
    return [(names, text) for text, names in grouped.items()]


def events_reference(protocols: Registry) -> str:
    """What one event is, under each protocol."""
    rows = [
        [f":ref:`{name} <protocol-{name}>`", protocols.get(name).event_unit]
        for name in protocols.names()
    ]
    return "\n".join(list_table(["Protocol", "One event"], rows, "15 85"))


def rule_fields_reference(protocols: Registry) -> str:
    """The fields rules can match: ``client``, which every protocol has, then each protocol's
    own, in the order it declares them."""
    only_client = [name for name in protocols.names() if not _rule_fields(protocols, name)]
    every = "every protocol" + (
        f" (the only one of {', '.join(only_client)})" if only_client else ""
    )
    rows = [[every, f"``{rules.CLIENT}``", "kept", rules.CLIENT_FIELD.description]]
    for name in protocols.names():
        for field_name, field in _rule_fields(protocols, name).items():
            case = "ignored" if field.ignore_case else "kept"
            rows.append(
                [f":ref:`{name} <protocol-{name}>`", f"``{field_name}``", case, field.description]
            )
    return "\n".join(list_table(["Protocol", "Field", "Case", "What it holds"], rows, "14 16 8 62"))


def _rule_fields(protocols: Registry, name: str) -> dict[str, rules.Field]:
    return getattr(protocols.get(name), "rule_fields", {})


def behaviors_reference(behaviors: Registry, protocols: Registry, underline: str = "-") -> str:
    """One section per behavior."""
    lines: list[str] = []
    for name in behaviors.names():
        cls = behaviors.get(name)
        lines += [f".. _behavior-{name}:", "", *heading(name, underline)]
        lines += [docstring(cls), ""]
        lines += options_table("behavior", name, behaviors)
        seen = client_sees(cls, protocols)
        if len(seen) == 1 and len(protocols.names()) > 1:
            rows = [["every protocol", seen[0][1]]]
        else:
            rows = [[", ".join(names), text] for names, text in seen]
        lines += ["**What the client sees**", ""]
        lines += list_table(["Protocol", "The client sees"], rows, "15 85")
    return "\n".join(lines)


def protocols_reference(protocols: Registry, underline: str = "-") -> str:
    """One section per protocol."""
    lines: list[str] = []
    for name in protocols.names():
        cls = protocols.get(name)
        lines += [f".. _protocol-{name}:", "", *heading(name, underline)]
        lines += [docstring(cls), ""]
        lines += [f"**One event:** {cls.event_unit}", ""]
        lines += [f"**Errors** (``error``, ``transient``): {cls.error_form}", ""]
        if getattr(cls, "duplex", False):
            lines += ["Both directions of a session run at the same time.", ""]
        else:
            lines += ["The events of one session run one at a time.", ""]
        lines += options_table("protocol", name, protocols)
    return "\n".join(lines)


def problems(behaviors: Registry, protocols: Registry) -> list[str]:
    """What the reference cannot document: every built-in plugin must describe itself."""
    found = []
    for kind, registry in (("behavior", behaviors), ("protocol", protocols)):
        for name in registry.builtin_names():
            cls = registry.get(name)
            if not docstring(cls):
                found.append(f"{kind} {name!r} ({cls.__qualname__}) has no docstring")
            for option in registry.options(name).values():
                if not option.description.strip():
                    found.append(f"{kind} {name!r}: option {option.name!r} has no description")
    for name in protocols.builtin_names():
        cls = protocols.get(name)
        for attribute in ("event_unit", "error_form"):
            if not isinstance(getattr(cls, attribute, None), str) or not getattr(cls, attribute):
                found.append(f"protocol {name!r} ({cls.__qualname__}) has no {attribute}")
    for name in protocols.builtin_names():
        for field_name, field in _rule_fields(protocols, name).items():
            if not isinstance(field, rules.Field) or not field.description.strip():
                found.append(f"protocol {name!r}: rule field {field_name!r} has no description")
    for name in behaviors.builtin_names():
        cls = behaviors.get(name)
        template = getattr(cls, "client_sees", None)
        if not isinstance(template, str) or not template.strip():
            found.append(f"behavior {name!r} ({cls.__qualname__}) has no client_sees")
            continue
        for protocol in protocols.builtin_names():
            try:
                text = template.format(protocol=protocols.get(protocol))
            except (AttributeError, KeyError, IndexError, ValueError) as e:
                found.append(f"behavior {name!r}: client_sees under {protocol!r}: {e!r}")
                continue
            if "None" in text.split():
                found.append(f"behavior {name!r}: client_sees under {protocol!r} reads {text!r}")
    return found


# -- the directives --------------------------------------------------------------------------


class _Generated(SphinxDirective):
    option_spec = {"heading": directives.single_char_or_unicode}

    def generate(self, behaviors: Registry, protocols: Registry) -> str:
        raise NotImplementedError

    def run(self) -> list[nodes.Node]:
        behaviors, protocols = builtin(Behavior), builtin(Protocol)
        for problem in problems(behaviors, protocols):
            log.warning("vaurien reference: %s", problem, location=self.get_location())
        for registry in (behaviors, protocols):
            for name in registry.names():
                self.env.note_dependency(inspect.getfile(registry.get(name)))
        for module in (cli, config, metrics, rules, settings, toxics):
            self.env.note_dependency(inspect.getfile(module))
        text = self.generate(behaviors, protocols)
        return self.parse_text_to_nodes(text, allow_section_headings=True)

    @property
    def underline(self) -> str:
        return self.options.get("heading", "-")


class CliDirective(_Generated):
    """``.. vaurien-cli::``"""

    def generate(self, behaviors: Registry, protocols: Registry) -> str:
        return cli_reference(cli.build_parser(behaviors, protocols), self.underline)


class SettingsDirective(_Generated):
    """``.. vaurien-settings::``"""

    def generate(self, behaviors: Registry, protocols: Registry) -> str:
        return settings_reference()


class EventsDirective(_Generated):
    """``.. vaurien-events::``"""

    def generate(self, behaviors: Registry, protocols: Registry) -> str:
        return events_reference(protocols)


class RuleFieldsDirective(_Generated):
    """``.. vaurien-rule-fields::``"""

    def generate(self, behaviors: Registry, protocols: Registry) -> str:
        return rule_fields_reference(protocols)


class MetricsDirective(_Generated):
    """``.. vaurien-metrics::``"""

    def generate(self, behaviors: Registry, protocols: Registry) -> str:
        return metrics_reference()


class ToxicsDirective(_Generated):
    """``.. vaurien-toxics::``"""

    def generate(self, behaviors: Registry, protocols: Registry) -> str:
        return toxics_reference(behaviors)


class BehaviorsDirective(_Generated):
    """``.. vaurien-behaviors::``"""

    def generate(self, behaviors: Registry, protocols: Registry) -> str:
        return behaviors_reference(behaviors, protocols, self.underline)


class ProtocolsDirective(_Generated):
    """``.. vaurien-protocols::``"""

    def generate(self, behaviors: Registry, protocols: Registry) -> str:
        return protocols_reference(protocols, self.underline)


def setup(app: Sphinx) -> dict[str, Any]:
    """Register the directives."""
    app.add_directive("vaurien-cli", CliDirective)
    app.add_directive("vaurien-settings", SettingsDirective)
    app.add_directive("vaurien-events", EventsDirective)
    app.add_directive("vaurien-rule-fields", RuleFieldsDirective)
    app.add_directive("vaurien-metrics", MetricsDirective)
    app.add_directive("vaurien-toxics", ToxicsDirective)
    app.add_directive("vaurien-behaviors", BehaviorsDirective)
    app.add_directive("vaurien-protocols", ProtocolsDirective)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
