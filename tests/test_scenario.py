"""Scenarios: parsing each step, moving from step to step on the proxy's counters, and real
traffic whose share of errors follows the steps."""

from __future__ import annotations

import collections
import math
import time

import pytest
import requests

from control import ControlledProxy
from support import recv_exactly, wait_until
from vaurien.errors import SpecError
from vaurien.mix import BehaviorMix
from vaurien.scenario import (
    BYTES,
    CONNECTIONS,
    PICKS,
    TIME,
    Position,
    Scenario,
    begin,
    left,
    over,
    settle,
)

# -- parsing -----------------------------------------------------------------------------------


def test_a_scenario_reads_back_as_written():
    text = "30s 100:dummy; 10s 50:error; 100req 100:delay; repeat"
    scenario = Scenario.parse(text)
    assert str(scenario) == text
    assert scenario.repeat
    assert [(step.length, step.measure) for step in scenario.steps] == [
        (30.0, TIME),
        (10.0, TIME),
        (100.0, PICKS),
    ]
    assert scenario.steps[1].behavior == BehaviorMix.parse("50:error")


@pytest.mark.parametrize(
    "length, expected",
    [
        ("250ms", (0.25, TIME)),
        ("1.5s", (1.5, TIME)),
        ("2m", (120.0, TIME)),
        ("7req", (7.0, PICKS)),
        ("3conn", (3.0, CONNECTIONS)),
        ("4KiB", (4096.0, BYTES)),
        ("1.5MiB", (1572864.0, BYTES)),
    ],
)
def test_every_unit(length, expected):
    (step,) = Scenario.parse(f"{length} 100:error").steps
    assert (step.length, step.measure) == expected


def test_a_step_may_name_one_behavior_and_the_last_may_go_without_a_length():
    scenario = Scenario.parse("10req dummy; 20:error, 10:delay")
    assert scenario.steps[0].behavior == BehaviorMix.single("dummy")
    assert scenario.steps[1].length is None
    assert str(scenario.steps[1].behavior) == "20:error,10:delay,70:dummy"


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "empty scenario: expected LENGTH SPEC; LENGTH SPEC; ..."),
        ("repeat", "scenario: 'repeat' needs steps before it"),
        (
            "30s 100:dummy; 10x 50:error",
            "scenario step 2 '10x 50:error': unknown unit 'x' in '10x' "
            "(expected ms, s, m, req, conn, KiB or MiB)",
        ),
        ("10s", "scenario step 1 '10s': missing the behavior spec after '10s'"),
        (
            "10s 100:dummy; ; 10s 100:error",
            "scenario step 2 '': empty step",
        ),
        (
            "50:error; 10s 100:dummy",
            "scenario step 1 '50:error': missing its length (ms, s, m, req, conn, KiB or MiB); "
            "only the last step of a scenario without repeat may go without one",
        ),
        (
            "10s 100:dummy; 50:error; repeat",
            "scenario step 2 '50:error': missing its length (ms, s, m, req, conn, KiB or MiB); "
            "only the last step of a scenario without repeat may go without one",
        ),
        (
            "1.5req 100:error",
            "scenario step 1 '1.5req 100:error': '1.5req': a count of req is a whole number",
        ),
        ("0s 100:error", "scenario step 1 '0s 100:error': '0s': a step lasts more than nothing"),
        (
            "5s 100:dummy; repeat; 5s 100:error",
            "scenario step 2 'repeat': 'repeat' comes last, after every step",
        ),
        (
            "10s 150:error",
            "scenario step 1 '10s 150:error': '150:error': percent 150 is over 100",
        ),
        ("ten 100:error", "scenario step 1 'ten 100:error': 'ten' is not a length such as 30s"),
        ("s10 100:error", "scenario step 1 's10 100:error': 's10' is not a length such as 30s"),
    ],
)
def test_each_parse_error_names_its_step(text, message):
    with pytest.raises(SpecError) as caught:
        Scenario.parse(text)
    assert str(caught.value).startswith(message)


# -- moving on -------------------------------------------------------------------------------


class Counters:
    """Readings of the measures, set by the test."""

    def __init__(self):
        self.values = dict.fromkeys((TIME, PICKS, CONNECTIONS, BYTES), 0.0)

    def __call__(self, measure):
        return self.values[measure]


def walk(scenario, counters, position, measure, until):
    """Settle at each reading of ``measure`` from its current value up to ``until``: the step
    index (from 1) at each."""
    steps = []
    while counters.values[measure] < until:
        counters.values[measure] += 1
        position = settle(scenario, position, counters)
        steps.append(position.index + 1)
    return steps, position


def test_a_picks_step_takes_exactly_its_count():
    scenario = Scenario.parse("3req 100:dummy; 2req 100:error; 100:delay")
    counters = Counters()
    position = begin(scenario, counters)
    steps, position = walk(scenario, counters, position, PICKS, 8)
    assert steps == [1, 1, 1, 2, 2, 3, 3, 3]
    assert position.end == math.inf and not position.done  # the last step has no length


