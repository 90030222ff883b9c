"""The dashboard's stream and files, through real HTTP requests to a proxy's control API.

The page itself runs in a real browser in ``test_dashboard_browser.py``.
"""

from __future__ import annotations

import json
import re
import socket
import time

import pytest
import requests

from control import ControlledProxy
from support import recv_exactly, wait_until
from vaurien import dashboard
from vaurien.dashboard import RATES


@pytest.fixture
def api(echo_backend, start_proxy):
    controlled = ControlledProxy(start_proxy(echo_backend.address))
    yield controlled
    controlled.stop()


class EventStream:
    """A client of ``GET /dashboard/events`` on a plain socket, as a browser tab holds it:
    closing it is closing the tab."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        request = f"GET /dashboard/events HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n"
        self.sock.sendall(request.encode())
        self.file = self.sock.makefile("rb")
        self.status = int(self.file.readline().split()[1])
        self.headers = {}
        while (line := self.file.readline()) not in (b"\r\n", b""):
            key, _, value = line.decode().partition(":")
            self.headers[key.strip().lower()] = value.strip()
        self.fields: dict[str, str] = {}  # the fields of the last event read

    def next(self) -> tuple[str, dict]:
        """The next event: its name and its data."""
        fields: dict[str, str] = {}
        while True:
            line = self.file.readline()
            if not line:
                raise EOFError("the stream ended")
            text = line.decode().rstrip("\r\n")
            if text:
                key, _, value = text.partition(":")
                fields[key] = value.removeprefix(" ")
            elif "data" in fields:
                self.fields = fields
                return fields.get("event", "message"), json.loads(fields["data"])

    def sample(self) -> dict:
        """The data of the next ``sample`` event."""
        while True:
            name, data = self.next()
            if name == "sample":
                return data

    def sample_where(self, predicate, timeout: float = 30.0) -> dict:
        """The first sample that ``predicate`` accepts, within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            sample = self.sample()
            if predicate(sample):
                return sample
        raise AssertionError(f"no sample met {predicate} within {timeout:g}s")

    def close(self) -> None:
        self.file.close()
        self.sock.close()


@pytest.fixture
def streams(api):
    """Factory: an open stream of ``api``'s dashboard, closed after the test."""
    opened = []

    def open_stream() -> EventStream:
        stream = EventStream(api.port)
        opened.append(stream)
        return stream

    yield open_stream
    for stream in opened:
        stream.close()


def watch_of(api):
    return api.server.app.dashboard.watch


def round_trips(api, count: int, size: int = 100) -> None:
    for _ in range(count):
        with api.connect() as sock:
            sock.sendall(b"x" * size)
            assert recv_exactly(sock, size) == b"x" * size


# -- the stream ------------------------------------------------------------------------------


def test_the_stream_is_server_sent_events_starting_with_what_was_kept(api, streams):
    stream = streams()
    assert stream.status == 200
    assert stream.headers["content-type"] == "text/event-stream"
    assert stream.headers["cache-control"] == "no-store"
    name, history = stream.next()
    assert name == "history"
    assert stream.fields["retry"] == "2000"  # a tab reconnects by itself after 2 s
    assert history == {
        "interval": dashboard.INTERVAL,
        "rates": list(RATES),
        "history": [],
        "faults": [],
    }
    assert stream.next()[0] == "sample"


def test_one_sample_about_every_second(api, streams):
    stream = streams()
    stream.sample()
    arrivals, times = [], []
    for _ in range(4):
        times.append(stream.sample()["time"])
        arrivals.append(time.monotonic())
    gaps = [later - earlier for earlier, later in zip(arrivals, arrivals[1:], strict=False)]
    assert all(0.3 < gap < 3.0 for gap in gaps), gaps  # wide margins: a shared, noisy machine
    assert 1.5 < arrivals[-1] - arrivals[0] < 6.0
    assert times == sorted(times)


def test_a_sample_shows_each_proxy_as_the_api_does_with_its_mix_and_figures(api, streams):
    assert requests.put(api.url + "/behavior", json={"name": "20:delay,10:error"}).ok
    sample = streams().sample()
    assert sample["watchers"] == 1
    [proxy] = sample["proxies"]
    described = requests.get(api.url + "/proxies/default", timeout=10).json()
    assert {key: proxy[key] for key in described} == described
    assert proxy["mix"] == [[20.0, "delay"], [10.0, "error"], [70.0, "dummy"]]
    options = requests.get(api.url + "/behavior/options", timeout=10).json()["options"]
    assert proxy["options"] == options
    assert set(proxy["stats"]) == set(api.proxy.stats())
    assert proxy["rates"] is None  # the first sample has nothing to compare with


