"""Proxies in child processes, measured from ``/proc``, for the reliability tests.

:class:`ProxyProcess` runs ``proxy_process.py`` (a Proxy plus a control socket answering
``stats``); :class:`VaurienProcess` runs the real command line, ``python -m vaurien``. Both log to a
file the tests read, and expose the child's open descriptors, resident memory and CPU time.

The load generators of these tests run on gevent in the test's main thread; waiting uses
:func:`support.wait_until`, which lets that hub run (a blocking wait would freeze the backends).
"""

from __future__ import annotations

import json
import os
import re
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gevent

from support import wait_until

REPO = Path(__file__).resolve().parents[2]
PROXY_SCRIPT = Path(__file__).with_name("proxy_process.py")
START_DEADLINE = 30.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def child_env() -> dict[str, str]:
    """The environment of a child Python that imports this checkout's ``vaurien``."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _limit_files(count: int) -> Callable[[], None]:
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (count, count))

    return apply


class _Child:
    """What both kinds of proxy process share: the process, its log file, /proc readings."""

    process: subprocess.Popen

    def _spawn(self, argv: list[str], nofile: int | None, stdout: Any) -> None:
        self._log = tempfile.NamedTemporaryFile(prefix="vaurien-", suffix=".log", delete=False)
        self.log_path = Path(self._log.name)
        self.process = subprocess.Popen(
            argv,
            stdout=stdout,
            stderr=self._log,
            env=child_env(),
            cwd=REPO,
            preexec_fn=_limit_files(nofile) if nofile else None,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        """Everything the proxy logged so far."""
        return self.log_path.read_text(errors="replace")

    def open_fds(self) -> int:
        """How many descriptors the proxy process has open."""
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def rss(self) -> int:
        """Resident memory of the proxy process, in bytes."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS in /proc status")

    def cpu_seconds(self) -> float:
        """User plus system CPU time the proxy process used so far."""
        stat = Path(f"/proc/{self.pid}/stat").read_text()
        fields = stat[stat.rindex(")") + 2 :].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS

    def terminate(self, timeout: float = 10.0) -> int:
        """SIGTERM, then wait; returns the exit status (kills the process if it hangs)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(f"proxy did not exit within {timeout}s of SIGTERM") from None

    def cleanup(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()
        self._log.close()
        self.log_path.unlink(missing_ok=True)


class ProxyProcess(_Child):
    """A :class:`~vaurien.proxy.Proxy` in a child process, with ``stats()`` over a socket.

    ``settings`` are ProxyConfig settings; ``plugin_options`` is written with ``"kind:name"``
    keys (``{"behavior:delay": {"sleep": 0.01}}``). ``nofile`` lowers RLIMIT_NOFILE in the child.
    """

    def __init__(self, backend: tuple[str, int] | str, nofile: int | None = None, **settings: Any):
        if isinstance(backend, tuple):
            backend = f"{backend[0]}:{backend[1]}"
        settings = {"proxy": "127.0.0.1:0", "backend": backend, **settings}
        self._spawn(
            [sys.executable, str(PROXY_SCRIPT), json.dumps(settings)], nofile, subprocess.PIPE
        )
        line = self._first_line()
        info = json.loads(line)
        self.address = tuple(info["proxy"])
        self._control = socket.create_connection(tuple(info["control"]), timeout=30)
        self._control_reader = self._control.makefile("rb")

    def _first_line(self) -> str:
        fd = self.process.stdout.fileno()
        os.set_blocking(fd, False)
        deadline = time.monotonic() + START_DEADLINE
        data = b""
        while b"\n" not in data:
            try:
                chunk = os.read(fd, 4096)
            except BlockingIOError:
                chunk = None
            if chunk == b"" or self.process.poll() is not None:
                raise AssertionError(f"proxy process failed to start:\n{self.log()}")
            if chunk:
                data += chunk
            elif time.monotonic() > deadline:
                raise AssertionError(f"proxy process did not start:\n{self.log()}")
            else:
                gevent.sleep(0.02)
        return data.split(b"\n", 1)[0].decode()

    def _ask(self, command: str) -> dict[str, Any]:
        self._control.sendall(command.encode() + b"\n")
        return json.loads(self._control_reader.readline())

    def stats(self) -> dict[str, Any]:
        """``Proxy.stats()`` of the child."""
        return self._ask("stats")

    def objects(self) -> dict[str, int]:
        """Session and Endpoint objects still alive in the child after a garbage collection."""
        return self._ask("objects")

    def cleanup(self) -> None:
        self._control_reader.close()
        self._control.close()
        super().cleanup()


class VaurienProcess(_Child):
    """The real command line, ``python -m vaurien ARGS``, listening on a port it picks itself."""

    LISTENING = re.compile(r"listening on (\S+):(\d+)")

    def __init__(self, *args: str, nofile: int | None = None) -> None:
        argv = [sys.executable, "-m", "vaurien", "--proxy", "127.0.0.1:0", *args]
        self._spawn(argv, nofile, subprocess.DEVNULL)
        match = wait_until(self._listening, START_DEADLINE)
        self.address = (match[1], int(match[2]))

    def _listening(self) -> Any:
        if self.process.poll() is not None:
            raise AssertionError(f"vaurien exited with {self.process.returncode}:\n{self.log()}")
        return self.LISTENING.search(self.log())


def descendants(pid: int) -> list[int]:
    """Processes in the session led by ``pid`` (children started with start_new_session)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == pid:
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[3]) == pid:  # the session id
            found.append(int(entry))
    return found
