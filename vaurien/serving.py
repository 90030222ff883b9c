"""Serving until told to stop: a started proxy, the services beside it, the signals.

The command line (:mod:`vaurien.cli`) and the demo (:mod:`vaurien.demo`) both serve through
:func:`serve_until_signal`.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import Any

import gevent
import gevent.event

from vaurien.proxy import Proxy


def serve_until_signal(proxy: Proxy, announce: Callable[[], None] | None = None) -> None:
    """Start ``proxy`` and its services, call ``announce``, serve until SIGINT or SIGTERM, stop.

    The signal handlers are in place before the proxy listens, so a signal that arrives as
    soon as the port accepts connections still stops it cleanly.
    """
    stop = gevent.event.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        gevent.signal_handler(signum, stop.set)
    proxy.start()
    try:
        services = start_services(proxy)
    except BaseException:
        proxy.stop()
        raise
    if announce is not None:
        announce()
    stop.wait()
    proxy.stop()
    for service in reversed(services):  # after the proxy: statsd sends its last counts
        service.stop()


def start_services(proxy: Proxy) -> list[Any]:
    """Start what the settings ask for beside a started proxy: control API, statsd counters.

    Each has ``stop()``; if one cannot start, those already started are stopped.
    """
    config = proxy.config
    services: list[Any] = []
    try:
        if config.http:
            from vaurien.api import ControlServer

            services.append(ControlServer(proxy, config.http_host, config.http_port).start())
        if config.statsd_enabled:
            from vaurien.metrics import StatsdReporter

            services.append(StatsdReporter.from_config(proxy).start())
    except BaseException:
        for service in reversed(services):
            service.stop()
        raise
    return services
