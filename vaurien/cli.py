"""The ``vaurien`` command line.

Precedence is computed, not hoped for: built-in defaults < config file < flags given on the
command line. Every flag's default is ``None`` so the code knows what the user typed.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import sys
from collections.abc import Sequence
from typing import Any

from vaurien import __version__
from vaurien import config as config_file
from vaurien.behaviors import Behavior
from vaurien.errors import ConfigError, OptionError, VaurienError
from vaurien.mix import read_spec
from vaurien.options import Option
from vaurien.protocols import Protocol
from vaurien.proxy_config import ProxyConfig, ServerConfig
from vaurien.registry import Registry
from vaurien.rules import Rule
from vaurien.server import Server
from vaurien.serving import serve_until_signal
from vaurien.settings import SETTINGS, Setting, logging_level

log = logging.getLogger(__name__)

PROG = "vaurien"
DESCRIPTION = "A chaos TCP proxy: forwards traffic to a backend and misbehaves on a share of it."


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit status 2, as argparse does
        self.exit(2, f"{self.prog}: error: {message}\n")


def plugin_flag(kind: str, plugin: str, option: str) -> str:
    """The flag of a plugin option: ``--behavior-slow-close-delay`` for slow_close's delay."""
    return f"--{kind}-{plugin}-{option}".replace("_", "-")


def _dest(kind: str, plugin: str, option: str) -> str:
    return f"{kind}\0{plugin}\0{option}"


def _argparse_type(option: Option, named: bool) -> Any:
    """The ``type`` of a flag: ``option.parse``, its errors shown by argparse after the flag;
    ``named`` keeps the option's name in them, as plugin flags always said."""

    def convert(text: str) -> Any:
        try:
            return option.parse(text)
        except OptionError as e:
            raise argparse.ArgumentTypeError(str(e) if named else e.problem) from None

    convert.__name__ = option.type_name
    return convert


def _help(option: Option) -> str:
    """A flag's help: the description, the default and what else the option accepts."""
    text = f"{option.description} (default: {_show(option.default)})"
    return f"{text}; {option.accepts}" if option.accepts else text


def _add_setting(parser: argparse.ArgumentParser, setting: Setting) -> None:
    if setting.is_flag:
        parser.add_argument(
            setting.flag,
            action=argparse.BooleanOptionalAction,
            default=None,
            help=setting.help,
        )
    else:
        parser.add_argument(
            setting.flag,
            type=_argparse_type(setting.option, named=False),
            default=None,
            metavar=setting.metavar,
            help=_help(setting.option),
        )


def _add_option(
    group: argparse._ArgumentGroup,
    kind: str,
    plugin: str,
    option: Option,
    aliases: Sequence[str],
) -> None:
    flags = [plugin_flag(kind, plugin, option.name)]
    help_text = _help(option)
    dest = _dest(kind, plugin, option.name)
    if option.type is bool:
        group.add_argument(
            *flags,
            action=argparse.BooleanOptionalAction,
            default=None,
            dest=dest,
            help=help_text,
        )
        for alias in aliases:  # the 1.x spelling, accepted but not advertised
            group.add_argument(
                plugin_flag(alias, plugin, option.name),
                action=argparse.BooleanOptionalAction,
                default=None,
                dest=dest,
                help=argparse.SUPPRESS,
            )
        return
    kwargs = dict(
        type=_argparse_type(option, named=True),
        default=None,
        dest=dest,
        metavar=option.type_name.upper(),
    )
    group.add_argument(*flags, help=help_text, **kwargs)
    for alias in aliases:
        group.add_argument(
            plugin_flag(alias, plugin, option.name), help=argparse.SUPPRESS, **kwargs
        )


def _show(value: Any) -> str:
    return (
        "none" if value is None else str(value).lower() if isinstance(value, bool) else str(value)
    )


