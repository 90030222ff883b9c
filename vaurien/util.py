"""Run a proxy in a child process, for functional tests.

As in Vaurien 1.x::

    from vaurien import Client
    from vaurien.util import start_proxy, stop_proxy

    pid = start_proxy(backend_port=8888)    # proxy on localhost:8000, control API on :8080
    try:
        with Client().with_behavior("blackout"):
            ...
    finally:
        stop_proxy(pid)

``start_proxy`` returns once the proxy and its control API accept connections (it polls, with a
deadline) and raises :class:`ProxyStartError` with the proxy's own error output when it does not
start. :class:`ProxyProcess` is the same thing as an object and a context manager.

The child is spawned with ``os.posix_spawn`` and reaped with ``os.waitpid``: the operating system
keeps track of it, so ``stop_proxy(pid)`` needs no table of its own, and a pid is never reused
before ``stop_proxy`` has reaped it.
"""

from __future__ import annotations

import os
import shlex
import signal
import site
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import vaurien
from vaurien.network import Address

#: Seconds a proxy gets to accept connections.
START_TIMEOUT = 30.0
#: Seconds between SIGTERM and SIGKILL.
STOP_TIMEOUT = 10.0
POLL_INTERVAL = 0.02
OUTPUT_TAIL = 8000  # characters of the proxy's output quoted in an error

_WILDCARDS = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}


class ProxyStartError(ValueError):
    """The proxy did not start; the message ends with what it wrote to stderr.

    A :class:`ValueError`, as Vaurien 1.x raised.
    """


