"""Integrity: many connections at once, random payloads both ways, every byte checked by SHA-256.

Each client sends a payload of random size while the backend sends it another one; the backend
answers with the SHA-256 of what it received and the client checks both. The proxy runs in its
own process, so the load generators (gevent, in this process) do not share its interpreter.
"""

from __future__ import annotations

import math
import random
import time

import gevent
import pytest
from harness import ProxyProcess
from load import Backend, integrity_backend, integrity_client

MIB = 1 << 20


def sizes(rng: random.Random, count: int, largest: int) -> list[int]:
    """``count`` sizes from 1 to ``largest``: both ends, then half uniform, half log-uniform."""
    found = [1, largest]
    while len(found) < count:
        if len(found) % 2:
            found.append(rng.randint(1, largest))
        else:
            found.append(max(1, int(math.exp(rng.uniform(0, math.log(largest))))))
    return found[:count]


def run_integrity(connections: int, largest: int, deadline: float, **settings) -> dict:
    rng = random.Random(7)
    backend = Backend(integrity_backend)
    proxy = ProxyProcess(backend.address, timeout=60, **settings)
    try:
        ups, downs = sizes(rng, connections, largest), sizes(rng, connections, largest)
        rng.shuffle(downs)
        started = time.monotonic()
        with gevent.Timeout(deadline, AssertionError(f"not done within {deadline}s")):
            jobs = [
                gevent.spawn(integrity_client, proxy.address, up, down, rng.getrandbits(48))
                for up, down in zip(ups, downs, strict=True)
            ]
            gevent.joinall(jobs, raise_error=True)
        elapsed = time.monotonic() - started
        outcomes = [job.value for job in jobs]
        failures = [outcome for outcome in outcomes if outcome != "ok"]
        assert not failures, f"{len(failures)} of {connections} corrupted: {failures[:5]}"
        assert not backend.errors, backend.errors[:3]
        assert proxy.process.poll() is None
        assert "Traceback" not in proxy.log(), proxy.log()
        total = sum(ups) + sum(downs)
        figures = {
            "connections": connections,
            "bytes": total,
            "seconds": round(elapsed, 2),
            "MiB/s": round(total / MIB / elapsed, 1),
        }
        print(f"integrity {settings or 'dummy'}: {figures}")
        return figures
    finally:
        proxy.cleanup()
        backend.stop()


def test_integrity_fast():
    run_integrity(100, 2 * MIB, deadline=60)


def test_integrity_fast_under_delay():
    run_integrity(
        50,
        MIB,
        deadline=60,
        behavior="100:delay",
        plugin_options={"behavior:delay": {"sleep": 0.001}},
    )


@pytest.mark.full
def test_integrity_200_connections_up_to_8_mib():
    run_integrity(200, 8 * MIB, deadline=280)


@pytest.mark.full
def test_integrity_200_connections_up_to_8_mib_under_delay():
    run_integrity(
        200,
        8 * MIB,
        deadline=280,
        behavior="100:delay",
        plugin_options={"behavior:delay": {"sleep": 0.001}},
    )


def test_the_check_sees_corruption():
    """The same exchange through the error behavior, which garbles the backend's answers."""
    backend = Backend(integrity_backend)
    proxy = ProxyProcess(backend.address, behavior="100:error")
    try:
        with gevent.Timeout(30, AssertionError("not done within 30s")):
            outcome = integrity_client(proxy.address, 1000, 100_000, 1)
    finally:
        proxy.cleanup()
        backend.stop()
    assert outcome == "download of 100000 bytes corrupted"
