"""--seed: the same seed and the same traffic give the same picks and the same damage."""

import logging
import random

from support import recv_exactly, wait_until

MIX = "20:corrupt,20:delay,20:slicer,20:error"
OPTIONS = {
    ("behavior", "corrupt"): {"probability": 0.05},
    ("behavior", "delay"): {"sleep": 0.002, "jitter": 0.002},
    ("behavior", "slicer"): {
        "average_size": 20,
        "size_variation": 15,
        "delay": 0.0,
        "direction": "to_client",
    },
}


def _run(start_proxy, backend, caplog, seed):
    """One connection, 25 exchanges one after the other: (picks, what came back)."""
    caplog.clear()
    proxy = start_proxy(backend.address, behavior=MIX, seed=seed, plugin_options=OPTIONS)
    messages = random.Random(0)
    answers = []
    with proxy.connect() as client:
        for _ in range(25):
            message = messages.randbytes(200)
            client.sendall(message)
            answers.append(recv_exactly(client, len(message)))
    wait_until(lambda: proxy.call(proxy.proxy.stats)["active_connections"] == 0)
    picks = [
        record.args[1:]
        for record in caplog.records
        if record.name == "vaurien.session" and record.msg == "%s: %s -> %s"
    ]
    started = [r.getMessage() for r in caplog.records if "random seed" in r.getMessage()]
    proxy.stop()
    return picks, answers, started


def test_same_seed_same_picks_and_same_bytes(echo_backend, start_proxy, caplog):
    caplog.set_level(logging.DEBUG, logger="vaurien")
    first = _run(start_proxy, echo_backend, caplog, seed=1234)
    second = _run(start_proxy, echo_backend, caplog, seed=1234)
    other = _run(start_proxy, echo_backend, caplog, seed=4321)
    picks, answers, started = first
    assert len(picks) >= 50  # a request and an answer per exchange, and the two closes
    assert {name for _, name in picks} >= {"corrupt", "delay", "slicer", "error", "dummy"}
    assert second[0] == picks
    assert second[1] == answers  # corrupted bits, error bytes: all the same
    assert other[0] != picks
    assert other[1] != answers
    assert any("random seed 1234" in line for line in started)


def test_without_a_seed_a_random_one_is_logged(echo_backend, start_proxy, caplog):
    caplog.set_level(logging.INFO, logger="vaurien")
    start_proxy(echo_backend.address)
    assert any("random seed" in r.getMessage() for r in caplog.records)