class ProxyProcess:
    """``python -m vaurien`` in a child process, with its control API unless ``http`` is false.

    The arguments are those of :func:`start_proxy`. :meth:`start` returns once both ports
    accept connections; :meth:`stop` terminates the proxy and reaps it.
    """

    def __init__(
        self,
        proxy_host: str = "localhost",
        proxy_port: int = 8000,
        backend_host: str = "localhost",
        backend_port: int = 8888,
        protocol: str = "tcp",
        http: bool = True,
        http_host: str = "localhost",
        http_port: int = 8080,
        options: Sequence[str] | None = None,
        log_level: str = "info",
        log_output: str = "-",
        *,
        timeout: float = START_TIMEOUT,
        name: str | None = None,
    ) -> None:
        for what, port in (("proxy_port", proxy_port), ("http_port", http_port)):
            if not 0 < int(port) <= 65535:
                raise ValueError(f"{what} must be a port from 1 to 65535, got {port!r}")
        self.host = proxy_host
        self.port = int(proxy_port)
        self.backend = Address(backend_host, int(backend_port))
        self.protocol = protocol
        self.http = http
        self.http_host = http_host
        self.http_port = int(http_port)
        self.options = list(options or ())
        self.log_level = log_level
        self.log_output = log_output
        self.timeout = timeout
        self.name = name
        self.pid: int | None = None
        self.returncode: int | None = None
        self._output: Any = None  # the temporary file the child's stderr goes to
        self._final_output = ""

    @property
    def address(self) -> str:
        """The proxy's ``host:port``."""
        return str(Address(self.host, self.port))

    @property
    def argv(self) -> list[str]:
        """The command line of the child."""
        argv = [
            sys.executable,
            "-m",
            "vaurien",
            "--proxy",
            self.address,
            "--backend",
            str(self.backend),
            "--protocol",
            self.protocol,
            "--log-level",
            self.log_level,
            "--log-output",
            self.log_output,
        ]
        if self.name is not None:
            argv += ["--name", self.name]
        if self.http:
            argv += ["--http", "--http-host", self.http_host, "--http-port", str(self.http_port)]
        return argv + self.options

    @property
    def client(self) -> Any:
        """A :class:`vaurien.Client` for this proxy's control API (driving it by its name,
        when it has one)."""
        from vaurien.client import Client

        return Client(_connect_host(self.http_host), self.http_port, proxy=self.name)

    def scenario(self, scenario: str, /, **options: Any) -> Any:
        """``with proxy.scenario("5s 100:dummy; 5s 100:error"): ...``: the scenario runs for
        the block (:meth:`vaurien.Client.scenario`)."""
        return self.client.scenario(scenario, **options)

    def rules(self, rules: Sequence[Any]) -> Any:
        """``with proxy.rules(["path=/pay/* => 100:error"]): ...``: the rules are in force for
        the block (:meth:`vaurien.Client.with_rules`)."""
        return self.client.with_rules(rules)

    def _endpoints(self) -> list[tuple[str, int]]:
        endpoints = [(_connect_host(self.host), self.port)]
        if self.http:
            endpoints.append((_connect_host(self.http_host), self.http_port))
        return endpoints

    def _ready_probe(self) -> tuple[str, int]:
        # A connection to the proxy's port would become a session (and a backend connection).
        # ``vaurien`` starts its control API only once the proxy listens, so when there is one,
        # its accepting connections means both do.
        return self._endpoints()[-1]

    def start(self) -> ProxyProcess:
        """Start the proxy and wait until it accepts connections (at most ``timeout`` s)."""
        if self.pid is not None:
            raise RuntimeError(f"the proxy is already started (pid {self.pid})")
        for host, port in self._endpoints():
            if _accepts(host, port):
                raise ProxyStartError(
                    f"cannot start a proxy on {Address(host, port)}: another server listens there"
                )
        self._output = tempfile.TemporaryFile()
        self.pid = _spawn(self.argv, self._output.fileno())
        deadline = time.monotonic() + self.timeout
        pause = threading.Event()
        while True:
            if self.poll() is not None:
                problem = f"exited with status {self.returncode} before accepting connections"
                break
            if _accepts(*self._ready_probe()):
                return self
            if time.monotonic() > deadline:
                where = " and ".join(str(Address(*endpoint)) for endpoint in self._endpoints())
                problem = f"did not accept connections on {where} within {self.timeout:g}s"
                break
            pause.wait(POLL_INTERVAL)
        self.stop()
        raise ProxyStartError(
            f"the proxy {problem}\ncommand: {shlex.join(self.argv)}\n{self._tail()}"
        )

    def poll(self) -> int | None:
        """The proxy's exit status if it has exited (it is then reaped), else None."""
        if self.returncode is None and self.pid is not None:
            self.returncode = _reap(self.pid)
        return self.returncode

    def output(self) -> str:
        """What the proxy wrote to its stderr so far (its log, with ``log_output`` ``-``)."""
        if self._output is None:
            return self._final_output
        self._output.seek(0)
        return self._output.read().decode(errors="replace")

    def _tail(self) -> str:
        text = self.output()
        if not text.strip():
            return "(the proxy wrote nothing to stderr)"
        return "--- the proxy's stderr ---\n" + text[-OUTPUT_TAIL:].rstrip()

    def stop(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """Terminate the proxy (SIGTERM, then SIGKILL after ``timeout`` s) and reap it.

        Returns its exit status; None if it was never started.
        """
        if self.pid is not None and self.returncode is None:
            self.returncode = _terminate(self.pid, timeout)
        if self._output is not None:
            self._final_output = self.output()
            self._output.close()
            self._output = None
        return self.returncode

    def detach(self) -> int:
        """Let go of the process, which keeps running; return its pid for :func:`stop_proxy`."""
        if self.pid is None:
            raise RuntimeError("the proxy is not started")
        if self._output is not None:
            self._output.close()  # the child keeps its own descriptor of the file
            self._output = None
        return self.pid

    def __enter__(self) -> ProxyProcess:
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()


def start_proxy(
    proxy_host: str = "localhost",
    proxy_port: int = 8000,
    backend_host: str = "localhost",
    backend_port: int = 8888,
    protocol: str = "tcp",
    http: bool = True,
    warmup: float | None = None,
    http_host: str = "localhost",
    http_port: int = 8080,
    options: Sequence[str] | None = None,
    log_level: str = "info",
    log_output: str = "-",
    *,
    timeout: float = START_TIMEOUT,
    name: str | None = None,
) -> int:
    """Start a proxy in a child process; return its pid once it accepts connections.

    The signature is Vaurien 1.x's. ``options`` are more ``vaurien`` command-line arguments
    (``["--behavior", "20:delay", "--behavior-delay-sleep", "1"]``). ``warmup``, the fixed
    wait of 1.x, is accepted and not needed: readiness is polled, for at most ``timeout``
    seconds. ``name`` names the proxy (``--name``): ``Client(port=http_port, proxy=name)``
    drives it. Raises :class:`ProxyStartError` with the proxy's error output when it fails.
    """
    del warmup  # kept in the signature so that 1.x positional calls still line up
    process = ProxyProcess(
        proxy_host,
        proxy_port,
        backend_host,
        backend_port,
        protocol,
        http,
        http_host,
        http_port,
        options,
        log_level,
        log_output,
        timeout=timeout,
        name=name,
    )
    return process.start().detach()


def stop_proxy(pid: int, timeout: float = STOP_TIMEOUT) -> int:
    """Stop a proxy :func:`start_proxy` started: SIGTERM, SIGKILL after ``timeout`` s, reap.

    Returns its exit status. Raises :class:`ValueError` when ``pid`` is not a child of this
    process still to be reaped (never started here, or already stopped).
    """
    return _terminate(pid, timeout)


# -- the machinery ---------------------------------------------------------------------------


def _connect_host(host: str) -> str:
    return _WILDCARDS.get(host, host)


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def _spawn(argv: list[str], stderr_fd: int) -> int:
    env = dict(os.environ)
    # The child imports this very vaurien, also from a checkout that is not installed.
    package_root = str(Path(vaurien.__file__).resolve().parent.parent)
    if package_root not in site.getsitepackages():
        paths = [package_root, *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
        env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    file_actions = [
        (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
        (os.POSIX_SPAWN_DUP2, stderr_fd, 2),
    ]
    return os.posix_spawn(argv[0], argv, env, file_actions=file_actions)


def _reap(pid: int) -> int | None:
    """The exit status of child ``pid`` if it has exited (reaping it), else None."""
    try:
        done, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        raise ValueError(f"process {pid} is not a proxy of this process still running") from None
    return os.waitstatus_to_exitcode(status) if done else None


def _terminate(pid: int, timeout: float) -> int:
    code = _reap(pid)
    if code is not None:
        return code
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while (code := _reap(pid)) is None:
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            _, status = os.waitpid(pid, 0)
            return os.waitstatus_to_exitcode(status)
        pause.wait(POLL_INTERVAL)
    return code
