"""Metrics: statsd packets caught by a UDP socket, /metrics read by Prometheus' own parser."""

from __future__ import annotations

import collections
import re
import socket
import sys
import textwrap

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from control import ControlledProxy
from support import ProxyThread, free_port, recv_exactly, wait_until
from vaurien.cli import parse_config
from vaurien.errors import ConfigError
from vaurien.metrics import COUNTER, DIRECTIONS, METRICS, StatsdReporter, samples
from vaurien.util import ProxyProcess


class StatsdSink:
    """A UDP socket standing in for a statsd server: it sums the counters it receives and keeps
    the last level of each gauge."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]
        self.lines: list[str] = []
        self.totals: collections.Counter[str] = collections.Counter()
        self.gauges: dict[str, int] = {}

    def drain(self) -> collections.Counter[str]:
        """Read what arrived; the counters' totals."""
        while True:
            try:
                packet = self.sock.recv(65536)
            except BlockingIOError:
                return self.totals
            for line in packet.decode().splitlines():
                self.lines.append(line)
                name, _, rest = line.partition(":")
                value, kind, *_ = rest.split("|")
                assert kind in ("c", "g"), line
                if kind == "c":
                    self.totals[name] += int(value)
                else:
                    self.gauges[name] = int(value)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def sink():
    sink = StatsdSink()
    yield sink
    sink.close()


def exchange(connect, data: bytes) -> None:
    with connect() as sock:
        sock.sendall(data)
        assert recv_exactly(sock, len(data)) == data


def test_statsd_counters_from_the_hub_timer(echo_backend, start_proxy, sink):
    thread = start_proxy(echo_backend.address)
    reporter = thread.call(
        lambda: StatsdReporter(thread.proxy, "127.0.0.1", sink.port, "chaos", interval=0.05).start()
    )
    try:
        exchange(thread.connect, b"12345")
        exchange(thread.connect, b"abc")
        wait_until(
            lambda: (
                sink.drain()["chaos.connection.start"] == 2
                and sink.gauges.get("chaos.connection.active") == 0
            )
        )
        stats = thread.call(thread.proxy.stats)
        totals = sink.drain()
        assert totals["chaos.bytes.to_backend"] == totals["chaos.bytes.to_client"] == 8
        assert totals["chaos.events.to_backend"] == stats["events_to_backend"] >= 2
        assert totals["chaos.events.to_client"] == stats["events_to_client"] >= 2
        assert totals["chaos.behavior.dummy"] == sum(stats["behaviors"].values())
        assert sink.gauges["chaos.session.live"] == 0
    finally:
        thread.call(reporter.stop)


def test_statsd_stop_sends_what_is_left(echo_backend, start_proxy, sink):
    thread = start_proxy(echo_backend.address)
    reporter = thread.call(
        lambda: StatsdReporter(thread.proxy, "127.0.0.1", sink.port, interval=3600).start()
    )
    exchange(thread.connect, b"1234")
    wait_until(lambda: thread.call(thread.proxy.stats)["active_connections"] == 0)
    assert sink.drain() == {} and not sink.lines  # no flush yet
    thread.call(reporter.stop)
    totals = sink.drain()
    assert totals["vaurien.connection.start"] == 1
    assert sink.gauges["vaurien.connection.active"] == 0
    assert totals["vaurien.bytes.to_backend"] == totals["vaurien.bytes.to_client"] == 4


def test_statsd_sends_nothing_when_nothing_happened(echo_backend, start_proxy, sink):
    thread = start_proxy(echo_backend.address)
    reporter = thread.call(
        lambda: StatsdReporter(thread.proxy, "127.0.0.1", sink.port, interval=0.02).start()
    )
    exchange(thread.connect, b"x")
    wait_until(
        lambda: (
            sink.drain()["vaurien.connection.start"] == 1
            and sink.gauges.get("vaurien.connection.active") == 0
        )
    )
    seen = len(sink.lines)
    thread.call(lambda: [reporter.flush() for _ in range(5)])
    thread.call(reporter.stop)
    sink.drain()
    # Only the process's open file descriptors may have moved (other threads of this test).
    assert seen and all(line.startswith("vaurien.open_fds:") for line in sink.lines[seen:])


def test_every_stats_figure_is_declared_once():
    """A figure added to Proxy.stats() without a row in METRICS fails here."""
    with ProxyThread(backend="127.0.0.1:1") as thread:
        stats = thread.call(thread.proxy.stats)
    declared = []
    for metric in METRICS:
        if metric.label == "direction":
            declared += [metric.stat.format(direction=d) for d in DIRECTIONS]
        else:
            declared.append(metric.stat)
    assert sorted(declared) == sorted(stats)
    for names in ([m.statsd for m in METRICS], [m.prometheus for m in METRICS]):
        assert len(set(names)) == len(names)


@pytest.fixture
def busy(echo_backend, start_proxy):
    """A proxy with one client in session and one refused (``max_connections`` 1)."""
    thread = start_proxy(echo_backend.address, max_connections=1)
    held = thread.connect()
    held.sendall(b"hold")
    assert recv_exactly(held, 4) == b"hold"
    with thread.connect() as refused:
        assert refused.recv(1) == b""  # closed at once
    wait_until(lambda: thread.call(thread.proxy.stats)["refused_connections"] == 1)
    yield thread
    held.close()


