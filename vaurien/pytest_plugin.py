"""The pytest plugin of Vaurien: the ``vaurien_proxy`` fixture.

Installed with Vaurien (the ``pytest11`` entry point), nothing to configure::

    def test_survives_a_redis_blackout(vaurien_proxy, redis_url):
        proxy = vaurien_proxy(backend="127.0.0.1:6379", protocol="redis")
        app = make_app(redis_host=proxy.host, redis_port=proxy.port)
        with proxy.client.with_behavior("blackout"):
            assert app.get("/").status_code == 503
        with proxy.rules(["command=get key=session:* => 100:error"]):
            assert app.get("/login").status_code == 503
        with proxy.scenario("2req 100:dummy; 100:error"):
            ...

Each call starts a proxy with its control API, both on free loopback ports, in a child process;
everything started is stopped when the test ends.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest

#: Starts tried when another process takes a free port before the proxy binds it.
PORT_ATTEMPTS = 3
HOST = "127.0.0.1"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def command_line(**options: Any) -> list[str]:
    """``vaurien`` flags for keyword options: ``stay_connected=True`` is ``--stay-connected``.

    ``False`` gives ``--no-...``, ``None`` nothing, any other value ``--name value``
    (``behavior_delay_sleep=1`` is ``--behavior-delay-sleep 1``).
    """
    argv: list[str] = []
    for name, value in options.items():
        flag = "--" + name.replace("_", "-")
        if value is True:
            argv.append(flag)
        elif value is False:
            argv.append("--no-" + flag[2:])
        elif value is not None:
            argv += [flag, str(value)]
    return argv


@pytest.fixture
def vaurien_proxy() -> Iterator[Callable[..., Any]]:
    """Factory: ``vaurien_proxy(backend="host:port", protocol="tcp", behavior="100:dummy",
    name=None, rules=(), **options)`` starts a proxy and returns its handle (a
    :class:`vaurien.util.ProxyProcess`).

    The handle has ``host``, ``port``, ``address`` (``host:port``), ``client`` (a
    :class:`vaurien.Client` of its control API, driving the proxy by its ``name`` when it has
    one), ``scenario(...)`` and ``rules(...)`` (context managers), ``pid`` and ``output()``
    (the proxy's log). ``rules`` are ``--rule`` values, in order; ``options`` become
    command-line flags (see :func:`command_line`: ``scenario="10req 100:dummy; 100:error"`` is
    ``--scenario ...``). A proxy that dies during the test fails it, with its log.
    """
    from vaurien.network import Address
    from vaurien.util import ProxyProcess, ProxyStartError

    started: list[ProxyProcess] = []

    def start(
        backend: str | tuple[str, int],
        protocol: str = "tcp",
        behavior: str = "100:dummy",
        name: str | None = None,
        rules: Sequence[str] = (),
        **options: Any,
    ) -> ProxyProcess:
        target = Address(*backend) if isinstance(backend, tuple) else Address.parse(backend)
        flags = ["--behavior", behavior, *command_line(**options)]
        for rule in rules:
            flags += ["--rule", rule]
        for attempt in range(1, PORT_ATTEMPTS + 1):
            process = ProxyProcess(
                proxy_host=HOST,
                proxy_port=_free_port(),
                backend_host=target.host,
                backend_port=target.port,
                protocol=protocol,
                http_host=HOST,
                http_port=_free_port(),
                options=flags,
                name=name,
            )
            try:
                process.start()
            except ProxyStartError as e:
                if "already in use" in str(e) or "another server listens" in str(e):
                    if attempt < PORT_ATTEMPTS:
                        continue
                raise
            started.append(process)
            return process
        raise AssertionError("unreachable")

    yield start

    died = []
    for process in reversed(started):
        code = process.poll()
        process.stop()
        if code is not None:
            died.append(f"vaurien proxy {process.address} exited with status {code}:\n")
            died[-1] += process.output()[-4000:]
    if died:
        pytest.fail("\n".join(died), pytrace=False)
