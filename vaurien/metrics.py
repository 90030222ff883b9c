"""Metrics: every figure of ``GET /stats``, sent to statsd and shown in the Prometheus text format.

:data:`METRICS` declares each figure once: its key in :meth:`~vaurien.proxy.Proxy.stats`, whether
it is a counter (it only grows) or a gauge (a level now), its statsd name, its Prometheus name
and what it means; both exports and the documentation's table are made from it. The proxy
already counts everything; nothing here runs per chunk. :class:`StatsdReporter` sends what
changed since its last flush every :data:`FLUSH_INTERVAL` seconds from a timer in the proxy's
hub, in as few UDP packets as it fits. :func:`prometheus_text` renders the figures when
``GET /metrics`` asks.

Both libraries are optional extras: ``vaurien[statsd]`` and ``vaurien[prometheus]``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import gevent

from vaurien.errors import ConfigError

log = logging.getLogger(__name__)

#: Seconds between two statsd flushes.
FLUSH_INTERVAL = 1.0

DIRECTIONS = ("to_backend", "to_client")

COUNTER: Literal["counter"] = "counter"
GAUGE: Literal["gauge"] = "gauge"


@dataclass(frozen=True)
class Metric:
    """One figure of ``GET /stats`` and its names in statsd and Prometheus.

    A figure with a ``label`` has one value per label value: ``direction`` takes the values of
    :data:`DIRECTIONS`, each with its own key in the stats (``{direction}`` in ``stat``);
    ``behavior``, ``rule`` and ``step`` read a mapping of names to counts. ``{direction}``,
    ``{behavior}`` ... in ``statsd`` stands for the label's value; in Prometheus it is a label.
    A counter's Prometheus samples end in ``_total``.
    """

    stat: str
    kind: Literal["counter", "gauge"]
    statsd: str
    prometheus: str
    help: str
    label: str | None = None

    def values(self, stats: dict[str, Any]) -> list[tuple[str, int]]:
        """``(label value, value)`` pairs from ``stats`` (the label value is ``""`` without a
        label); a figure the system does not tell (``None``) has none."""
        if self.label == "direction":
            pairs = [(d, stats[self.stat.format(direction=d)]) for d in DIRECTIONS]
        elif self.label is not None:
            pairs = sorted(stats[self.stat].items())
        else:
            pairs = [("", stats[self.stat])]
        return [(label, value) for label, value in pairs if value is not None]

    def statsd_name(self, label_value: str = "") -> str:
        """The statsd name (under the prefix) of one value."""
        return self.statsd.format(**{self.label: label_value}) if self.label else self.statsd


#: Every figure of ``GET /stats``, in the order of the exports.
METRICS: tuple[Metric, ...] = (
    Metric(
        "active_connections",
        GAUGE,
        "connection.active",
        "vaurien_connections_active",
        "Client connections in a session now (connected to the backend).",
    ),
    Metric(
        "live_sessions",
        GAUGE,
        "session.live",
        "vaurien_sessions_live",
        "Clients being served now, those still connecting to the backend included.",
    ),
    Metric(
        "total_connections",
        COUNTER,
        "connection.start",
        "vaurien_connections",
        "Client connections proxied since the start.",
    ),
    Metric(
        "refused_connections",
        COUNTER,
        "connection.refused",
        "vaurien_connections_refused",
        "Clients closed at once because --max-connections clients were being served.",
    ),
    Metric(
        "bytes_{direction}",
        COUNTER,
        "bytes.{direction}",
        "vaurien_bytes",
        "Bytes forwarded, by direction.",
        label="direction",
    ),
    Metric(
        "events_{direction}",
        COUNTER,
        "events.{direction}",
        "vaurien_events",
        "Events (data ready on one side) handled, by direction.",
        label="direction",
    ),
    Metric(
        "behaviors",
        COUNTER,
        "behavior.{behavior}",
        "vaurien_behavior_applied",
        "Events handled by each behavior: the one picked for the event, or dummy when the "
        "pick acts only in the other direction.",
        label="behavior",
    ),
    Metric(
        "rules",
        COUNTER,
        "rule.{rule}",
        "vaurien_rule_picks",
        "Picks each rule supplied the mix of: the requests (or events) it matched.",
        label="rule",
    ),
    Metric(
        "steps",
        COUNTER,
        "scenario.step.{step}",
        "vaurien_scenario_step_picks",
        "Picks each step of the scenario (by number, from 1) supplied the mix of; a new "
        "scenario counts on from what the steps of its number counted.",
        label="step",
    ),
    Metric(
        "open_fds",
        GAUGE,
        "open_fds",
        "vaurien_open_fds",
        "File descriptors the process has open (absent where the system does not tell).",
    ),
)


def samples(stats: dict[str, Any]) -> Iterator[tuple[Metric, str, int]]:
    """Every value of ``stats`` (what :meth:`~vaurien.proxy.Proxy.stats` returns) with its
    metric and label value."""
    for metric in METRICS:
        for label_value, value in metric.values(stats):
            yield metric, label_value, value


class StatsdReporter:
    """Sends a proxy's figures to a statsd server on a periodic timer: counters as increments,
    gauges as their level whenever it changed.

    ``sample_rate`` below 1 sends that share of the counters' increments (tagged ``@rate`` so
    that statsd scales them back); gauges are always sent, since a level cannot be scaled. The
    statsd library draws those samples, never the proxy's random source, so metrics do not
    change what ``--seed`` reproduces.
    """

    def __init__(
        self,
        proxy: Any,
        host: str = "localhost",
        port: int = 8125,
        prefix: str = "vaurien",
        sample_rate: float = 1.0,
        interval: float = FLUSH_INTERVAL,
    ) -> None:
        self.proxy = proxy
        self.host = host
        self.port = port
        self.prefix = prefix
        self.sample_rate = sample_rate
        self.interval = interval
        self._client: Any = None
        self._timer: Any = None
        self._sent: dict[str, int] = {}

    @classmethod
    def from_config(cls, proxy: Any) -> StatsdReporter:
        """A reporter for the ``statsd_*`` settings of the proxy's configuration.

        The proxy named ``default`` reports under the prefix, any other under ``PREFIX.NAME``.
        """
        config = proxy.config
        prefix = config.statsd_prefix
        if proxy.name != "default":
            prefix = f"{prefix}.{proxy.name}" if prefix else proxy.name
        return cls(
            proxy,
            host=config.statsd_host,
            port=config.statsd_port,
            prefix=prefix,
            sample_rate=config.statsd_sample_rate,
        )

    def start(self) -> StatsdReporter:
        """Open the UDP client and start the flush timer."""
        try:
            import statsd
        except ImportError as e:
            raise ConfigError(
                f"statsd metrics need the statsd package ({e}): pip install 'vaurien[statsd]'"
            ) from None
        try:
            self._client = statsd.StatsClient(self.host, self.port, prefix=self.prefix or None)
        except OSError as e:
            raise ConfigError(f"statsd: cannot reach {self.host}:{self.port}: {e}") from None
        # Everything since the proxy started counts, even what came before this reporter.
        self._sent = {}
        self._timer = gevent.get_hub().loop.timer(self.interval, self.interval)
        # In a greenlet of its own: a flush never runs in the hub's callback itself.
        self._timer.start(gevent.spawn, self.flush)
        log.info(
            "statsd counters to %s:%s every %gs, prefix %r",
            self.host,
            self.port,
            self.interval,
            self.prefix,
        )
        return self

    def flush(self) -> None:
        """Send what changed since the last flush: counters as increments, gauges as levels."""
        try:
            now = {}
            with self._client.pipeline() as pipe:
                for metric, label_value, value in samples(self.proxy.stats()):
                    name = metric.statsd_name(label_value)
                    before = self._sent.get(name)
                    now[name] = value
                    if metric.kind == COUNTER:
                        delta = value - (before or 0)
                        if delta:
                            pipe.incr(name, delta, self.sample_rate)
                    elif value != before:
                        pipe.gauge(name, value)
            self._sent = now
        except OSError as e:
            log.warning("statsd: cannot send the counters: %s", e)

    def stop(self) -> None:
        """Stop the timer and send what is left."""
        if self._timer is None:
            return
        self._timer.close()
        self._timer = None
        self.flush()
        self._client.close()

    def __enter__(self) -> StatsdReporter:
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()


def prometheus_text(proxy: Any) -> tuple[bytes, str]:
    """Every figure of the proxy's stats in the Prometheus text format, and its Content-Type.

    Raises :class:`ImportError` when prometheus-client is not installed.
    """
    return _render(lambda: [({}, proxy.stats())])


def prometheus_text_of(proxies: Iterable[Any]) -> tuple[bytes, str]:
    """:func:`prometheus_text` for several proxies: each sample has a ``proxy`` label, the
    proxy's name."""
    return _render(lambda: [({"proxy": proxy.name}, proxy.stats()) for proxy in proxies])


def _render(read: Any) -> tuple[bytes, str]:
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    class Collector:
        def collect(self) -> Any:
            all_stats = read()
            for metric in METRICS:
                extra = list(all_stats[0][0]) if all_stats else []
                labels = extra + ([metric.label] if metric.label else [])
                family = (CounterMetricFamily if metric.kind == COUNTER else GaugeMetricFamily)(
                    metric.prometheus, metric.help, labels=labels
                )
                for fixed, stats in all_stats:
                    for label_value, value in metric.values(stats):
                        values = list(fixed.values()) + ([label_value] if metric.label else [])
                        family.add_metric(values, value)
                yield family

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Collector())
    return generate_latest(registry), CONTENT_TYPE_LATEST