def test_repeat_loops_and_counts_the_passes():
    scenario = Scenario.parse("2req 100:dummy; 1req 100:error; repeat")
    counters = Counters()
    position = begin(scenario, counters)
    steps, position = walk(scenario, counters, position, PICKS, 9)
    assert steps == [1, 1, 2] * 3
    assert position.loop == 3
    counters.values[PICKS] += 1
    assert settle(scenario, position, counters).loop == 4


def test_without_repeat_the_last_step_stays_for_good():
    scenario = Scenario.parse("1req 100:dummy; 2req 100:error")
    counters = Counters()
    position = begin(scenario, counters)
    steps, position = walk(scenario, counters, position, PICKS, 6)
    assert steps == [1, 2, 2, 2, 2, 2]
    assert position.done and left(scenario, position, counters) is None
    assert not over(scenario, position, counters)


def test_time_steps_follow_each_other_on_the_clock_not_on_the_readings():
    scenario = Scenario.parse("10s 100:dummy; 5s 100:error; repeat")
    counters = Counters()
    counters.values[TIME] = 1000.0
    position = begin(scenario, counters)
    counters.values[TIME] = 1012.5  # read late: the second step began at 1010
    position = settle(scenario, position, counters)
    assert (position.index, position.start, position.end) == (1, 1010.0, 1015.0)
    assert left(scenario, position, counters) == 2.5
    counters.values[TIME] = 1000.0 + 15 * 1000 + 3  # a thousand passes later: one step away
    position = settle(scenario, position, counters)
    assert (position.index, position.loop, position.start) == (0, 1001, 16000.0)


def test_a_step_of_another_measure_begins_at_the_reading():
    scenario = Scenario.parse("2conn 100:dummy; 1KiB 100:error; 100:dummy")
    counters = Counters()
    counters.values[BYTES] = 500
    position = begin(scenario, counters)
    counters.values[CONNECTIONS] = 2
    assert settle(scenario, position, counters) == position  # the second connection: still
    counters.values[CONNECTIONS] = 3  # the third is the next step's
    counters.values[BYTES] = 800
    position = settle(scenario, position, counters)
    assert position == Position(1, 1, 800, 800 + 1024)
    counters.values[BYTES] = 1825
    assert settle(scenario, position, counters).index == 2


# -- through a proxy --------------------------------------------------------------------------


def test_a_time_scenario_error_share_follows_its_steps(http_server, start_proxy):
    proxy = start_proxy(
        http_server.address,
        protocol="http",
        scenario="1s 100:dummy; 1s 100:error; 1s 100:dummy",
    )
    url = f"http://127.0.0.1:{proxy.address[1]}/"
    started = time.monotonic()
    outcomes = []  # (seconds since the start, failed)
    with requests.Session() as session:
        while (elapsed := time.monotonic() - started) < 3.5:
            failed = session.get(url, timeout=10).status_code >= 500
            outcomes.append((elapsed, failed))
    # One step's tolerance around each boundary: the scenario's clock starts with the proxy,
    # a little before the first request.
    tolerance = 0.25
    for low, high, expected in ((0, 1, False), (1, 2, True), (2, 3.5, False)):
        within = [f for t, f in outcomes if low + tolerance < t < high - tolerance]
        assert within and set(within) == {expected}, (low, high, collections.Counter(within))
    stats = proxy.call(proxy.proxy.stats)
    assert set(stats["steps"]) == {"1", "2", "3"}
    assert stats["steps"]["2"] == stats["behaviors"]["error"]


def redis_proxy(start_proxy, redis_server, **settings):
    """A redis proxy and a connection to it. Raw RESP, not redis-py, which sends commands of its
    own on connecting: every command a test sends is one pick, and nothing else is."""
    proxy = start_proxy(redis_server.address, protocol="redis", **settings)
    return proxy, proxy.connect()


def outcomes(client, count):
    """``count`` PINGs, one at a time: True for each that failed."""
    results = []
    with client.makefile("rb") as replies:
        for _ in range(count):
            client.sendall(b"PING\r\n")
            reply = replies.readline()
            assert reply in (b"+PONG\r\n", b"-ERR ping failed (error injected by vaurien)\r\n")
            results.append(reply.startswith(b"-"))
    return results


def test_a_picks_scenario_gives_exact_counts(redis_server, start_proxy):
    proxy, client = redis_proxy(
        start_proxy, redis_server, scenario="10req 100:dummy; 5req 100:error; 100:dummy"
    )
    assert outcomes(client, 30) == [False] * 10 + [True] * 5 + [False] * 15
    stats = proxy.call(proxy.proxy.stats)
    assert stats["steps"] == {"1": 10, "2": 5, "3": 15}
    assert stats["behaviors"] == {"dummy": 25, "error": 5}


def test_repeat_loops_the_scenario(redis_server, start_proxy):
    proxy, client = redis_proxy(
        start_proxy, redis_server, scenario="3req 100:dummy; 2req 100:error; repeat"
    )
    assert outcomes(client, 20) == ([False] * 3 + [True] * 2) * 4
    status = proxy.call(proxy.proxy.chaos.scenario)
    assert (status["step"], status["loop"], status["left"], status["unit"]) == (2, 4, 0, "req")