def test_the_figures_move_with_the_traffic(api, streams):
    stream = streams()
    stream.sample()
    round_trips(api, 10, size=1000)
    seen = [stream.sample()]
    while seen[-1]["proxies"][0]["stats"]["total_connections"] < 10:
        seen.append(stream.sample())
    stats = seen[-1]["proxies"][0]["stats"]
    assert stats["bytes_to_backend"] == stats["bytes_to_client"] == 10_000
    assert stats["behaviors"] == {"dummy": stats["events_to_backend"] + stats["events_to_client"]}
    # The samples the traffic fell into have its rates; then they fall back to nothing.
    rates = [sample["proxies"][0]["rates"] for sample in seen]
    assert all(set(each) == set(RATES) for each in rates)
    assert 0 < max(each["bytes_to_client"] for each in rates) <= 10_000 / 0.3
    assert max(each["events_to_backend"] for each in rates) > 0
    stream.sample_where(lambda s: s["proxies"][0]["rates"]["bytes_to_client"] == 0)


def test_faults_are_the_picks_of_every_behavior_but_dummy(api, streams):
    stream = streams()
    stream.sample()
    round_trips(api, 3)  # dummy picks: no fault
    assert requests.put(api.url + "/behavior", json={"name": "100:error"}).ok
    for _ in range(3):
        with api.connect() as sock:
            sock.sendall(b"ping")
            sock.recv(100)  # the error's garbage
    sample = stream.sample_where(lambda s: s["faults"])
    faults = sample["faults"]
    assert {fault["behavior"] for fault in faults} == {"error"}
    assert all(fault["proxy"] == "default" and fault["count"] > 0 for fault in faults)
    # Each one noted with its session (an earlier one may still read its end: a pick too);
    # tcp names no request.
    assert all(fault["request"] is None and fault["session"] >= 1 for fault in faults)
    assert all(sample["time"] - 10 < fault["time"] <= sample["time"] for fault in faults)
    seen = list(faults)
    while sum(fault["count"] for fault in seen) < api.proxy.applied["error"]:
        seen += stream.sample()["faults"]
    assert sum(fault["count"] for fault in seen) == api.proxy.applied["error"]
    # A dashboard opened later gets the recent faults with the history.
    name, history = streams().next()
    assert history["faults"] == seen
    assert [fault["id"] for fault in seen] == sorted({fault["id"] for fault in seen})


def test_a_closed_stream_is_released_and_nothing_runs_when_nobody_watches(api, streams):
    watch = watch_of(api)
    assert not api.thread.call(lambda: watch.running)
    assert api.proxy.fault_log is None  # no pick is noted
    first, second = streams(), streams()
    second.sample_where(lambda s: s["watchers"] == 2)
    assert api.proxy.fault_log is not None
    first.close()  # a tab closed
    second.sample_where(lambda s: s["watchers"] == 1, timeout=10)
    second.close()
    wait_until(
        lambda: api.thread.call(lambda: (watch.watchers, watch.running)) == (0, False),
        timeout=10,
        what="the last stream released and the sampler stopped",
    )
    assert api.proxy.fault_log is None


@pytest.fixture
def http_api(http_server, start_proxy):
    controlled = ControlledProxy(start_proxy(http_server.address, protocol="http"))
    yield controlled
    controlled.stop()


def http_get(controlled, path: str) -> int:
    """The status of one GET through the proxy, on a connection of its own."""
    host, port = controlled.thread.address
    url = f"http://{host}:{port}{path}"
    return requests.get(url, timeout=10, headers={"Connection": "close"}).status_code


def test_a_sample_shows_the_rules_with_their_picks_and_the_scenarios_step(http_api):
    stream = EventStream(http_api.port)
    try:
        [proxy] = stream.sample()["proxies"]
        assert proxy["rules"] == []
        assert proxy["scenario"] == {"scenario": None}
        rules = {"rules": ["broken: path=/broken => 100:error", "method=DELETE => 50:delay"]}
        assert requests.put(http_api.url + "/rules", json=rules, timeout=10).ok
        scenario = {"scenario": "3req 100:dummy; 100:error"}
        assert requests.put(http_api.url + "/scenario", json=scenario, timeout=10).ok
        assert [http_get(http_api, "/broken") >= 500 for _ in range(2)] == [True, True]
        assert [http_get(http_api, "/") for _ in range(3)] == [200, 200, 200]
        assert http_get(http_api, "/") >= 500  # the scenario's second step
        sample = stream.sample_where(lambda s: s["proxies"][0]["stats"]["steps"].get("2"))
        [proxy] = sample["proxies"]
        shown = requests.get(http_api.url + "/rules", timeout=10).json()["rules"]
        assert proxy["rules"] == [
            {**shown[0], "picks": 2},
            {**shown[1], "picks": 0},
        ]
        assert [rule["name"] for rule in proxy["rules"]] == ["broken", "rule2"]
        assert proxy["stats"]["rules"] == {"broken": 2}
        assert proxy["stats"]["steps"] == {"1": 3, "2": 1}
        assert proxy["scenario"] == requests.get(http_api.url + "/scenario", timeout=10).json()
        assert proxy["scenario"]["step"] == 2 and proxy["scenario"]["steps"] == 2
        assert proxy["scenario"]["scenario"] == "3req 100:dummy; 100:error"
        # The feed names each request a fault hit, and its session.
        faults = list(sample["faults"])
        while sum(fault["count"] for fault in faults) < 3:
            faults += stream.sample()["faults"]
        assert [(f["behavior"], f["request"], f["session"]) for f in faults] == [
            ("error", "GET /broken", 1),
            ("error", "GET /broken", 2),
            ("error", "GET /", 6),
        ]
    finally:
        stream.close()