def test_statsd_sends_every_stats_figure(busy, sink):
    reporter = busy.call(
        lambda: StatsdReporter(busy.proxy, "127.0.0.1", sink.port, interval=3600).start()
    )
    try:
        stats = busy.call(lambda: (busy.proxy.stats(), reporter.flush())[0])
        wait_until(lambda: sink.drain()["vaurien.connection.refused"] == 1)
    finally:
        busy.call(reporter.stop)
    sent = {**sink.totals, **sink.gauges}
    expected = {
        f"vaurien.{metric.statsd_name(label)}": value for metric, label, value in samples(stats)
    }
    assert set(sent) == set(expected)
    for name, value in expected.items():
        if name != "vaurien.open_fds":  # other threads of this process open and close files
            assert sent[name] == value, name
    assert sent["vaurien.open_fds"] > 0
    kinds = {line.split(":")[0]: line.split("|")[1] for line in sink.lines}
    for metric, label, _ in samples(stats):
        assert kinds[f"vaurien.{metric.statsd_name(label)}"] == metric.kind[0], metric
    assert sent["vaurien.connection.active"] == sent["vaurien.session.live"] == 1
    assert sent["vaurien.connection.start"] == 1


def test_statsd_sample_rate_is_sent_with_the_counters(echo_backend, start_proxy, sink):
    thread = start_proxy(echo_backend.address)
    reporter = thread.call(
        lambda: StatsdReporter(
            thread.proxy, "127.0.0.1", sink.port, sample_rate=0.5, interval=3600
        ).start()
    )
    try:
        for _ in range(200):  # each flush is sent with probability 0.5
            exchange(thread.connect, b"x")
            thread.call(reporter.flush)
            if sink.drain():
                break
        counted = [line for line in sink.lines if "|c" in line]
        assert counted and all(line.endswith("|c|@0.5") for line in counted)
        # A level cannot be scaled back: gauges are always sent, without a rate.
        assert all(line.endswith("|g") for line in sink.lines if line not in counted)
    finally:
        thread.call(reporter.stop)


def test_vaurien_statsd_flags(echo_backend, sink):
    host, port = echo_backend.host, echo_backend.port
    process = ProxyProcess(
        proxy_host="127.0.0.1",
        proxy_port=free_port(),
        backend_host=host,
        backend_port=port,
        http_host="127.0.0.1",
        http_port=free_port(),  # readiness is then probed there, not with a proxy connection
        options=[
            "--statsd-enabled",
            "--statsd-host",
            "127.0.0.1",
            "--statsd-port",
            str(sink.port),
            "--statsd-prefix",
            "functional",
        ],
    ).start()
    try:
        connect = lambda: socket.create_connection(("127.0.0.1", process.port), timeout=10)  # noqa: E731
        exchange(connect, b"hello")
        wait_until(lambda: process.client.get_stats()["active_connections"] == 0)
    finally:
        assert process.stop() == 0
    # Sent by the periodic flush, or by the last one, on stop.
    totals = wait_until(
        lambda: (
            sink.drain()["functional.connection.start"]
            and sink.gauges.get("functional.connection.active") == 0
            and sink.totals
        ),
        10,
    )
    assert totals["functional.connection.start"] == 1
    assert totals["functional.bytes.to_backend"] == totals["functional.bytes.to_client"] == 5
    assert totals["functional.behavior.dummy"] >= 2
    assert f"statsd counters to 127.0.0.1:{sink.port}" in process.output()


def test_statsd_section_of_the_config_file(tmp_path):
    path = tmp_path / "vaurien.ini"
    path.write_text(
        textwrap.dedent(
            """
            [vaurien]
            backend = localhost:6379
            http = true
            http_port = 8181

            [statsd]
            enabled = true
            host = 127.0.0.1
            port = 9125
            prefix = redis-chaos
            sample_rate = 0.25
            """
        )
    )
    config, _ = parse_config(["--config", str(path), "--statsd-port", "9126"])
    assert (config.http, config.http_host, config.http_port) == (True, "localhost", 8181)
    assert config.statsd_enabled is True
    assert (config.statsd_host, config.statsd_port) == ("127.0.0.1", 9126)  # the flag wins
    assert (config.statsd_prefix, config.statsd_sample_rate) == ("redis-chaos", 0.25)


def test_statsd_defaults_as_in_1x():
    config, _ = parse_config(["--backend", "localhost:1"])
    assert config.statsd_enabled is False
    assert (config.statsd_host, config.statsd_port) == ("localhost", 8125)
    assert (config.statsd_prefix, config.statsd_sample_rate) == ("vaurien", 1.0)


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("[statsd]\nenabled = perhaps\n", "[statsd] enabled: expected true or false"),
        ("[statsd]\nsample_rate = 0\n", "[statsd] sample_rate: expected a number above 0"),
        ("[statsd]\nport = 70000\n", "[statsd] port: expected a whole number of at most 65535"),
        ("[statsd]\nflush = 1\n", "[statsd] unknown key 'flush' (known: enabled, host, port"),
        ("[vaurien]\nstatsd_port = 1\n", "[vaurien] unknown key 'statsd_port'"),
        ("[vaurien]\nhttp_port = -1\n", "[vaurien] http_port: expected a whole number of at"),
    ],
)
def test_bad_metrics_settings_in_the_config_file(tmp_path, text, error):
    path = tmp_path / "vaurien.ini"
    path.write_text(text)
    with pytest.raises(ConfigError, match=re.escape(error)):
        parse_config(["--config", str(path), "--backend", "localhost:1"])


