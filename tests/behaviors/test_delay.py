"""delay: data held before it is forwarded, or after the exchange."""

import random
import time

from support import recv_exactly


def round_trip(client, payload=b"ping"):
    start = time.monotonic()
    client.sendall(payload)
    assert recv_exactly(client, len(payload)) == payload
    return time.monotonic() - start


def test_delay_before_slows_each_direction(echo_backend, start_proxy):
    proxy = start_proxy(echo_backend.address, behavior="100:delay", timeout=10)
    proxy.call(proxy.proxy.set_behavior, "100:delay", {"delay": {"sleep": 0.4}})
    with proxy.connect() as client:
        # The request waits 0.4 s on its way in, the echo 0.4 s on its way back.
        assert 0.75 < round_trip(client) < 8


def test_delay_after_lets_the_exchange_through_and_holds_what_follows(echo_backend, start_proxy):
    proxy = start_proxy(echo_backend.address, timeout=10)
    proxy.call(proxy.proxy.set_behavior, "100:delay", {"delay": {"sleep": 0.6, "before": False}})
    with proxy.connect() as client:
        assert round_trip(client, b"first") < 0.5
        # The proxy is now sleeping after forwarding "first" and its echo.
        assert 0.3 < round_trip(client, b"second") < 8


def test_zero_sleep_passes_bytes_unchanged(echo_backend, start_proxy):
    proxy = start_proxy(echo_backend.address, behavior="100:delay")
    proxy.call(proxy.proxy.set_behavior, "100:delay", {"delay": {"sleep": 0}})
    payload = bytes(range(256)) * 4096
    with proxy.connect() as client:
        client.sendall(payload)
        assert recv_exactly(client, len(payload)) == payload


def _round_trips(proxy, count):
    with proxy.connect() as client:
        return [round_trip(client, b"x") for _ in range(count)]


def test_jitter_draws_each_delay_from_the_seeded_source(echo_backend, start_proxy):
    sleep, jitter, seed = 0.3, 0.2, 5
    proxy = start_proxy(
        echo_backend.address,
        behavior="100:delay",
        seed=seed,
        plugin_options={
            ("behavior", "delay"): {"sleep": sleep, "jitter": jitter, "direction": "to_backend"}
        },
    )
    # One behavior in the mix: no draw for the pick, one uniform draw per delayed event.
    expected_source = random.Random(seed)
    expected = [expected_source.uniform(sleep - jitter, sleep + jitter) for _ in range(6)]
    measured = _round_trips(proxy, 6)
    for want, got in zip(expected, measured, strict=True):
        assert want - 0.05 <= got < want + 3
    assert max(measured) - min(measured) > 0.05


def test_jitter_never_makes_a_delay_negative(echo_backend, start_proxy):
    proxy = start_proxy(
        echo_backend.address,
        behavior="100:delay",
        plugin_options={("behavior", "delay"): {"sleep": 0.01, "jitter": 1.0}},
    )
    for elapsed in _round_trips(proxy, 10):
        assert elapsed < 5
