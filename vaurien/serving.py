"""Serving until told to stop: the started proxies, the services beside them, the signals.

The command line (:mod:`vaurien.cli`) and the demo (:mod:`vaurien.demo`) both serve through
:func:`serve_until_signal`.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import Any

import gevent
import gevent.event

from vaurien.server import Server


def serve_until_signal(server: Server, announce: Callable[[], None] | None = None) -> None:
    """Start ``server``'s proxies and its services, call ``announce``, serve until SIGINT or
    SIGTERM, stop.

    The signal handlers are in place before the proxies listen, so a signal that arrives as
    soon as a port accepts connections still stops them cleanly.
    """
    stop = gevent.event.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        gevent.signal_handler(signum, stop.set)
    server.start()
    try:
        services = start_services(server)
    except BaseException:
        server.stop()
        raise
    if announce is not None:
        announce()
    stop.wait()
    server.stop()
    for service in reversed(services):  # after the proxies: statsd sends its last counts
        service.stop()


def start_services(server: Server) -> list[Any]:
    """Start what the settings ask for beside the started proxies: the control API, statsd
    counters, the Toxiproxy API and the proxies of its startup file.

    Each has ``stop()``; if one cannot start, those already started are stopped.
    """
    config = server.config
    services: list[Any] = []
    try:
        if config.http:
            from vaurien.api import ControlServer

            control = ControlServer(server, config.http_host, config.http_port, config.http_token)
            services.append(control.start())
        if config.toxiproxy_config:
            from vaurien.toxiproxy_proxies import load_startup_file

            load_startup_file(server, config.toxiproxy_config)
        if config.toxiproxy_api:
            from vaurien.toxiproxy_api import ToxiproxyServer

            address = config.toxiproxy_api
            services.append(ToxiproxyServer(server, address.host, address.port).start())
        if config.statsd_enabled:
            from vaurien.metrics import StatsdReporter

            for proxy in server:
                services.append(StatsdReporter.from_config(proxy).start())
    except BaseException:
        for service in reversed(services):
            service.stop()
        raise
    return services
