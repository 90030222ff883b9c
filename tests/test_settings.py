"""The global settings: one row each, a flag and an INI key each; ProxyConfig; ranges."""

from __future__ import annotations

import dataclasses

import pytest

from vaurien.cli import main, parse_config
from vaurien.errors import ConfigError
from vaurien.network import Address
from vaurien.proxy_config import ProxyConfig
from vaurien.settings import SETTINGS, SETTINGS_BY_NAME

LIVE_CONTROL = [s for s in SETTINGS if s.name.startswith("http") or s.section == "statsd"]
OTHER_VALUES = {
    "http": True,
    "http_host": "127.0.0.2",
    "http_port": 9090,
    "http_token": "a-token-of-the-tests",
    "statsd_enabled": True,
    "statsd_host": "127.0.0.3",
    "statsd_port": 9125,
    "statsd_prefix": "chaos",
    "statsd_sample_rate": 0.5,
}


def test_the_rows():
    assert [s.name for s in LIVE_CONTROL] == list(OTHER_VALUES)
    assert [(s.section, s.key) for s in LIVE_CONTROL] == [
        ("vaurien", "http"),
        ("vaurien", "http_host"),
        ("vaurien", "http_port"),
        ("vaurien", "http_token"),
        ("statsd", "enabled"),
        ("statsd", "host"),
        ("statsd", "port"),
        ("statsd", "prefix"),
        ("statsd", "sample_rate"),
    ]


@pytest.mark.parametrize("setting", LIVE_CONTROL, ids=lambda s: s.name)
def test_default_flag_and_ini_key(setting, tmp_path):
    config, _ = parse_config(["--backend", "localhost:1"])
    assert getattr(config, setting.name) == setting.default
    if not setting.is_flag and setting.default is not None:
        assert setting.parse(str(setting.default)) == setting.default

    value = OTHER_VALUES[setting.name]
    argv = [setting.flag] if value is True else [setting.flag, str(value)]
    config, _ = parse_config(["--backend", "localhost:1", *argv])
    assert getattr(config, setting.name) == value

    path = tmp_path / "vaurien.ini"
    text = str(value).lower() if isinstance(value, bool) else str(value)
    sections = {"vaurien": ["backend = localhost:1"]}
    sections.setdefault(setting.section, []).append(f"{setting.key} = {text}")
    path.write_text(
        "".join(f"[{name}]\n" + "\n".join(lines) + "\n" for name, lines in sections.items())
    )
    config, _ = parse_config(["--config", str(path)])
    assert getattr(config, setting.name) == value


def test_the_control_api_defaults_as_in_1x():
    http, host, port = (SETTINGS_BY_NAME[name] for name in ("http", "http_host", "http_port"))
    assert (http.default, host.default, port.default) == (False, "localhost", 8080)
    assert (http.flag, host.flag, port.flag) == ("--http", "--http-host", "--http-port")


def test_an_ipv6_control_host_may_be_written_in_brackets():
    config, _ = parse_config(["--backend", "localhost:1", "--http-host", "[::1]"])
    assert config.http_host == "::1"


def test_proxy_config_has_a_typed_field_for_each_setting():
    fields = {field.name: field for field in dataclasses.fields(ProxyConfig)}
    settings = [name for name in fields if name in SETTINGS_BY_NAME]
    assert settings == [setting.name for setting in SETTINGS]
    assert set(fields) - set(settings) == {"plugin_options", "rules", "behaviors", "protocols"}
    for setting in SETTINGS:
        assert fields[setting.name].default == setting.default, setting.name


def test_proxy_config_parses_text_checks_values_and_is_frozen():
    config = ProxyConfig(backend="localhost:1", timeout="2.5", stay_connected="yes", seed=3)
    assert (config.backend, config.timeout, config.stay_connected) == (
        Address("localhost", 1),
        2.5,
        True,
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.timeout = 1.0
    assert dataclasses.replace(config, timeout=4).timeout == 4
    with pytest.raises(ConfigError, match="^timeout: expected a number of at least 0.001, got 0$"):
        ProxyConfig(backend="localhost:1", timeout=0)
    with pytest.raises(ConfigError, match="^http_port: expected a whole number of at most 65535"):
        ProxyConfig(backend="localhost:1", http_port="65536")
    with pytest.raises(ConfigError, match="^no backend"):
        ProxyConfig()


@pytest.mark.parametrize(
    "flag, value, message",
    [
        ("--timeout", "0", "argument --timeout: expected a number of at least 0.001, got 0.0"),
        ("--backlog", "0", "argument --backlog: expected a whole number of at least 1, got 0"),
        ("--seed", "-1", "argument --seed: expected a whole number of at least 0, got -1"),
        ("--http-port", "65536", "argument --http-port: expected a whole number of at most 65535"),
        ("--behavior-delay-sleep", "-1", "--behavior-delay-sleep: sleep: expected a number of at"),
        ("--behavior-delay-jitter", "-0.1", "jitter: expected a number of at least 0, got -0.1"),
        ("--behavior-bandwidth-rate", "-5", "rate: expected a number of at least 0, got -5.0"),
        ("--behavior-corrupt-probability", "1.5", "probability: expected a number of at most 1"),
        ("--behavior-corrupt-probability", "-0.5", "probability: expected a number of at least 0"),
        ("--behavior-limit-bytes", "-1", "bytes: expected a whole number of at least 0, got -1"),
        ("--behavior-slicer-average-size", "0", "average_size: expected a whole number of at"),
        ("--behavior-slicer-size-variation", "-3", "size_variation: expected a whole number of at"),
        ("--behavior-slicer-delay", "-1", "delay: expected a number of at least 0"),
        ("--behavior-error-warmup", "-2", "warmup: expected a whole number of at least 0"),
        ("--behavior-transient-agitate", "-1", "agitate: expected a whole number of at least 0"),
        ("--behavior-reset-timeout", "-1", "timeout: expected a number of at least 0"),
        ("--behavior-timeout-timeout", "-1", "timeout: expected a number of at least 0"),
        ("--behavior-slow-close-delay", "-1", "delay: expected a number of at least 0"),
        ("--protocol-tcp-buffer", "0", "buffer: expected a whole number of at least 1"),
    ],
)  # fmt: skip
def test_values_out_of_range_exit_2_naming_the_flag(flag, value, message, capsys):
    assert main(["--backend", "localhost:1", f"{flag}={value}"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_values_out_of_range_in_the_config_file_name_the_key(tmp_path, capsys):
    path = tmp_path / "vaurien.ini"
    path.write_text("[vaurien]\nbackend = localhost:1\n\n[behavior:delay]\nsleep = -1\n")
    assert main(["--config", str(path)]) == 2
    assert "[behavior:delay] sleep: expected a number of at least 0, got -1.0" in (
        capsys.readouterr().err
    )
    path.write_text("[vaurien]\nbackend = localhost:1\ntimeout = 0\n")
    assert main(["--config", str(path)]) == 2
    assert "[vaurien] timeout: expected a number of at least 0.001" in capsys.readouterr().err


def test_the_help_shows_ranges(capsys):
    assert main(["--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "(default: 30.0); at least 0.001" in out
    assert "(default: 0.001); 0 to 1" in out  # corrupt's probability
    assert "--tcp-keepalive, --no-tcp-keepalive" in out
