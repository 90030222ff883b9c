"""``vaurien --demo``: see the chaos with nothing else running."""

from __future__ import annotations

import dataclasses
import itertools
import logging
import sys
from typing import Any

from gevent.pywsgi import WSGIServer

from vaurien.network import Address
from vaurien.proxy_config import ProxyConfig
from vaurien.server import Server
from vaurien.serving import serve_until_signal

log = logging.getLogger(__name__)

#: The mix the demo shows when ``--behavior`` is not given.
DEMO_BEHAVIOR = "20:delay,10:error,10:blackout"


def demo_backend() -> WSGIServer:
    """A small HTTP server on a free loopback port that numbers the requests it answers."""
    counter = itertools.count(1)

    def application(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        body = f"Hello from the Vaurien demo backend (request #{next(counter)})\n".encode()
        start_response(
            "200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))]
        )
        return [body]

    server = WSGIServer(("127.0.0.1", 0), application, log=None, error_log=None)
    server.start()
    return server


def run_demo(config: ProxyConfig, explicit_behavior: bool) -> None:
    """Run the proxy in front of :func:`demo_backend` until interrupted."""
    backend = demo_backend()
    config = dataclasses.replace(
        config,
        backend=Address("127.0.0.1", backend.server_port),
        protocol="http",  # the backend speaks HTTP: errors are real 5xx answers
        behavior=config.behavior if explicit_behavior else DEMO_BEHAVIOR,
    )
    server = Server.of(config)
    proxy = server.proxies[config.name]

    def announce() -> None:
        host, port = proxy.address
        url = f"http://{Address(host, port)}/"
        print(
            f"\nThe demo backend answers on {config.backend}; Vaurien stands in front of it on "
            f"{url}\nwith the behavior mix {proxy.behavior}. Try it a few times:\n\n"
            f"    curl -i {url}\n\nSome answers are slow, some fail. Ctrl-C stops the demo.\n",
            file=sys.stderr,
            flush=True,
        )

    try:
        serve_until_signal(server, announce)
    finally:
        backend.stop()
