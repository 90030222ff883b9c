"""The control API and statsd settings: one row each, a flag and an INI key each."""

from __future__ import annotations

import pytest

from vaurien.cli import parse_config
from vaurien.settings import SETTINGS, SETTINGS_BY_NAME

LIVE_CONTROL = [s for s in SETTINGS if s.name.startswith("http") or s.section == "statsd"]
OTHER_VALUES = {
    "http": True,
    "http_host": "127.0.0.2",
    "http_port": 9090,
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
    if not setting.is_flag:
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
