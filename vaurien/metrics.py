"""Metrics: the proxy's counters, sent to statsd and shown in the Prometheus text format.

The proxy already counts what both need (sessions, bytes and events each way, behaviors applied);
nothing here runs per chunk. :class:`StatsdReporter` sends the increments since its last flush
every :data:`FLUSH_INTERVAL` seconds from a timer in the proxy's hub, in as few UDP packets as
they fit. :func:`prometheus_text` renders the same counters when ``GET /metrics`` asks.

Both libraries are optional extras: ``vaurien[statsd]`` and ``vaurien[prometheus]``.
"""

from __future__ import annotations

import logging
from typing import Any

import gevent

from vaurien.errors import ConfigError

log = logging.getLogger(__name__)

#: Seconds between two statsd flushes.
FLUSH_INTERVAL = 1.0

DIRECTIONS = ("to_backend", "to_client")


def counters(proxy: Any) -> dict[str, int]:
    """The proxy's cumulative counters under their statsd names.

    ``connection.start`` and ``connection.end``, ``bytes.<direction>``, ``events.<direction>``
    (one event: data ready on one side, handled by one behavior) and ``behavior.<name>``.
    """
    stats = proxy.stats()
    values = {
        "connection.start": stats["total_connections"],
        "connection.end": stats["total_connections"] - stats["active_connections"],
    }
    for direction in DIRECTIONS:
        values[f"bytes.{direction}"] = stats[f"bytes_{direction}"]
        values[f"events.{direction}"] = stats[f"events_{direction}"]
    for name, count in stats["behaviors"].items():
        values[f"behavior.{name}"] = count
    return values


class StatsdReporter:
    """Sends a proxy's counters to a statsd server, as increments, on a periodic timer.

    ``sample_rate`` below 1 sends that share of the flushes (tagged ``@rate`` so that statsd
    scales them back); the statsd library draws those samples, never the proxy's random source,
    so metrics do not change what ``--seed`` reproduces.
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
        """A reporter for the ``statsd_*`` settings of the proxy's configuration."""
        config = proxy.config
        return cls(
            proxy,
            host=config.statsd_host,
            port=config.statsd_port,
            prefix=config.statsd_prefix,
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
        """Send the increments since the last flush (nothing when nothing changed)."""
        try:
            now = counters(self.proxy)
            with self._client.pipeline() as pipe:
                for name, value in now.items():
                    delta = value - self._sent.get(name, 0)
                    if delta:
                        pipe.incr(name, delta, self.sample_rate)
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
    """The proxy's counters in the Prometheus text format, and its Content-Type.

    Raises :class:`ImportError` when prometheus-client is not installed.
    """
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    class Collector:
        def collect(self) -> Any:
            stats = proxy.stats()
            yield GaugeMetricFamily(
                "vaurien_connections_active",
                "Client connections open now.",
                value=stats["active_connections"],
            )
            yield CounterMetricFamily(
                "vaurien_connections",
                "Client connections proxied since the start.",
                value=stats["total_connections"],
            )
            for metric, help_text in (
                ("bytes", "Bytes forwarded, by direction."),
                ("events", "Events (data ready on one side) handled, by direction."),
            ):
                family = CounterMetricFamily(f"vaurien_{metric}", help_text, labels=["direction"])
                for direction in DIRECTIONS:
                    family.add_metric([direction], stats[f"{metric}_{direction}"])
                yield family
            family = CounterMetricFamily(
                "vaurien_behavior_applied",
                "Events handled by each behavior.",
                labels=["behavior"],
            )
            for name, count in sorted(stats["behaviors"].items()):
                family.add_metric([name], count)
            yield family

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Collector())
    return generate_latest(registry), CONTENT_TYPE_LATEST
