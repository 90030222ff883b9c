"""The project's promises about itself: one test command, a registry with no half-wired plugin."""

import re
from pathlib import Path

import pytest

from vaurien.behaviors import Behavior
from vaurien.cli import build_parser, plugin_flag
from vaurien.protocols import Protocol

ROOT = Path(__file__).parent.parent


def test_ci_runs_exactly_the_readme_test_command():
    readme = (ROOT / "README.rst").read_text()
    section = readme.split("Run the tests\n=============")[1].split("\n\n\n")[0]
    command = re.search(r"::\n\n    (.+)\n", section)[1]
    ci = [
        line
        for line in (ROOT / ".ci/run").read_text().splitlines()
        if line and not line.startswith(("#", "set ", "cd "))
    ]
    assert ci == [command]


PLUGINS = [("behavior", name) for name in Behavior.names()] + [
    ("protocol", name) for name in Protocol.names()
]


@pytest.mark.parametrize("kind, name", PLUGINS)
def test_every_plugin_is_documented_and_wired(kind, name):
    registry = Behavior if kind == "behavior" else Protocol
    cls = registry.get(name)
    assert (cls.__doc__ or "").strip(), f"{kind} {name} has no docstring"
    flags = build_parser(Behavior, Protocol).format_help()
    for option in registry.options(name).values():
        assert option.check(option.default) == option.default
        assert option.description.strip()
        assert plugin_flag(kind, name, option.name) in flags
    # A fresh instance gets every option's value and a working option() lookup.
    instance = registry.create(name)
    for option in registry.options(name).values():
        assert instance.option(option.name) == option.default
