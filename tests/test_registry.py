"""The plugin registry: registering, resolving, entry points, per-proxy copies."""

import textwrap

import pytest

from vaurien.behaviors import Behavior
from vaurien.behaviors.base import BaseBehavior
from vaurien.errors import PluginError
from vaurien.protocols import Protocol
from vaurien.registry import Registry


def fresh():
    return Behavior.copy()


def test_register_works_as_call_and_decorator_and_returns_the_class():
    registry = fresh()

    class One(BaseBehavior):
        """One."""

        name = "one"

    assert registry.register(One) is One

    @registry.register
    class Two(BaseBehavior):
        """Two."""

        name = "two"

    assert registry.get("two") is Two
    assert registry.register(One) is One  # again: harmless


def test_duplicate_name_names_both_classes():
    registry = fresh()

    class Other(BaseBehavior):
        name = "delay"

    with pytest.raises(PluginError, match=r"taken by vaurien\.behaviors\.delay\.Delay.*Other"):
        registry.register(Other)


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(PluginError, match=r"unknown behavior 'dlay' \(known: abort, .*delay"):
        fresh().resolve("dlay")


def test_plain_class_with_hooks_is_a_behavior():
    registry = fresh()

    class MySuperBehavior:
        name = "super"
        options = {}

        def on_before_handle(self, protocol, source, dest, to_backend):
            return True

    registry.register(MySuperBehavior)
    instance = registry.create("super")
    assert instance.settings == {"direction": "both"} and callable(instance.option)


def test_a_class_without_hooks_is_refused():
    class Nothing:
        name = "nothing"

    with pytest.raises(PluginError, match="is not a behavior"):
        fresh().register(Nothing)
    with pytest.raises(PluginError, match="is not a protocol"):
        Protocol.copy().register(Nothing)


def test_bad_option_table_is_refused_at_registration():
    class Broken(BaseBehavior):
        name = "broken"
        options = {"sleep": ("Delay", float, "soon")}

    with pytest.raises(PluginError, match="behavior 'broken': option 'sleep'"):
        fresh().register(Broken)


def test_copies_are_independent():
    first, second = fresh(), fresh()

    class Mine(BaseBehavior):
        name = "mine"

    first.register(Mine)
    assert "mine" in first and "mine" not in second and "mine" not in Behavior


def test_dotted_paths_both_spellings(tmp_path, monkeypatch):
    (tmp_path / "chaos_paths.py").write_text(
        textwrap.dedent(
            '''
            from vaurien.behaviors.base import BaseBehavior

            class Slow(BaseBehavior):
                """Slow."""
                name = "slow_down"
            '''
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = fresh()
    assert registry.resolve("chaos_paths.Slow") == "slow_down"
    assert registry.resolve("chaos_paths:Slow") == "slow_down"


@pytest.mark.parametrize(
    "path, message",
    [
        ("no_such_module.Thing", "cannot import behavior 'no_such_module.Thing': No module"),
        ("vaurien.behaviors.NoSuchThing", "cannot import behavior 'vaurien.behaviors.NoSuchThing'"),
        ("vaurien.behaviors.delay.gevent", "is not a class"),
    ],
)
def test_import_failures_name_the_path_and_why(path, message):
    with pytest.raises(PluginError, match=message.replace("(", r"\(")):
        fresh().resolve(path)


def test_module_that_fails_while_importing(tmp_path, monkeypatch):
    (tmp_path / "chaos_broken.py").write_text("raise RuntimeError('boom')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(PluginError, match="RuntimeError: boom"):
        fresh().resolve("chaos_broken.Thing")


def test_entry_points_are_loaded(tmp_path, monkeypatch):
    package = tmp_path / "chaos_ep"
    package.mkdir()
    (package / "__init__.py").write_text(
        textwrap.dedent(
            '''
            from vaurien.behaviors.base import BaseBehavior

            class Noisy(BaseBehavior):
                """Noisy."""
                name = "noisy"
            '''
        )
    )
    dist = tmp_path / "chaos_ep-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: chaos-ep\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[vaurien.test_behaviors]\nnoisy = chaos_ep:Noisy\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = Registry("behavior", entry_point_group="vaurien.test_behaviors")
    assert registry.names() == ["noisy"]
    assert registry.get("noisy").__name__ == "Noisy"


def test_installed_package_plugin_is_usable_from_the_command_line(tmp_path, echo_backend):
    import os
    import socket
    import subprocess
    import sys

    from support import free_port, recv_exactly, wait_until

    package = tmp_path / "chaos_cli"
    package.mkdir()
    (package / "__init__.py").write_text(
        textwrap.dedent(
            '''
            from vaurien.behaviors.base import BaseBehavior

            class Reverse(BaseBehavior):
                """Reverse each chunk sent to the backend."""
                name = "reverse"

                def on_before_handle(self, protocol, source, dest, to_backend):
                    data = protocol._get_data(source)
                    dest.sendall(data[::-1] if to_backend else data)
                    return False
            '''
        )
    )
    dist = tmp_path / "chaos_cli-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: chaos-cli\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[vaurien.behaviors]\nreverse = chaos_cli:Reverse\n")
    port = free_port()
    root = os.path.dirname(os.path.dirname(__file__))
    process = subprocess.Popen(
        [sys.executable, "-m", "vaurien", "--proxy", f"127.0.0.1:{port}",
         "--backend", echo_backend.address, "--behavior", "100:reverse"],
        env=dict(os.environ, PYTHONPATH=f"{tmp_path}{os.pathsep}{root}"),
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip

    def connect():
        try:
            return socket.create_connection(("127.0.0.1", port), timeout=10)
        except OSError:
            return None

    try:
        with wait_until(connect) as client:
            client.sendall(b"abc")
            assert recv_exactly(client, 3) == b"cba"
    finally:
        process.terminate()
        _, err = process.communicate(timeout=10)
    assert "behavior: reverse" in err
