"""Churn and leaks: waves of connections ended every way, then back to the baseline.

A third of the clients reset their connection (SO_LINGER 0) at some point of the transfer, a
third half-close early and read the whole echo, and for the last third the backend answers and
closes first. After the waves the proxy process must hold as many descriptors and live sessions
as before, no Session or Endpoint object may survive, and its memory must not have grown by more
than 10% since the end of the first wave.
"""

from __future__ import annotations

import gc
import random
import resource
import time
import weakref

import gevent
import gevent.pool
import pytest
from harness import ProxyProcess
from load import CHURN_CLIENTS, Backend, churn_backend, churn_half_close

from support import recv_exactly, wait_until

MIB = 1 << 20


def raise_open_files_limit() -> None:
    """The test process holds a client and a backend socket per connection in flight."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def run_churn(waves: int, per_wave: int, concurrency: int, deadline: float) -> dict:
    raise_open_files_limit()
    rng = random.Random(11)
    backend = Backend(churn_backend)
    proxy = ProxyProcess(backend.address, timeout=30)
    started = time.monotonic()
    try:
        with gevent.Timeout(deadline, AssertionError(f"churn not done within {deadline}s")):
            # Warm up (lazy imports, first-use allocations) before taking the baseline.
            assert churn_half_close(proxy.address, rng) == "ok"
            wait_until(lambda: proxy.stats()["live_sessions"] == 0)
            baseline_fds = proxy.open_fds()
            baseline = proxy.stats()
            assert baseline["open_fds"] == baseline_fds
            rss = []
            failures = []
            pool = gevent.pool.Pool(concurrency)
            for wave in range(waves):
                clients = [CHURN_CLIENTS[(wave + i) % 3] for i in range(per_wave)]
                jobs = [
                    pool.spawn(client, proxy.address, random.Random(rng.getrandbits(32)))
                    for client in clients
                ]
                gevent.joinall(jobs, raise_error=True)
                failures += [job.value for job in jobs if job.value != "ok"]
                wait_until(lambda: proxy.stats()["live_sessions"] == 0)
                rss.append(proxy.rss())
            wait_until(lambda: backend.active == 0)
            wait_until(lambda: proxy.open_fds() == baseline_fds, timeout=10)
        stats = proxy.stats()
        objects = proxy.objects()
        log = proxy.log()
    finally:
        proxy.cleanup()
        backend.stop()
    elapsed = time.monotonic() - started
    assert not failures, f"{len(failures)} failed exchanges: {failures[:5]}"
    assert not backend.errors, backend.errors[:3]
    assert "Traceback" not in log, log
    assert stats["live_sessions"] == 0
    assert stats["active_connections"] == 0
    assert stats["open_fds"] == baseline["open_fds"]
    assert stats["total_connections"] == baseline["total_connections"] + waves * per_wave
    assert objects == {"sessions": 0, "endpoints": 0}
    growth = rss[-1] / rss[0] - 1
    figures = {
        "connections": waves * per_wave,
        "seconds": round(elapsed, 1),
        "connections/s": round(waves * per_wave / elapsed),
        "open fds": baseline_fds,
        "RSS after first wave MiB": round(rss[0] / MIB, 1),
        "RSS at the end MiB": round(rss[-1] / MIB, 1),
        "growth %": round(growth * 100, 1),
    }
    print(f"churn: {figures}")
    assert growth < 0.10, figures
    return figures


def test_churn_fast():
    run_churn(waves=4, per_wave=250, concurrency=100, deadline=120)


@pytest.mark.full
def test_churn_20000_connections():
    run_churn(waves=20, per_wave=1000, concurrency=200, deadline=280)


def test_an_ended_session_is_freed_without_waiting_for_the_garbage_collector(
    echo_backend, start_proxy
):
    proxy = start_proxy(echo_backend.address)
    gc.collect()
    gc.disable()
    try:
        with proxy.connect() as client:
            client.sendall(b"ping")
            assert recv_exactly(client, 4) == b"ping"
            session = proxy.call(lambda: weakref.ref(next(iter(proxy.proxy.sessions))))
            assert session() is not None
        wait_until(lambda: proxy.call(proxy.proxy.stats)["live_sessions"] == 0)
        wait_until(lambda: session() is None, timeout=5)
    finally:
        gc.enable()
