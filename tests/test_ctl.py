"""vaurienctl, run as a command in a subprocess, against a real control API."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys

import pytest

from control import ControlledProxy, option_values
from support import free_port


@pytest.fixture
def controlled(echo_backend, start_proxy):
    proxy = ControlledProxy(start_proxy(echo_backend.address))
    yield proxy
    proxy.stop()


def vaurienctl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vaurien.ctl", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def ctl(controlled: ControlledProxy, *args: str) -> subprocess.CompletedProcess[str]:
    return vaurienctl("--host", controlled.url, *args)


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("vaurienctl: error: ")
    return lines[0]


def test_vaurienctl_is_a_console_script():
    [script] = [
        ep
        for ep in importlib.metadata.entry_points(group="console_scripts")
        if ep.name == "vaurienctl"
    ]
    assert script.value == "vaurien.ctl:main"


def test_list_behaviors(controlled):
    result = ctl(controlled, "list-behaviors")
    assert result.returncode == 0, result.stderr
    assert result.stdout == ", ".join(controlled.proxy.config.behaviors.names()) + "\n"


def test_set_behavior_with_options_then_get_behavior(controlled):
    result = ctl(
        controlled, "set-behavior", "delay", "--option", "sleep=0.25", "--option", "before=no"
    )
    assert (result.returncode, result.stdout) == (0, 'Behavior changed to "delay"\n'), result.stderr
    assert controlled.proxy.mix.behaviors["delay"].settings == option_values(
        "delay", sleep=0.25, before=False
    )
    result = ctl(controlled, "get-behavior")
    assert (result.returncode, result.stdout) == (0, "delay\n")


def test_set_a_spec(controlled):
    assert ctl(controlled, "set-behavior", "20:delay,10:error").returncode == 0
    assert ctl(controlled, "get-behavior").stdout == "20:delay,10:error,70:dummy\n"


def test_get_and_set_backend(controlled, echo_backend):
    result = ctl(controlled, "get-backend")
    assert result.stdout == echo_backend.address + "\n"
    result = ctl(controlled, "set-backend", "127.0.0.1:6379")
    assert (result.returncode, result.stdout) == (0, 'Backend changed to "127.0.0.1:6379"\n')
    assert str(controlled.proxy.backend) == "127.0.0.1:6379"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["set-behavior", "nope"], "the proxy refused: unknown behavior 'nope' (known: abort,"),
        (["set-behavior", "delay", "--option", "sleep=soon"], "sleep: expected float"),
        (["set-behavior", "delay", "--option", "slep=1"], "unknown option 'slep' for delay"),
        (["set-backend", "nowhere"], "the proxy refused: 'nowhere': expected HOST:PORT"),
    ],
)
def test_a_refusal_is_one_line_and_exit_1(controlled, args, message):
    result = ctl(controlled, *args)
    assert result.returncode == 1
    assert message in one_error_line(result)
    assert controlled.proxy.behavior.names == ["dummy"]


def test_an_unreachable_proxy_is_one_line_and_exit_1():
    url = f"http://127.0.0.1:{free_port()}"
    result = vaurienctl("--host", url, "get-behavior")
    assert result.returncode == 1
    assert one_error_line(result) == (
        f"vaurienctl: error: cannot reach the proxy's control API at {url}"
    )


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["frobnicate"],
        ["set-behavior"],
        ["set-behavior", "delay", "--option", "sleep"],
        ["set-behavior", "delay", "--option", "=1"],
        ["set-behavior", "delay", "--option", "name=hang"],
        ["set-backend"],
        ["--host", "localhost:8080", "get-behavior"],
        ["--host", "ftp://localhost:8080", "get-behavior"],
        ["--host", "http://localhost:99999", "get-behavior"],
    ],
)
def test_usage_errors_exit_2_in_one_line(args):
    result = vaurienctl(*args)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1].startswith("vaurienctl")
    assert "error: " in result.stderr.splitlines()[-1]


def test_list_proxies_and_drive_one_by_name(controlled):
    result = ctl(controlled, "list-proxies")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"default: 127.0.0.1:{controlled.thread.address[1]} -> ")
    assert "(tcp, dummy)" in result.stdout
    result = ctl(controlled, "--proxy", "default", "set-behavior", "blackout")
    assert result.returncode == 0, result.stderr
    assert controlled.client().get_behavior() == "blackout"
    result = ctl(controlled, "--proxy", "nope", "get-behavior")
    assert result.returncode == 1
    assert "no proxy named 'nope'" in one_error_line(result)


def test_disable_and_enable(controlled):
    result = ctl(controlled, "disable")
    assert (result.returncode, result.stdout) == (0, "Proxy disabled\n"), result.stderr
    assert not controlled.proxy.enabled
    result = ctl(controlled, "enable")
    assert (result.returncode, result.stdout) == (0, "Proxy enabled\n"), result.stderr
    assert controlled.proxy.enabled


def test_the_token_comes_from_the_flag_or_the_environment(echo_backend, start_proxy):
    token = "a-token-of-the-tests"
    guarded = ControlledProxy(start_proxy(echo_backend.address), token=token)
    try:
        result = ctl(guarded, "set-behavior", "blackout")
        assert result.returncode == 1
        assert one_error_line(result) == (
            "vaurienctl: error: the proxy refused: this API needs its token for changes: "
            "Authorization: Bearer TOKEN"
        )
        assert ctl(guarded, "--token", token, "set-behavior", "blackout").returncode == 0
        assert guarded.proxy.behavior.names == ["blackout"]
        env = {**os.environ, "VAURIEN_HTTP_TOKEN": token}
        result = subprocess.run(
            [sys.executable, "-m", "vaurien.ctl", "--host", guarded.url, "disable"],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )
        assert result.returncode == 0, result.stderr
        assert not guarded.proxy.enabled
    finally:
        guarded.stop()


def test_set_get_and_clear_rules(controlled):
    result = ctl(
        controlled, "set-rules", "cut: client=10.0.0.0/8 => 100:reset", "client=::1 => hang"
    )
    assert (result.returncode, result.stdout) == (0, "2 rule(s) in force\n"), result.stderr
    result = ctl(controlled, "get-rules")
    assert result.stdout == "cut: client=10.0.0.0/8 => reset\nrule2: client=::1 => hang\n"
    assert ctl(controlled, "clear-rules").stdout == "No more rules\n"
    assert ctl(controlled, "get-rules").stdout == "no rules\n"


def test_a_refused_rule_is_one_line(controlled):
    result = ctl(controlled, "set-rules", "x: path=/a => error")
    assert result.returncode == 1
    assert one_error_line(result) == (
        "vaurienctl: error: the proxy refused: rule 'x': unknown field 'path' for the tcp "
        "protocol (known: client)"
    )


def test_set_get_and_end_a_scenario(controlled):
    result = ctl(
        controlled, "set-scenario", "3req 100:dummy; 1m 100:delay", "--option", "delay.sleep=0"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == 'Scenario started: "3req 100:dummy; 1m 100:delay"\n'
    assert ctl(controlled, "get-scenario").stdout == (
        "step 1 of 2 (dummy), 3 req left: 3req 100:dummy; 1m 100:delay\n"
    )
    assert controlled.thread.call(controlled.proxy.chaos.scenario)["step"] == 1
    assert ctl(controlled, "end-scenario").stdout == "Scenario ended\n"
    assert ctl(controlled, "get-scenario").stdout == "no scenario\n"
    result = ctl(controlled, "set-scenario", "10s 100:delay", "--option", "sleep=1")
    assert result.returncode == 2
    assert "expected BEHAVIOR.KEY=VALUE, got 'sleep=1'" in result.stderr