def test_the_feed_names_a_bounded_number_of_faults_and_counts_the_others(http_api, monkeypatch):
    monkeypatch.setattr(dashboard, "NAMED", 3)
    monkeypatch.setattr(dashboard, "FIELD_TEXT", 12)
    stream = EventStream(http_api.port)
    try:
        stream.sample()
        http_api.client().set_behavior("error")
        picks = http_api.proxy.applied["error"]
        statuses = [http_get(http_api, "/a/path/longer/than/twelve") for _ in range(6)]
        assert all(status >= 500 for status in statuses)
        faults = []
        while sum(fault["count"] for fault in faults) < 6:
            faults += stream.sample()["faults"]
        assert http_api.proxy.applied["error"] - picks == 6
        named = [fault for fault in faults if fault["session"] is not None]
        counted = [fault for fault in faults if fault["session"] is None]
        assert 3 <= len(named) <= 6 and all(fault["count"] == 1 for fault in named)
        assert {fault["request"] for fault in named} == {"GET /a/path/lon…"}
        assert sum(fault["count"] for fault in counted) == 6 - len(named)
        assert all(fault["request"] is None for fault in counted)
    finally:
        stream.close()


def test_request_text_joins_the_naming_fields_and_cuts_long_ones():
    names = ("command", "key")
    assert dashboard.request_text(names, None) is None
    assert dashboard.request_text(names, {}) is None
    assert dashboard.request_text(names, {"command": "GET", "key": "user:1"}) == "GET user:1"
    assert dashboard.request_text(names, {"command": "PING"}) == "PING"
    long = "k" * (dashboard.FIELD_TEXT + 5)
    assert dashboard.request_text(("key",), {"key": long}) == long[: dashboard.FIELD_TEXT - 1] + "…"


def test_every_protocol_names_requests_with_fields_it_declares():
    from vaurien.protocols import Protocol

    for name in Protocol.names():
        protocol = Protocol.get(name)
        assert set(protocol.request_name) <= set(protocol.rule_fields), name
        assert bool(protocol.request_name) == bool(protocol.rule_fields), name


def test_a_later_dashboard_gets_the_charts_history(api, streams):
    stream = streams()
    stream.sample_where(lambda s: s["proxies"][0]["rates"] is not None)
    stream.sample()
    stream.close()
    watch = watch_of(api)
    wait_until(lambda: not api.thread.call(lambda: watch.running), timeout=10)
    name, history = streams().next()
    points = [point for point in history["history"] if "default" in point[1]]
    assert len(points) >= 2
    when, rates = points[-1]
    assert time.time() - 60 < when <= time.time()
    assert len(rates["default"]) == len(RATES)


def test_too_many_open_dashboards_are_refused(api, streams, monkeypatch):
    monkeypatch.setattr(dashboard, "MAX_WATCHERS", 1)
    streams().next()
    response = requests.get(api.url + "/dashboard/events", timeout=10)
    assert response.status_code == 503
    assert response.json()["errors"][0]["description"] == "too many dashboards are open: close one"


# -- the page --------------------------------------------------------------------------------


def test_the_page_and_its_files_are_served_from_the_package(api):
    page = requests.get(api.url + "/", timeout=10)
    assert page.status_code == 200
    assert page.headers["Content-Type"] == "text/html; charset=utf-8"
    policy = page.headers["Content-Security-Policy"]
    assert "default-src 'none'" in policy and "script-src 'self'" in policy
    referenced = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert referenced == ["data:,", "dashboard/dashboard.css", "dashboard/dashboard.js"]
    for path, content_type in (
        ("dashboard/dashboard.css", "text/css; charset=utf-8"),
        ("dashboard/dashboard.js", "text/javascript; charset=utf-8"),
    ):
        response = requests.get(f"{api.url}/{path}", timeout=10)
        assert response.status_code == 200
        assert response.headers["Content-Type"] == content_type
        # Nothing is fetched from anywhere else: the page works with no internet.
        assert "http://" not in response.text and "https://" not in response.text
    assert "http://" not in page.text and "https://" not in page.text
    assert requests.get(api.url + "/dashboard/nothing.js", timeout=10).status_code == 404
    assert requests.put(api.url + "/", data="{}", timeout=10).status_code == 405


def test_the_docs_show_the_screenshot_the_browser_test_writes():
    from test_dashboard_browser import SCREENSHOT

    docs = SCREENSHOT.parent.parent
    page = (docs / "dashboard.rst").read_text(encoding="utf-8")
    assert f".. image:: {SCREENSHOT.relative_to(docs).as_posix()}\n" in page
    assert SCREENSHOT.read_bytes().startswith(b"\x89PNG")
