"""``vaurienctl``: drive a running proxy from the shell through its control API.

::

    vaurienctl list-behaviors
    vaurienctl set-behavior delay --option sleep=2
    vaurienctl --host http://localhost:8081 get-behavior
    vaurienctl --proxy cache set-behavior 10:error      # the proxy named cache
    vaurienctl list-proxies
    vaurienctl --proxy cache disable                     # and enable
    VAURIEN_HTTP_TOKEN=... vaurienctl set-behavior dummy   # an API started with --http-token
    vaurienctl set-rules 'method=POST path=/api/payments/* => 50:error'
    vaurienctl set-scenario '30s 100:dummy; 10s 50:error; repeat'

Exit status: 0 when done, 1 when the proxy cannot be reached or refuses, 2 for a usage error.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

PROG = "vaurienctl"
DEFAULT_HOST = "http://localhost:8080"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit status 2
        self.exit(2, f"{self.prog}: error: {message}\n")


def _option(text: str) -> tuple[str, str]:
    key, equals, value = text.partition("=")
    key = key.strip()
    if not equals or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    if key in ("name", "options"):
        raise argparse.ArgumentTypeError(f"{key!r} is a field of the API, not a behavior option")
    return key, value


def _behavior_option(text: str) -> tuple[str, str, str]:
    key, value = _option(text)
    behavior, dot, option = key.partition(".")
    if not dot or not behavior or not option:
        raise argparse.ArgumentTypeError(f"expected BEHAVIOR.KEY=VALUE, got {text!r}")
    return behavior, option, value


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``vaurienctl``."""
    parser = _Parser(
        prog=PROG,
        description="Drive a running Vaurien proxy through its control API (vaurien --http).",
    )
    parser.add_argument(
        "--host",
        default=DEFAULT_HOST,
        metavar="URL",
        help=f"URL of the control API (default: {DEFAULT_HOST})",
    )
    parser.add_argument(
        "--proxy",
        metavar="NAME",
        help="the proxy to drive, by name (default: the command line's proxy of that Vaurien)",
    )
    parser.add_argument(
        "--token",
        default=os.environ.get("VAURIEN_HTTP_TOKEN"),
        metavar="TOKEN",
        help="the API's http_token, for changes (default: $VAURIEN_HTTP_TOKEN)",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.add_parser("list-proxies", help="List the proxies of that Vaurien.")
    commands.required = True
    commands.add_parser("list-behaviors", help="List the behaviors the proxy knows.")
    commands.add_parser("get-behavior", help="Show the behavior in force.")
    setter = commands.add_parser("set-behavior", help="Put a behavior (or a spec) in force.")
    setter.add_argument("name", help='a behavior, or a spec such as "20:delay,80:dummy"')
    setter.add_argument(
        "--option",
        action="append",
        default=[],
        type=_option,
        metavar="KEY=VALUE",
        help="an option of the behavior; repeat for several",
    )
    commands.add_parser("disable", help="Take the proxy down: connections closed and refused.")
    commands.add_parser("enable", help="Put the proxy up again.")
    commands.add_parser("get-rules", help="Show the rules in force, in order.")
    rules = commands.add_parser(
        "set-rules", help="Put rules in force, in place of those there were."
    )
    rules.add_argument(
        "rules", nargs="+", metavar="RULE", help="a rule, 'MATCH => SPEC'; several in their order"
    )
    commands.add_parser("clear-rules", help="Remove every rule.")
    commands.add_parser("get-scenario", help="Show the running scenario and where it is.")
    scenario = commands.add_parser("set-scenario", help="Start a scenario from its first step.")
    scenario.add_argument("scenario", help="steps, such as '30s 100:dummy; 10s 50:error; repeat'")
    scenario.add_argument(
        "--option",
        action="append",
        default=[],
        type=_behavior_option,
        metavar="BEHAVIOR.KEY=VALUE",
        help="an option of a behavior of the scenario; repeat for several",
    )
    commands.add_parser("end-scenario", help="End the running scenario.")
    commands.add_parser("get-backend", help="Show where new connections go.")
    backend = commands.add_parser("set-backend", help="Send new connections elsewhere.")
    backend.add_argument("address", metavar="ADDR", help="HOST:PORT of the new backend")
    return parser


def _client(url: str, proxy: str | None = None, token: str | None = None) -> Any:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"--host must be a URL such as {DEFAULT_HOST}, got {url!r}")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"--host {url!r}: the port must be a number from 0 to 65535") from None
    if port is None:
        port = 443 if parts.scheme == "https" else 80
    from vaurien.client import Client

    return Client(parts.hostname, port, parts.scheme, proxy=proxy, token=token)


def run(client: Any, args: argparse.Namespace) -> str:
    """Run one command; return what to print."""
    if args.command == "list-proxies":
        return "\n".join(
            f"{name}: {about['proxy']} -> {about['backend']} ({about['protocol']}, "
            f"{about['behavior']}{'' if about['enabled'] else ', disabled'})"
            for name, about in client.list_proxies().items()
        )
    if args.command == "list-behaviors":
        return ", ".join(client.list_behaviors())
    if args.command == "get-behavior":
        return client.get_behavior()
    if args.command == "set-behavior":
        client.set_behavior(args.name, **dict(args.option))
        return f'Behavior changed to "{args.name}"'
    if args.command in ("enable", "disable"):
        client.set_enabled(args.command == "enable")
        return f"Proxy {args.command}d"
    if args.command == "get-rules":
        rules = client.get_rules()
        return "\n".join(f"{r['name']}: {r['match']} => {r['behavior']}" for r in rules) or (
            "no rules"
        )
    if args.command == "set-rules":
        client.set_rules(args.rules)
        return f"{len(args.rules)} rule(s) in force"
    if args.command == "clear-rules":
        client.clear_rules()
        return "No more rules"
    if args.command == "get-scenario":
        return describe_scenario(client.get_scenario())
    if args.command == "set-scenario":
        options: dict[str, dict[str, str]] = {}
        for behavior, option, value in args.option:
            options.setdefault(behavior, {})[option] = value
        client.set_scenario(args.scenario, **options)
        return f'Scenario started: "{args.scenario}"'
    if args.command == "end-scenario":
        client.end_scenario()
        return "Scenario ended"
    if args.command == "get-backend":
        return client.get_backend()
    client.set_backend(args.address)
    return f'Backend changed to "{args.address}"'


def describe_scenario(status: dict[str, Any]) -> str:
    """One line about the running scenario, from ``GET /scenario``."""
    if status.get("scenario") is None:
        return "no scenario"
    where = f"step {status['step']} of {status['steps']} ({status['behavior']})"
    if status["done"]:
        return f"{where}, for good: the scenario ran through"
    left = "" if status["left"] is None else f", {status['left']} {status['unit']} left"
    loop = f", pass {status['loop']}" if status["repeat"] else ""
    return f"{where}{left}{loop}: {status['scenario']}"


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``vaurienctl``; return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        client = _client(args.host, args.proxy, args.token)
    except ValueError as e:
        parser.error(str(e))
    except ImportError as e:
        print(f"{PROG}: error: {e}: pip install 'vaurien[client]'", file=sys.stderr)
        return 1
    import requests

    try:
        print(run(client, args))
    except (ValueError, PermissionError) as e:
        print(f"{PROG}: error: the proxy refused: {e}", file=sys.stderr)
        return 1
    except requests.ConnectionError:
        print(
            f"{PROG}: error: cannot reach the proxy's control API at {args.host}", file=sys.stderr
        )
        return 1
    except requests.RequestException as e:
        print(f"{PROG}: error: {args.host}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