def base_parser(add_help: bool = False) -> argparse.ArgumentParser:
    """The parser of the global settings, without plugin flags."""
    parser = _Parser(prog=PROG, description=DESCRIPTION, add_help=add_help, allow_abbrev=False)
    parser.add_argument("--config", metavar="FILE", help="Read settings from this INI file.")
    parser.add_argument(
        "--demo",
        action="store_true",
        help="Start an embedded HTTP backend behind the proxy and show the chaos with curl.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    for setting in SETTINGS:
        _add_setting(parser, setting)
    parser.add_argument(  # rules (vaurien.rules): repeatable, so not a Setting
        "--rule",
        action="append",
        type=_rule,
        metavar="RULE",
        help="A rule, MATCH => SPEC: the requests that MATCH (FIELD=PATTERN terms, all of "
        "which must hold) get the mix SPEC, the first matching rule winning; repeat it for "
        "more rules, which replace those of the config file. Example: "
        "'method=POST path=/api/payments/* => 50:error'.",
    )
    return parser


def _rule(text: str) -> Rule:
    try:
        return Rule.parse(text)
    except VaurienError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def build_parser(behaviors: Registry, protocols: Registry) -> argparse.ArgumentParser:
    """The full parser: global settings and every registered plugin's option flags."""
    parser = base_parser(add_help=True)
    for kind, registry, aliases in (
        ("behavior", behaviors, ("handler",)),
        ("protocol", protocols, ()),
    ):
        for name in registry.names():
            options = registry.options(name)
            if not options:
                continue
            group = parser.add_argument_group(f"{kind} {name}")
            for option in options.values():
                _add_option(group, kind, name, option, aliases)
    return parser


def parse_server_config(
    argv: Sequence[str] | None = None,
) -> tuple[ServerConfig, argparse.Namespace]:
    """Turn a command line (and the config file it names) into a :class:`ServerConfig`: the
    command line's proxy (when there is a backend) and the config file's ``[proxy:NAME]``
    sections.

    Raises :class:`VaurienError` for a bad value, or when there is no proxy at all and no
    Toxiproxy API to make some; argparse exits 2 for a bad flag.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    first, _ = base_parser().parse_known_args(argv)
    behaviors, protocols = Behavior.copy(), Protocol.copy()
    registries = {"behavior": behaviors, "protocol": protocols}
    values: dict[str, Any] = {}
    plugin_options: dict[tuple[str, str], dict[str, Any]] = {}
    sections: list[config_file.ProxySection] = []
    path = ""
    file_rules: list[tuple[Rule, tuple[str, ...]]] = []
    if first.config:
        loaded = config_file.load(first.config)
        path, sections = loaded.path, loaded.proxies
        values.update(loaded.settings)
        plugin_options = config_file.apply_plugins(loaded, registries)
        file_rules = loaded.rules
    # The proxy of [vaurien] and the command line takes the rules that name no proxy, or it.
    main_name = first.name if first.name is not None else values.get("name", "default")
    rules = [rule for rule, targets in file_rules if not targets or main_name in targets]
    if first.rule is not None:
        rules = first.rule  # the command line's rules replace the file's
    # Plugins named by dotted path must be registered before their flags can be parsed.
    spec = first.behavior if first.behavior is not None else values.get("behavior")
    if spec is not None:
        read_spec(spec, behaviors)
    scenario = first.scenario if first.scenario is not None else values.get("scenario")
    steps = scenario.steps if scenario is not None else ()
    for each in [*(rule.behavior for rule in rules), *(step.behavior for step in steps)]:
        with contextlib.suppress(VaurienError):  # ProxyConfig says which rule or step is wrong
            read_spec(each, behaviors)
    protocols.resolve(first.protocol or values.get("protocol") or "tcp")

    args = build_parser(behaviors, protocols).parse_args(argv)
    for setting in SETTINGS:
        given = getattr(args, setting.name)
        if given is not None:
            values[setting.name] = given
    for dest, given in vars(args).items():
        if "\0" in dest and given is not None:
            kind, plugin, option = dest.split("\0")
            plugin_options.setdefault((kind, plugin), {})[option] = given
    if args.demo:
        values.setdefault("backend", "127.0.0.1:1")  # replaced by the demo backend's address
    server = ServerConfig(values, (), plugin_options, behaviors, protocols)
    proxies = []
    if values.get("backend") is not None or not (sections or values.get("toxiproxy_api")):
        proxies.append(
            ProxyConfig(
                plugin_options=plugin_options,
                rules=tuple(rules),
                behaviors=behaviors.copy(),
                protocols=protocols.copy(),
                **values,
            )
        )
    _check_rule_targets(path, file_rules, [config.name for config in proxies], sections)
    for section in sections:
        if section.name in {config.name for config in proxies}:
            raise VaurienError(
                f"{path}: [{section.section}]: another proxy is named {section.name}"
            )
        where = f"{path}: [{section.section}]"
        for key, resolve in (
            ("protocol", protocols.resolve),
            ("behavior", lambda spec: read_spec(spec, behaviors)),
        ):
            if key in section.settings:  # registers the plugins it names by dotted path
                try:
                    resolve(section.settings[key])
                except VaurienError as e:
                    raise ConfigError(f"{where} {key}: {e}") from None
        options = config_file.proxy_options(path, section, registries)
        section_rules = tuple(rule for rule, targets in file_rules if section.name in targets)
        try:
            proxies.append(
                server.proxy_config(section.name, options, rules=section_rules, **section.settings)
            )
        except VaurienError as e:
            raise ConfigError(f"{where} {e}") from None
    return dataclasses.replace(server, proxies=tuple(proxies)), args


def _check_rule_targets(
    path: str,
    file_rules: Sequence[tuple[Rule, tuple[str, ...]]],
    main: Sequence[str],
    sections: Sequence[config_file.ProxySection],
) -> None:
    """Each ``[rule:NAME]`` section must be for proxies that exist: those its ``proxies`` key
    names, else the proxy of ``[vaurien]`` (``main`` holds its name, when it has a backend)."""
    names = [*main, *(section.name for section in sections)]
    known = ", ".join(names) or "none"
    for rule, targets in file_rules:
        where = f"{path}: [rule:{rule.name}]"
        if not targets and not main:
            raise ConfigError(
                f"{where} is for the proxy of [vaurien], which has no backend: "
                f"name the proxies it is for with proxies = NAME, NAME (known: {known})"
            )
        for target in targets:
            if target not in names:
                raise ConfigError(f"{where} proxies: no proxy named {target!r} (known: {known})")


def parse_config(
    argv: Sequence[str] | None = None,
) -> tuple[ProxyConfig, argparse.Namespace]:
    """Turn a command line (and the config file it names) into the :class:`ProxyConfig` of its
    proxy (the first of :func:`parse_server_config`'s).

    Raises :class:`VaurienError` for a bad value or a missing backend; argparse exits 2 for a
    bad flag.
    """
    server, args = parse_server_config(argv)
    if not server.proxies:
        raise ConfigError("no backend: give --backend HOST:PORT (or backend = in [vaurien])")
    return server.proxies[0], args


def setup_logging(level: str, output: str) -> None:
    """Send the ``vaurien`` loggers to stderr (``-``) or a file, at ``level``."""
    handler: logging.Handler
    if output == "-":
        handler = logging.StreamHandler(sys.stderr)
    else:
        try:
            handler = logging.FileHandler(output, encoding="utf-8")
        except OSError as e:
            raise VaurienError(f"cannot open log output {output!r}: {e.strerror}") from None
    handler.setFormatter(logging.Formatter("%(asctime)s [%(levelname)s] %(message)s"))
    logger = logging.getLogger("vaurien")
    logger.handlers[:] = [handler]
    logger.setLevel(logging_level(level))
    logger.propagate = False


def main(argv: Sequence[str] | None = None) -> int:
    """Run the proxy until SIGINT or SIGTERM; return the exit status."""
    try:
        try:
            config, args = parse_server_config(argv)
        except SystemExit as e:  # argparse: --help, --version, or a usage error (status 2)
            return e.code if isinstance(e.code, int) else 2
        setup_logging(config.log_level, config.log_output)
        if args.demo:
            from vaurien.demo import run_demo  # the demo's web server, only when asked

            run_demo(config.proxies[0], explicit_behavior=args.behavior is not None)
        else:
            serve_until_signal(Server(config))
    except VaurienError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    return 0
