"""A proxy in a process of its own, for the reliability tests.

Run as ``python proxy_process.py SETTINGS_JSON``: it starts a :class:`~vaurien.proxy.Proxy` with
those settings, logs to stderr, and prints one JSON line with the proxy's address and the address
of a small control socket. Each line sent to the control socket is a command, answered with one
JSON line: ``stats`` (``Proxy.stats()``), ``objects`` (how many Session and Endpoint objects are
still alive after a garbage collection). SIGTERM stops the proxy.

Its open descriptors, memory and CPU time are read from ``/proc`` by the tests, so nothing of the
test harness (clients, backends, threads) shares the process being measured.
"""

from __future__ import annotations

import gc
import json
import logging
import signal
import sys

import gevent
from gevent.server import StreamServer

from vaurien.endpoint import Endpoint
from vaurien.proxy import Proxy
from vaurien.proxy_config import ProxyConfig
from vaurien.session import Session


def _objects() -> dict[str, int]:
    gc.collect()
    counts = {"sessions": 0, "endpoints": 0}
    for obj in gc.get_objects():
        if isinstance(obj, Session):
            counts["sessions"] += 1
        elif isinstance(obj, Endpoint):
            counts["endpoints"] += 1
    return counts


def main() -> None:
    settings = json.loads(sys.argv[1])
    plugin_options = {
        tuple(key.split(":", 1)): values
        for key, values in settings.pop("plugin_options", {}).items()
    }
    logging.basicConfig(
        stream=sys.stderr,
        level=settings.pop("log_level", "info").upper(),
        format="%(asctime)s [%(levelname)s] %(name)s: %(message)s",
    )
    proxy = Proxy(ProxyConfig(plugin_options=plugin_options, **settings))
    commands = {"stats": proxy.stats, "objects": _objects}

    def control(sock, _address):
        reader = sock.makefile("rb")
        for line in reader:
            command = commands.get(line.strip().decode())
            answer = command() if command else {"error": f"unknown command {line!r}"}
            sock.sendall(json.dumps(answer).encode() + b"\n")

    control_server = StreamServer(("127.0.0.1", 0), control)
    proxy.start()
    control_server.start()

    def stop():
        control_server.stop(timeout=0)
        proxy.stop()

    gevent.signal_handler(signal.SIGTERM, stop)
    print(
        json.dumps({"proxy": proxy.address, "control": control_server.address[:2]}),
        flush=True,
    )
    proxy.serve_forever()


if __name__ == "__main__":
    main()
