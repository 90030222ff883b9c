"""The INI config file: precedence, environment variables and every error."""

import pytest

from vaurien.cli import main, parse_config
from vaurien.network import Address


def write(tmp_path, text, name="vaurien.ini"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_defaults_then_file_then_command_line(tmp_path):
    path = write(
        tmp_path,
        "[vaurien]\nbackend = localhost:6379\ntimeout = 5\nbehavior = 20:delay\n"
        "stay_connected = yes\n\n[behavior:delay]\nsleep = 0.3\nbefore = false\n",
    )
    config, _ = parse_config(["--config", path])
    assert config.backend == Address("localhost", 6379)
    assert config.timeout == 5.0 and config.stay_connected is True
    assert str(config.behavior) == "20:delay,80:dummy"
    assert config.plugin_options[("behavior", "delay")] == {"sleep": 0.3, "before": False}
    assert config.backlog == 8192  # a default

    config, _ = parse_config(
        ["--config", path, "--timeout", "7", "--behavior-delay-sleep", "0.1",
         "--behavior-delay-before", "--no-stay-connected"]
    )  # fmt: skip
    assert config.timeout == 7.0 and config.stay_connected is False
    assert config.plugin_options[("behavior", "delay")] == {"sleep": 0.1, "before": True}


def test_environment_variables(tmp_path, monkeypatch):
    monkeypatch.setenv("BACKEND_PORT", "6380")
    path = write(tmp_path, "[vaurien]\nbackend = localhost:${BACKEND_PORT}\nlog_output = $$HOME\n")
    config, _ = parse_config(["--config", path])
    assert config.backend.port == 6380 and config.log_output == "$HOME"


def test_callable_registers_under_the_section_name(tmp_path):
    path = write(
        tmp_path,
        "[vaurien]\nbackend = localhost:1\nbehavior = 10:slow\n\n"
        "[behavior:slow]\ncallable = vaurien.behaviors.delay.Delay\nsleep = 2\n",
    )
    config, _ = parse_config(["--config", path, "--no-behavior-slow-before"])
    assert config.behaviors.get("slow").__name__ == "Delay"
    assert config.plugin_options[("behavior", "slow")] == {"sleep": 2.0, "before": False}


@pytest.mark.parametrize(
    "text, message",
    [
        ("[vaurien]\nbackend = x:1\nbakend = y\n", "[vaurien] unknown key 'bakend' (known: name"),
        ("[vaurien]\nbackend = x:1\ntimeout = soon\n", "[vaurien] timeout: expected a number"),
        ("[vaurien]\nbackend = x\n", "[vaurien] backend: 'x': expected HOST:PORT"),
        ("[vaurien]\nbackend = x:1\nbehavior = 20delay\n", "behavior: '20delay': missing ':'"),
        ("[vaurien\nbackend = x:1\n", "File contains no section headers"),
        ("backend = x:1\n", "File contains no section headers"),
        ("[vaurien]\nbackend = x:1\n[mystery]\n", "[mystery]: unknown section"),
        ("[vaurien]\nbackend = x:1\n[behavior:delay]\nslep = 1\n",
         "[behavior:delay] unknown key 'slep' (known: callable, before, direction, jitter, sleep)"),
        ("[vaurien]\nbackend = x:1\n[behavior:delay]\nsleep = abc\n",
         "[behavior:delay] sleep: expected float"),
        ("[vaurien]\nbackend = x:1\n[behavior:nope]\nsleep = 1\n", "unknown behavior 'nope'"),
        ("[vaurien]\nbackend = x:1\n[behavior:x]\ncallable = nowhere.X\n",
         "cannot import behavior 'nowhere.X'"),
        ("[vaurien]\nbackend = x:${NOT_SET_ANYWHERE}\n",
         "environment variable NOT_SET_ANYWHERE is not set"),
    ],
)  # fmt: skip
def test_errors_name_the_file_and_key(tmp_path, capsys, text, message):
    path = write(tmp_path, text)
    assert main(["--config", path]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"vaurien: error: {path}: ") and message in err
    assert err.count("\n") == 1


def test_missing_file(tmp_path, capsys):
    assert main(["--config", str(tmp_path / "nope.ini")]) == 2
    assert "nope.ini: cannot read the config file: No such file" in capsys.readouterr().err