def test_statsd_without_its_library_is_a_clear_error(echo_backend, start_proxy, monkeypatch):
    thread = start_proxy(echo_backend.address)
    monkeypatch.setitem(sys.modules, "statsd", None)
    with pytest.raises(ConfigError, match=r"pip install 'vaurien\[statsd\]'"):
        thread.call(lambda: StatsdReporter(thread.proxy).start())


# -- GET /metrics ---------------------------------------------------------------------------


@pytest.fixture
def controlled(echo_backend, start_proxy):
    proxy = ControlledProxy(start_proxy(echo_backend.address))
    yield proxy
    proxy.stop()


def test_metrics_in_the_prometheus_text_format(controlled):
    exchange(controlled.connect, b"12345")
    wait_until(lambda: controlled.client().get_stats()["active_connections"] == 0)
    stats = controlled.client().get_stats()
    response = requests.get(controlled.url + "/metrics", timeout=10)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=")
    shown = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }
    assert shown[("vaurien_connections_active", ())] == 0
    assert shown[("vaurien_connections_total", ())] == 1
    for direction in ("to_backend", "to_client"):
        label = (("direction", direction),)
        assert shown[("vaurien_bytes_total", label)] == 5
        assert shown[("vaurien_events_total", label)] == stats[f"events_{direction}"]
    assert (
        shown[("vaurien_behavior_applied_total", (("behavior", "dummy"),))]
        == (stats["behaviors"]["dummy"])
    )


def test_prometheus_shows_every_stats_figure(busy):
    controlled = ControlledProxy(busy)
    try:
        text = requests.get(controlled.url + "/metrics", timeout=10).text
        stats = busy.call(busy.proxy.stats)
    finally:
        controlled.stop()
    families = {family.name: family for family in text_string_to_metric_families(text)}
    assert set(families) == {metric.prometheus for metric in METRICS}
    shown = {}
    for family in families.values():
        for sample in family.samples:
            shown[(sample.name, tuple(sample.labels.values()))] = sample.value
    expected = {}
    for metric, label, value in samples(stats):
        assert families[metric.prometheus].type == metric.kind, metric
        name = metric.prometheus + ("_total" if metric.kind == COUNTER else "")
        expected[(name, (label,) if metric.label else ())] = value
    assert set(shown) == set(expected)
    for key, value in expected.items():
        if key[0] != "vaurien_open_fds":  # other threads of this process open and close files
            assert shown[key] == value, key
    assert shown[("vaurien_open_fds", ())] > 0
    assert shown[("vaurien_connections_refused_total", ())] == 1
    assert shown[("vaurien_sessions_live", ())] == shown[("vaurien_connections_active", ())] == 1


def test_metrics_without_prometheus_client_is_a_501_in_json(controlled, monkeypatch):
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    response = requests.get(controlled.url + "/metrics", timeout=10)
    assert response.status_code == 501
    [error] = response.json()["errors"]
    assert error["name"] == "metrics"
    assert "pip install 'vaurien[prometheus]'" in error["description"]


def test_picks_per_rule_and_per_step_are_metrics(echo_backend, start_proxy):
    from vaurien.rules import Rule

    thread = start_proxy(
        echo_backend.address,
        rules=(Rule.parse("local: client=127.0.0.0/8 => 100:dummy"),),
        scenario="3req 100:dummy; 100:dummy",
    )

    def one_session():
        with thread.connect() as client:
            client.sendall(b"ping")
            assert recv_exactly(client, 4) == b"ping"
        wait_until(lambda: thread.call(thread.proxy.stats)["active_connections"] == 0)
        stats = thread.call(thread.proxy.stats)
        return stats, stats["events_to_backend"] + stats["events_to_client"]  # a pick each

    stats, picks = one_session()
    assert (stats["rules"], stats["steps"]) == ({"local": picks}, {})
    thread.call(thread.proxy.chaos.set_rules, [])
    stats, total = one_session()
    assert (stats["rules"], stats["steps"]) == ({"local": picks}, {"1": 3, "2": total - picks - 3})
    names = {metric.statsd_name(label) for metric, label, _ in samples(stats)}
    assert {"rule.local", "scenario.step.1", "scenario.step.2"} <= names
    controlled = ControlledProxy(thread)
    try:
        text = requests.get(controlled.url + "/metrics", timeout=10).text
    finally:
        controlled.stop()
    assert f'vaurien_rule_picks_total{{rule="local"}} {picks}.0' in text
    assert 'vaurien_scenario_step_picks_total{step="1"} 3.0' in text
