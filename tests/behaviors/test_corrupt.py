"""corrupt: about ``probability`` of the bytes get one bit flipped."""

import os
import threading

from support import recv_exactly

SIZE = 200_000


def _through(proxy, payload):
    with proxy.connect(timeout=30) as client:
        threading.Thread(target=client.sendall, args=(payload,), daemon=True).start()
        return recv_exactly(client, len(payload))


def _proxy(start_proxy, backend, probability):
    return start_proxy(
        backend,
        behavior="100:corrupt",
        plugin_options={
            ("behavior", "corrupt"): {"probability": probability, "direction": "to_client"}
        },
    )


def test_bits_flip_at_about_the_requested_rate(echo_backend, start_proxy):
    proxy = _proxy(start_proxy, echo_backend.address, 0.01)
    payload = os.urandom(SIZE)
    received = _through(proxy, payload)
    assert len(received) == SIZE
    flips = [a ^ b for a, b in zip(payload, received, strict=True) if a != b]
    # Expect 2000, with a standard deviation of about 45.
    assert 1600 <= len(flips) <= 2400
    assert all(bin(flip).count("1") == 1 for flip in flips)
    assert {flip.bit_length() for flip in flips} == set(range(1, 9))  # every bit position


def test_probability_one_hits_every_byte(echo_backend, start_proxy):
    proxy = _proxy(start_proxy, echo_backend.address, 1.0)
    payload = bytes(10_000)
    received = _through(proxy, payload)
    assert all(bin(byte).count("1") == 1 for byte in received)


def test_probability_zero_changes_nothing(echo_backend, start_proxy):
    proxy = _proxy(start_proxy, echo_backend.address, 0.0)
    payload = os.urandom(SIZE)
    assert _through(proxy, payload) == payload
