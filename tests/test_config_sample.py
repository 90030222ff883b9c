"""vaurien.ini.sample: generated from the settings and the plugins, committed, and loadable."""

import configparser
from pathlib import Path

import pytest

from vaurien import config as config_file
from vaurien.behaviors import Behavior
from vaurien.cli import parse_config
from vaurien.mix import read_spec
from vaurien.protocols import Protocol
from vaurien.registry import Registry
from vaurien.settings import SETTINGS

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "vaurien.ini.sample"
REGENERATE = (
    "regenerate it: python3 -c 'from vaurien.config import render_sample; "
    'print(render_sample(), end="")\' > vaurien.ini.sample'
)


def test_the_committed_sample_is_the_rendering():
    assert SAMPLE.read_text(encoding="utf-8") == config_file.render_sample(), REGENERATE


def test_the_sample_loads_as_vaurien_config_reads_it():
    config, _ = parse_config(["--config", str(SAMPLE)])
    assert str(config.backend) == config_file.SAMPLE_BACKEND
    for setting in SETTINGS:
        if setting.name != "backend":
            assert getattr(config, setting.name) == _resolved_default(config, setting), setting.name
    written = set(config.plugin_options)
    for kind, registry in (("behavior", Behavior), ("protocol", Protocol)):
        for name in registry.builtin_names():
            options = registry.options(name)
            if options:
                assert (kind, name) in written
                defaults = {o.name: o.default for o in options.values() if o.default is not None}
                assert config.plugin_options[(kind, name)] == defaults


def _resolved_default(config, setting):
    if setting.name == "behavior":
        return read_spec(setting.default, config.behaviors)
    if setting.name == "protocol":
        return config.protocols.resolve(setting.default)
    return setting.default


def test_every_key_is_in_the_sample():
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(SAMPLE, encoding="utf-8")
    text = SAMPLE.read_text(encoding="utf-8")
    for setting in SETTINGS:
        if setting.default is None and setting.name != "backend":
            assert f"\n# {setting.key} = " in text
        else:
            assert parser.has_option(setting.section, setting.key), setting.name
    for kind, registry in (("behavior", Behavior), ("protocol", Protocol)):
        for name in registry.builtin_names():
            for option in registry.options(name).values():
                if option.default is None:
                    assert f"\n# {option.name} = " in text
                else:
                    assert parser.has_option(f"{kind}:{name}", option.name), (name, option.name)


def test_user_plugins_stay_out_of_the_sample():
    class Mine:
        """A plugin of the user's own."""

        name = "mine"
        options = {"level": ("How much", int, 3)}

        def on_before_handle(self, protocol, source, dest, to_backend):
            return True

    behaviors = Behavior.copy()
    behaviors.register(Mine)
    assert "mine" in behaviors and "mine" not in behaviors.builtin_names()
    assert "[behavior:mine]" not in config_file.render_sample(behaviors=behaviors)


def test_values_without_default_and_dollars_are_written_so_they_load(tmp_path):
    class Shipped:
        """A plugin as Vaurien would ship it, with an option that has no default.

        Second paragraph, not in the sample.
        """

        name = "shipped"
        options = {
            "path": ("Where it goes", str, "/var/$HOME"),
            "limit": ("Optional limit", lambda v: v, None),
            "mode": ("Which way", str, "up", ("up", "down")),
        }

        def on_before_handle(self, protocol, source, dest, to_backend):
            return True

    Shipped.__module__ = "vaurien.behaviors.shipped_for_the_test"
    behaviors = Registry("behavior")
    behaviors.register(Shipped)
    text = config_file.render_sample(behaviors=behaviors, backend="127.0.0.1:9")
    assert "# A plugin as Vaurien would ship it, with an option that has no default." in text
    assert "Second paragraph" not in text
    assert "path = /var/$$HOME" in text
    assert "# Not set by default.\n# limit = <LAMBDA>" in text
    assert "# Which way (str; one of up, down).\nmode = up" in text
    sample = tmp_path / "sample.ini"
    sample.write_text(text, encoding="utf-8")
    loaded = config_file.load(str(sample))
    values = config_file.apply_plugins(loaded, {"behavior": behaviors, "protocol": Protocol})
    assert values[("behavior", "shipped")] == {"path": "/var/$HOME", "mode": "up"}


@pytest.mark.parametrize(
    "value, text",
    [(True, "true"), (False, "false"), (1.0, "1.0"), (0.25, "0.25"), (8192, "8192")],
)
def test_ini_value(value, text):
    assert config_file.ini_value(value) == text
