"""The generated reference (docs/_ext/vaurien_docs.py) covers the whole code, and cannot drift."""

import argparse
import sys
from pathlib import Path

import pytest

from vaurien import cli
from vaurien.behaviors import Behavior
from vaurien.protocols import Protocol
from vaurien.registry import Registry
from vaurien.settings import SETTINGS

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "docs" / "_ext"))

vaurien_docs = pytest.importorskip("vaurien_docs", reason="Sphinx is not installed")

BEHAVIORS = vaurien_docs.builtin(Behavior)
PROTOCOLS = vaurien_docs.builtin(Protocol)


def test_every_built_in_plugin_describes_itself():
    """Docstrings, ``client_sees`` on behaviors, ``event_unit`` and ``error_form`` on protocols."""
    problems = vaurien_docs.problems(BEHAVIORS, PROTOCOLS)
    assert not problems, "\n".join(
        ["the reference pages cannot document these (see docs/extending.rst):", *problems]
    )


def test_the_reference_is_only_of_built_in_plugins():
    class Mine:
        """Somebody else's behavior."""

        name = "mine_for_the_docs_test"

        def on_before_handle(self, protocol, source, dest, to_backend):
            return True

    behaviors = Behavior.copy()
    behaviors.register(Mine)
    assert "mine_for_the_docs_test" not in vaurien_docs.builtin(behaviors).names()
    assert vaurien_docs.builtin(behaviors).names() == BEHAVIORS.names()


def test_a_plugin_that_does_not_describe_itself_is_reported():
    class Silent:
        name = "silent"
        options = {"level": ("", int, 1)}

        def on_before_handle(self, protocol, source, dest, to_backend):
            return True

    class Careless(Silent):
        """Refers to what protocols do not have."""

        name = "careless"
        client_sees = "{protocol.no_such_thing}"

    class Mute:
        """A protocol with nothing to say about its events."""

        name = "mute"

        def handle(self, source, dest, to_backend, behavior):
            return True

    for cls in (Silent, Careless, Mute):
        cls.__module__ = "vaurien.shipped_for_the_test"
    behaviors, protocols = Registry("behavior"), Registry("protocol")
    behaviors.register(Silent)
    behaviors.register(Careless)
    protocols.register(Mute)
    protocols.register(Protocol.get("tcp"))
    found = "\n".join(vaurien_docs.problems(behaviors, protocols))
    assert "behavior 'silent' (" in found and "has no docstring" in found
    assert "behavior 'silent': option 'level' has no description" in found
    assert "behavior 'silent' (" in found and "has no client_sees" in found
    assert "behavior 'careless': client_sees under 'mute'" in found
    assert "protocol 'mute' (" in found and "has no event_unit" in found
    assert "has no error_form" in found


def test_the_command_line_reference_has_every_flag():
    parser = cli.build_parser(BEHAVIORS, PROTOCOLS)
    text = vaurien_docs.cli_reference(parser)
    shown = [line for line in text.splitlines() if line.startswith(".. option:: ")]
    for action in parser._actions:
        if action.help is argparse.SUPPRESS:  # the 1.x --handler-* spellings
            assert not any(flag in text for flag in action.option_strings if "handler" in flag)
            continue
        assert any(action.option_strings[0] in line for line in shown), action.option_strings
    for name in BEHAVIORS.names():
        for option in BEHAVIORS.options(name):
            assert cli.plugin_flag("behavior", name, option) in text


def test_the_settings_reference_has_every_setting():
    text = vaurien_docs.settings_reference()
    for setting in SETTINGS:
        assert f"``{setting.flag}``" in text
        assert f"``{setting.key}``" in text


@pytest.mark.parametrize("kind", ["behavior", "protocol"])
def test_the_plugin_reference_has_a_section_and_every_option_of_each_plugin(kind):
    registry = BEHAVIORS if kind == "behavior" else PROTOCOLS
    if kind == "behavior":
        text = vaurien_docs.behaviors_reference(BEHAVIORS, PROTOCOLS)
    else:
        text = vaurien_docs.protocols_reference(PROTOCOLS)
    for name in registry.names():
        assert f".. _{kind}-{name}:\n\n{name}\n{'-' * len(name)}\n" in text
        assert vaurien_docs.docstring(registry.get(name)).splitlines()[0] in text
        for option in registry.options(name).values():
            assert f"   * - ``{option.name}``\n     - {option.type_name}\n" in text


def test_what_a_client_sees_is_filled_in_for_each_protocol():
    seen = vaurien_docs.client_sees(Behavior.get("error"), PROTOCOLS)
    assert sorted(name for names, _ in seen for name in names) == PROTOCOLS.names()
    for names, text in seen:
        assert PROTOCOLS.get(names[0]).error_form in text
        assert "{" not in text


def test_identical_texts_are_grouped():
    seen = vaurien_docs.client_sees(Behavior.get("blackout"), PROTOCOLS)
    assert len(seen) == 1 and seen[0][0] == PROTOCOLS.names()


def test_the_metrics_table_names_every_metric():
    from vaurien.metrics import METRICS

    table = vaurien_docs.metrics_reference()
    for metric in METRICS:
        assert f"``{metric.prometheus}" in table and metric.help in table
        assert metric.statsd.split("{")[0] in table


def test_the_toxics_table_maps_every_toxic_and_names_every_other_behavior():
    from vaurien.toxics import TOXIC_TYPES

    text = vaurien_docs.toxics_reference(BEHAVIORS)
    for kind in TOXIC_TYPES.values():
        assert f"``{kind.name}``" in text and f"<behavior-{kind.behavior}>" in text
        for attribute in kind.attributes:
            assert f"``{attribute.name}`` ({attribute.unit}): ``{attribute.option}``" in text
    assert "``latency`` (ms): ``sleep`` = ``latency`` / 1000" in text
    assert "``rate`` (KB/s): ``rate`` = ``rate`` * 1000 / 1024" in text
    for name in BEHAVIORS.names():
        if name not in TOXIC_TYPES:
            assert f":ref:`{name} <behavior-{name}>`" in text.split("Every other behavior")[1]
