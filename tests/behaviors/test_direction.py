"""direction: every behavior can act on one direction only."""

import time

import pytest

from support import recv_exactly
from vaurien.behaviors import Behavior
from vaurien.behaviors.base import BaseBehavior
from vaurien.cli import parse_config
from vaurien.errors import OptionError, PluginError
from vaurien.registry import Registry

SLEEP = 0.5


def _exchange(proxy, backend, payload):
    """Send ``payload``; return (seconds to reach the backend, seconds for the whole trip)."""
    with proxy.connect() as client:
        start = time.monotonic()
        client.sendall(payload)
        assert recv_exactly(client, len(payload)) == payload
        total = time.monotonic() - start
    recording = backend.connections[-1]
    return recording.chunks[0][0] - start, total


@pytest.mark.parametrize("direction", ["to_client", "downstream"])
def test_delay_to_client_leaves_requests_fast_and_answers_slow(
    recording_backend, start_proxy, direction
):
    proxy = start_proxy(
        recording_backend.address,
        behavior="100:delay",
        plugin_options={("behavior", "delay"): {"sleep": SLEEP, "direction": direction}},
    )
    to_backend, total = _exchange(proxy, recording_backend, b"request")
    assert to_backend < SLEEP / 2
    assert SLEEP - 0.05 <= total < SLEEP * 1.9  # delayed once, on the way back only


@pytest.mark.parametrize("direction", ["to_backend", "upstream"])
def test_delay_to_backend_holds_requests_only(recording_backend, start_proxy, direction):
    proxy = start_proxy(
        recording_backend.address,
        behavior="100:delay",
        plugin_options={("behavior", "delay"): {"sleep": SLEEP, "direction": direction}},
    )
    to_backend, total = _exchange(proxy, recording_backend, b"request")
    assert to_backend >= SLEEP - 0.05
    assert total < SLEEP * 1.9


def test_both_is_the_default(recording_backend, start_proxy):
    proxy = start_proxy(
        recording_backend.address,
        behavior="100:delay",
        plugin_options={("behavior", "delay"): {"sleep": SLEEP}},
    )
    _, total = _exchange(proxy, recording_backend, b"request")
    assert total >= 2 * SLEEP - 0.1


def test_events_of_the_other_direction_count_as_dummy(echo_backend, start_proxy):
    proxy = start_proxy(
        echo_backend.address,
        behavior="100:blackout",
        plugin_options={("behavior", "blackout"): {"direction": "to_client"}},
    )
    with proxy.connect() as client:
        client.sendall(b"x")
        assert client.recv(1) == b""  # the request passed, the answer's event closed
    stats = proxy.call(proxy.proxy.stats)
    assert stats["behaviors"] == {"dummy": 1, "blackout": 1}


def test_every_behavior_has_the_option():
    for name in Behavior.names():
        option = Behavior.options(name)["direction"]
        assert option.default == "both"
        assert option.description


def test_the_flag_the_ini_key_and_checked_values(tmp_path):
    config, _ = parse_config(
        [
            "--backend",
            "127.0.0.1:1",
            "--behavior",
            "100:slicer",
            "--behavior-slicer-direction",
            "upstream",
        ]
    )
    assert config.options_for("behavior", "slicer") == {"direction": "upstream"}
    ini = tmp_path / "vaurien.ini"
    ini.write_text("[vaurien]\nbackend = 127.0.0.1:1\n[behavior:corrupt]\ndirection = to_client\n")
    config, _ = parse_config(["--config", str(ini)])
    assert config.options_for("behavior", "corrupt") == {"direction": "to_client"}
    with pytest.raises(OptionError, match="sideways"):
        Behavior.create("delay", {"direction": "sideways"})


def test_a_plugin_may_not_declare_direction_again():
    registry = Registry("behavior", common_options={"direction": ("d", str, "both")})

    class Own(BaseBehavior):
        """Declares a common option."""

        name = "own"
        options = {"direction": ("mine", str, "left")}

    with pytest.raises(PluginError, match="common"):
        registry.register(Own)
