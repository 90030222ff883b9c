"""bandwidth: the throughput is capped smoothly, per connection and direction."""

import os
import threading
import time

RATE_KIB = 128


def _receive_rate(client, size):
    """Read ``size`` bytes; return them and the rate in bytes/s after the first read."""
    chunks = [client.recv(65536)]
    start = time.monotonic()
    received = len(chunks[0])
    while received < size:
        chunk = client.recv(65536)
        assert chunk, "connection closed early"
        chunks.append(chunk)
        received += len(chunk)
    elapsed = time.monotonic() - start
    return b"".join(chunks), (received - len(chunks[0])) / elapsed, elapsed


def _options(rate, direction="to_client"):
    return {("behavior", "bandwidth"): {"rate": rate, "direction": direction}}


def test_rate_within_10_percent_over_two_seconds(echo_backend, start_proxy):
    proxy = start_proxy(
        echo_backend.address, behavior="100:bandwidth", plugin_options=_options(RATE_KIB)
    )
    payload = os.urandom(int(2.5 * RATE_KIB * 1024))
    with proxy.connect(timeout=30) as client:
        sender = threading.Thread(target=client.sendall, args=(payload,))
        sender.start()
        received, rate, elapsed = _receive_rate(client, len(payload))
        sender.join()
    assert received == payload
    assert elapsed > 1.5
    assert 0.9 * RATE_KIB * 1024 <= rate <= 1.1 * RATE_KIB * 1024, rate / 1024


def test_no_burst_the_first_quarter_second_stays_under_the_cap(echo_backend, start_proxy):
    proxy = start_proxy(
        echo_backend.address, behavior="100:bandwidth", plugin_options=_options(RATE_KIB)
    )
    with proxy.connect(timeout=30) as client:
        client.sendall(os.urandom(RATE_KIB * 1024))
        client.settimeout(0.25)
        received = 0
        deadline = time.monotonic() + 0.25
        try:
            while time.monotonic() < deadline:
                received += len(client.recv(65536))
        except TimeoutError:
            pass
    # A quarter of a second's worth, plus one slice: nowhere near the 64 KiB of one read.
    assert received <= (0.25 + 0.1) * RATE_KIB * 1024


def test_each_connection_has_its_own_bucket(echo_backend, start_proxy):
    rate_kib = 64
    proxy = start_proxy(
        echo_backend.address, behavior="100:bandwidth", plugin_options=_options(rate_kib)
    )
    payload = os.urandom(int(2 * rate_kib * 1024))
    rates = []

    def transfer():
        with proxy.connect(timeout=30) as client:
            threading.Thread(target=client.sendall, args=(payload,), daemon=True).start()
            received, rate, _ = _receive_rate(client, len(payload))
            assert received == payload
            rates.append(rate)

    threads = [threading.Thread(target=transfer) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    # A shared bucket would give each about half the rate.
    assert len(rates) == 2
    for rate in rates:
        assert 0.8 * rate_kib * 1024 <= rate <= 1.15 * rate_kib * 1024, rate / 1024


def test_zero_rate_leaves_the_throughput_alone(echo_backend, start_proxy):
    proxy = start_proxy(echo_backend.address, behavior="100:bandwidth", plugin_options=_options(0))
    payload = os.urandom(4 << 20)
    with proxy.connect(timeout=30) as client:
        threading.Thread(target=client.sendall, args=(payload,), daemon=True).start()
        received, _, elapsed = _receive_rate(client, len(payload))
    assert received == payload
    assert elapsed < 5