def test_the_same_seed_gives_the_same_picks(redis_server, start_proxy):
    scenario = "5req 100:dummy; 30req 50:error; 10req 20:error,20:delay; repeat"
    runs = []
    for _ in range(2):
        proxy, client = redis_proxy(
            start_proxy,
            redis_server,
            scenario=scenario,
            seed=1234,
            plugin_options={("behavior", "delay"): {"sleep": 0}},
        )
        runs.append(outcomes(client, 90))
        client.close()
    assert runs[0] == runs[1]
    assert 10 < runs[0].count(True) < 60  # the draws did vary
    proxy, client = redis_proxy(start_proxy, redis_server, scenario=scenario, seed=4321)
    assert outcomes(client, 90) != runs[0]


def test_a_connections_step_lasts_its_connections(echo_backend, start_proxy):
    proxy = start_proxy(echo_backend.address, scenario="2conn 100:dummy; 100:reset")
    served = []
    for _ in range(4):
        with proxy.connect() as client:
            client.sendall(b"ping")
            try:
                served.append(recv_exactly(client, 4) == b"ping")
            except ConnectionResetError:
                served.append(False)
    assert served == [True, True, False, False]


def test_a_bytes_step_ends_after_its_bytes(echo_backend, start_proxy):
    proxy = start_proxy(echo_backend.address, scenario="4KiB 100:dummy; 100:reset")
    with proxy.connect() as client:
        for _ in range(3):  # 6 KiB relayed: past the step's 4 KiB
            client.sendall(b"x" * 1024)
            assert recv_exactly(client, 1024) == b"x" * 1024
        wait_until(lambda: proxy.call(proxy.proxy.chaos.scenario)["step"] == 2)
        client.sendall(b"y")
        with pytest.raises(ConnectionResetError):
            client.recv(1)


# -- live control ------------------------------------------------------------------------------


@pytest.fixture
def controlled(http_server, start_proxy):
    proxy = ControlledProxy(start_proxy(http_server.address, protocol="http"))
    yield proxy
    proxy.stop()


def test_put_get_and_delete_the_scenario(controlled):
    client = controlled.client()
    assert client.get_scenario() == {"scenario": None}
    client.set_scenario("5req 100:dummy; 10s 100:error", error={"warmup": 1})
    status = client.get_scenario()
    assert status == {
        "scenario": "5req 100:dummy; 10s 100:error",
        "step": 1,
        "steps": 2,
        "behavior": "dummy",
        "left": 5,
        "unit": "req",
        "loop": 1,
        "repeat": False,
        "done": False,
    }
    url = f"http://127.0.0.1:{controlled.thread.address[1]}/"
    codes = [requests.get(url, timeout=10).status_code for _ in range(8)]
    assert codes[:6] == [200] * 6  # five dummy picks, then the warmup of error
    assert all(code >= 500 for code in codes[6:])
    status = client.get_scenario()
    assert (status["step"], status["unit"]) == (2, "s") and 0 < status["left"] <= 10
    client.end_scenario()
    assert client.get_scenario() == {"scenario": None}
    assert requests.get(url, timeout=10).status_code == 200


def test_put_behavior_ends_a_running_scenario(controlled):
    client = controlled.client()
    client.set_scenario("1m 100:error")
    client.set_behavior("dummy")
    assert client.get_scenario() == {"scenario": None}


def test_the_client_runs_a_scenario_for_a_block(controlled):
    client = controlled.client()
    url = f"http://127.0.0.1:{controlled.thread.address[1]}/"
    with client.scenario("1req 100:dummy; 100:error"):
        codes = [requests.get(url, timeout=10).status_code for _ in range(3)]
    assert codes[0] == 200 and all(code >= 500 for code in codes[1:])
    assert client.get_scenario() == {"scenario": None}
    assert requests.get(url, timeout=10).status_code == 200


@pytest.mark.parametrize(
    "body, message",
    [
        ({"scenario": "10x 100:error"}, "scenario step 1 '10x 100:error': unknown unit 'x'"),
        ({"scenario": "10s 100:dlay"}, "scenario step 1 '10s 100:dlay': unknown behavior 'dlay'"),
        ({"scenario": 3}, '"scenario" must be a string'),
        (
            {"scenario": "10s 100:delay", "options": {"delay": {"slep": 1}}},
            "delay.slep: unknown option",
        ),
        (
            {"scenario": "10s 100:delay", "options": {"error": {}}},
            "options for 'error', which is not in the mix",
        ),
        ({"scenario": "10s 100:error", "steps": 2}, "unknown field 'steps'"),
    ],
)
def test_a_refused_scenario_says_why(controlled, body, message):
    response = requests.put(controlled.url + "/scenario", json=body, timeout=10)
    assert response.status_code == 400
    assert response.json()["errors"][0]["description"].startswith(message)
    assert requests.get(controlled.url + "/scenario", timeout=10).json() == {"scenario": None}
