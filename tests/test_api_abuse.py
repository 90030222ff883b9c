"""The control API under abuse: every request gets a clear 4xx or succeeds, and the behavior in
force is always one that a single PUT set, never a blend of two."""

import json
import threading
import time

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from control import ControlledProxy
from support import ProxyThread, recv_exactly
from vaurien.mix import BehaviorMix


@pytest.fixture
def controlled(echo_backend):
    thread = ProxyThread(backend=echo_backend.address).start()
    controlled = ControlledProxy(thread)
    yield controlled
    controlled.stop()
    thread.stop()


def put(controlled, data, **kwargs):
    return requests.put(f"{controlled.url}/behavior", data=data, timeout=10, **kwargs)


HOSTILE_BODIES = [
    b"",
    b"{",
    b"null",
    b"[]",
    b'"delay"',
    b"42",
    b"\xff\xfe\x00garbage",
    b"[" * 100_000,
    b'{"name": ' + b"[" * 50_000 + b"]" * 50_000 + b"}",
    json.dumps({"name": 12}).encode(),
    json.dumps({"name": ["delay"]}).encode(),
    json.dumps({"name": {"delay": 1}}).encode(),
    json.dumps({"name": "delay", "sleep": "soon"}).encode(),
    json.dumps({"name": "delay", "sleep": True}).encode(),
    json.dumps({"name": "delay", "sleep": None}).encode(),
    json.dumps({"name": "delay", "sleep": 1e400}).encode().replace(b"Infinity", b"1e400"),
    json.dumps({"name": "delay", "colour": "blue"}).encode(),
    json.dumps({"name": "delay", "options": "fast"}).encode(),
    json.dumps({"name": "delay", "options": {"error": {"warmup": 1}}}).encode(),
    json.dumps({"name": "delay", "options": {"delay": {"sleep": [1]}}}).encode(),
    json.dumps({"name": "vaurien.behaviors.delay.Delay"}).encode(),
    json.dumps({"name": "os.system"}).encode(),
    json.dumps({"name": "80:delay,30:error"}).encode(),
    json.dumps({"name": "x" * 60_000}).encode(),
    b'{"name": "delay", "name": 5}',
]


@pytest.mark.parametrize("body", HOSTILE_BODIES, ids=range(len(HOSTILE_BODIES)))
def test_hostile_bodies_get_a_4xx_with_a_json_error(controlled, body):
    before = controlled.client().get_behavior_options()
    answer = put(controlled, body, headers={"Content-Type": "application/json"})
    assert 400 <= answer.status_code < 500, answer.text
    error = answer.json()
    assert error["status"] == "error" and error["errors"][0]["description"]
    assert controlled.client().get_behavior_options() == before


def test_bodies_over_the_limit(controlled):
    body = json.dumps({"name": "delay", "pad": "x" * 70_000}).encode()
    assert put(controlled, body).status_code == 413

    def chunks():
        yield b'{"name": "delay", "pad": "'
        for _ in range(100):
            yield b"x" * 1000
        yield b'"}'

    assert put(controlled, chunks()).status_code == 413
    assert controlled.client().get_behavior() == "dummy"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
fields = st.dictionaries(
    st.sampled_from(["name", "sleep", "before", "options", "warmup", "direction", "rate", "x"]),
    json_values | st.sampled_from(["delay", "20:delay", "error", "both", "to_client"]),
    max_size=4,
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(body=fields)
def test_random_bodies_never_get_a_5xx(controlled, body):
    answer = put(controlled, json.dumps(body))
    assert answer.status_code == 200 or 400 <= answer.status_code < 500, answer.text
    if answer.status_code != 200:
        assert answer.json()["errors"]


def test_concurrent_puts_under_traffic_never_blend(controlled):
    """Each writer puts its own mix with its own option values; every observation of the
    behavior in force (through the API and inside the proxy) must be exactly one of them."""
    candidates = {}
    for index in range(8):
        spec = f"{10 + index}:delay,{5 + index}:error"
        options = {
            "delay": {"sleep": 0.0001 * (index + 1), "before": index % 2 == 0},
            "error": {"warmup": 10_000 + index},  # never errs: the traffic must pass intact
        }
        candidates[index] = (spec, options)
    expected = {str(BehaviorMix.parse(spec)): options for spec, options in candidates.values()}

    deadline = time.monotonic() + 8
    problems = []

    def writer(index):
        spec, options = candidates[index]
        session = requests.Session()
        while time.monotonic() < deadline:
            answer = session.put(
                f"{controlled.url}/behavior", json={"name": spec, "options": options}, timeout=10
            )
            if answer.status_code != 200:
                problems.append(answer.text)

    def reader():
        session = requests.Session()
        while time.monotonic() < deadline:
            seen = session.get(f"{controlled.url}/behavior/options", timeout=10).json()
            if seen["behavior"] == "dummy":
                continue
            wanted = expected.get(seen["behavior"])
            got = {name: {k: seen["options"][name][k] for k in values}
                   for name, values in (wanted or {}).items()}  # fmt: skip
            if wanted is None or got != wanted:
                problems.append(f"blend seen through the API: {seen}")

    def inside():
        def snapshot(proxy):
            return str(proxy.behavior), {
                name: dict(instance.settings) for name, instance in proxy.mix.behaviors.items()
            }

        while time.monotonic() < deadline:
            spec, settings_ = controlled.thread.call(snapshot, controlled.proxy)
            if spec == "dummy":
                continue
            for name, values in expected[spec].items():
                if any(settings_[name][k] != v for k, v in values.items()):
                    problems.append(f"blend inside the proxy: {spec} {settings_}")

    def traffic():
        payload = bytes(range(256)) * 40
        while time.monotonic() < deadline:
            with controlled.connect() as client:
                for _ in range(5):
                    client.sendall(payload)
                    if recv_exactly(client, len(payload)) != payload:
                        problems.append("traffic corrupted")

    threads = [threading.Thread(target=writer, args=(i,)) for i in candidates]
    threads += [threading.Thread(target=f) for f in (reader, inside, traffic, traffic)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not problems, problems[:5]
    assert controlled.client().get_behavior() in expected
