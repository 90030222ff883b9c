"""The project's promises about itself: one test command, a registry with no half-wired plugin,
and a plain ``pip install vaurien`` that runs every protocol (but ``http2``, which says which
extra it needs) and the demo."""

import json
import os
import re
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
import venv
from pathlib import Path

import pytest

from support import free_port, wait_until
from test_cli import accepting
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


# -- a plain install -----------------------------------------------------------------------------


def _run(command: list, **kwargs) -> str:
    result = subprocess.run(command, capture_output=True, text=True, timeout=240, **kwargs)
    assert result.returncode == 0, f"{command} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def plain_install(tmp_path_factory):
    """The ``bin`` directory of a fresh virtualenv with this tree installed, no extras.

    The wheel is built from a copy of the sources (a build writes into its source tree); pip
    resolves the dependencies from the index it is configured with, through its cache. Nothing
    of the test run leaks in: no PYTHONPATH, and the commands run outside the checkout.
    """
    root = tmp_path_factory.mktemp("plain-install")
    source = root / "source"
    source.mkdir()
    for name in ("setup.py", "README.rst"):
        shutil.copy(ROOT / name, source)
    shutil.copytree(
        ROOT / "vaurien", source / "vaurien", ignore=shutil.ignore_patterns("__pycache__")
    )
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    pip = ["-m", "pip", "--disable-pip-version-check", "-q"]
    _run([sys.executable, *pip, "wheel", "--no-deps", "-w", root / "wheels", source], env=env)
    [wheel] = (root / "wheels").glob("vaurien-*.whl")
    venv.create(root / "venv", with_pip=True)
    bin_dir = root / "venv" / "bin"
    _run([bin_dir / "python", *pip, "install", wheel], env=env, cwd=root)
    return bin_dir, env


@pytest.mark.packaging
def test_a_plain_install_runs_every_protocol_but_http2_without_any_extra(plain_install):
    bin_dir, env = plain_install
    script = """if True:
        import importlib.metadata, importlib.util, json, vaurien
        from vaurien.errors import VaurienError
        from vaurien.protocols import Protocol
        needs = {}
        for name in Protocol.names():
            try:
                Protocol.create(name)  # raises if a protocol needs what is not installed
            except VaurienError as e:
                needs[name] = str(e)
        from vaurien.tls import self_signed
        try:
            self_signed("localhost")
            tls_needs = None
        except VaurienError as e:
            tls_needs = str(e)
        print(json.dumps({
            "tls needs": tls_needs,
            "vaurien": vaurien.__file__,
            "protocols": Protocol.names(),
            "needs": needs,
            "declared extras": importlib.metadata.metadata("vaurien").get_all("Provides-Extra"),
            "extras": [m for m in ("requests", "statsd", "prometheus_client", "sphinx", "h2",
                                 "cryptography")
                       if importlib.util.find_spec(m) is not None],
        }))
    """
    found = json.loads(_run([bin_dir / "python", "-c", script], env=env, cwd=bin_dir))
    assert found["vaurien"].startswith(str(bin_dir.parent))  # the installed copy, not the tree
    assert {"tcp", "http", "redis", "memcache", "mysql", "smtp", "http2"} <= set(found["protocols"])
    assert found["extras"] == []
    # The one protocol with an extra says which, in one line.
    assert found["needs"] == {"http2": "the http2 protocol needs h2: pip install 'vaurien[http2]'"}
    assert found["tls needs"] == (
        "tls_self_signed needs the cryptography package: pip install 'vaurien[tls]'"
    )
    assert {"http", "http2", "tls"} <= set(found["declared extras"])  # http: for old install lines


def _status_through(command: list, env: dict, port: int) -> int:
    """Start ``command`` (a proxy on ``port``), GET / through it, stop it: the HTTP status."""
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    try:
        wait_until(lambda: accepting(port)() or process.poll() is not None)
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as answer:
                return answer.status
        except urllib.error.HTTPError as e:
            return e.code
    finally:
        process.terminate()
        _, err = process.communicate(timeout=10)
        assert process.returncode == 0, err


@pytest.mark.packaging
def test_a_plain_install_answers_http_errors(plain_install, http_server):
    bin_dir, env = plain_install
    port = free_port()
    command = [bin_dir / "vaurien", "--proxy", f"127.0.0.1:{port}", "--seed", "1"]
    http = [*command, "--backend", http_server.address, "--protocol", "http"]
    assert _status_through(http, env, port) == 200
    # The http protocol's error is a well-formed 500, 501, 502 or 503.
    assert 500 <= _status_through([*http, "--behavior", "100:error"], env, port) <= 503
    # So is the demo's, with no --protocol.
    assert 500 <= _status_through([*command, "--demo", "--behavior", "100:error"], env, port) <= 503
