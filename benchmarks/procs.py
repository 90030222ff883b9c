"""Starting, watching and stopping the processes of a benchmark run.

Every process is started through a :class:`Processes` object, which stops all of them when
the run ends, however it ends; each child also asks the kernel to kill it if the harness dies
(``PR_SET_PDEATHSIG``), so nothing outlives a run.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import pwd
import select
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, BinaryIO

if TYPE_CHECKING:
    from typing import Self

PR_SET_PDEATHSIG = 1
LISTEN = "0A"  # TCP state code in /proc/net/tcp
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class Unavailable(Exception):
    """A process could not be started or did not come up: its measurements are skipped."""


class TimeUp(Exception):
    """The run's time limit was reached."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def listening_ports() -> set[int]:
    """Ports with a listening TCP socket on this machine, from /proc/net/tcp and tcp6."""
    ports = set()
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(name) as table:
            next(table)
            for line in table:
                fields = line.split()
                if fields[3] == LISTEN:
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time used so far by process ``pid`` (all its threads)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime


def pss_kib(pid: int) -> int:
    """Proportional set size of process ``pid`` in KiB, from /proc/PID/smaps_rollup."""
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    raise Unavailable(f"no Pss line in /proc/{pid}/smaps_rollup")


def _child_setup(cpus: frozenset[int] | None) -> None:
    """Runs in the child between fork and exec: die with the parent, optionally pin."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if cpus is not None:
        os.sched_setaffinity(0, cpus)


def _credentials(user: str | None) -> dict:
    """The ``subprocess`` arguments running a child as ``user``, with that user's group only.

    The child switches user before ``_child_setup`` runs: a change of user clears
    ``PR_SET_PDEATHSIG``, so it must be set after.
    """
    if user is None:
        return {}
    return {"user": user, "group": pwd.getpwnam(user).pw_gid, "extra_groups": []}


@dataclass
class Child:
    """A background process of the run, its name and its log file."""

    name: str
    popen: subprocess.Popen[bytes]
    log: BinaryIO
    log_path: Path

    @property
    def pid(self) -> int:
        """The process id."""
        return self.popen.pid

    def log_tail(self) -> str:
        """The last line the process wrote to its log."""
        self.log.flush()
        return _last_line(self.log_path.read_bytes())


class Budget:
    """The run's time limit: how many seconds are left, and a bound for each step."""

    def __init__(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds

    def remaining(self) -> float:
        """Seconds left before the limit."""
        return self.deadline - time.monotonic()

    def bound(self, seconds: float) -> float:
        """``seconds``, cut to what is left; :class:`TimeUp` if nothing is left."""
        left = self.remaining()
        if left <= 1:
            raise TimeUp
        return min(seconds, left)


class Processes:
    """The processes of one run; a context manager that stops every one of them on exit."""

    def __init__(self, workdir: Path, budget: Budget) -> None:
        self.workdir = workdir
        self.budget = budget
        self._running: list[Child] = []

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop_all()

    def start(
        self,
        argv: Sequence[str],
        *,
        name: str,
        cpus: frozenset[int] | None = None,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
        pipes: bool = False,
        user: str | None = None,
    ) -> Child:
        """Start ``argv`` in the background; its output goes to ``<workdir>/<name>.log``.

        With ``pipes``, standard input and output are pipes instead (see :meth:`read_line`);
        with ``user``, the process runs as that user (the harness must be root).
        """
        log_path = self.workdir / f"{name}.log"
        log = open(log_path, "ab")
        try:
            popen = subprocess.Popen(
                list(argv),
                stdin=subprocess.PIPE if pipes else subprocess.DEVNULL,
                stdout=subprocess.PIPE if pipes else log,
                stderr=log,
                cwd=cwd,
                env=env,
                preexec_fn=lambda: _child_setup(cpus),
                **_credentials(user),
            )
        except OSError as e:
            log.close()
            raise Unavailable(f"cannot run {argv[0]}: {e}") from e
        child = Child(name, popen, log, log_path)
        self._running.append(child)
        return child

    def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float,
        cpus: frozenset[int] | None = None,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
        user: str | None = None,
        with_stderr: bool = False,
    ) -> str:
        """Run ``argv`` to completion within ``timeout`` (and the budget); return its stdout.

        With ``user``, it runs as that user (the harness must be root); with ``with_stderr``,
        its standard error is in the output too, for tools whose report and errors are apart.
        """
        try:
            done = subprocess.run(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT if with_stderr else subprocess.PIPE,
                timeout=self.budget.bound(timeout),
                cwd=cwd,
                env=env,
                preexec_fn=lambda: _child_setup(cpus),
                check=False,
                **_credentials(user),
            )
        except subprocess.TimeoutExpired as e:
            raise Unavailable(f"{Path(argv[0]).name} did not finish in {e.timeout:.0f} s") from e
        except OSError as e:
            raise Unavailable(f"cannot run {argv[0]}: {e}") from e
        if done.returncode != 0 and not done.stdout.strip():
            raise Unavailable(f"{Path(argv[0]).name} failed: {_last_line(done.stderr)}")
        return done.stdout.decode(errors="replace")

    def read_line(self, child: Child, timeout: float) -> str:
        """The next line ``child`` writes on its standard output, waiting at most ``timeout``."""
        stdout = child.popen.stdout
        if stdout is None:
            raise ValueError(f"{child.name} was started without pipes")
        ready, _, _ = select.select([stdout], [], [], self.budget.bound(timeout))
        if not ready:
            raise Unavailable(f"{child.name} said nothing in {timeout:.0f} s")
        line = stdout.readline().decode(errors="replace")
        if not line:
            raise Unavailable(f"{child.name} exited: {child.log_tail()}")
        return line

    def wait_listening(self, child: Child, port: int, timeout: float) -> None:
        """Poll until something listens on ``port``; :class:`Unavailable` if ``child`` exits."""
        deadline = time.monotonic() + self.budget.bound(timeout)
        while port not in listening_ports():
            if child.popen.poll() is not None:
                code = child.popen.returncode
                raise Unavailable(f"{child.name} exited ({code}): {child.log_tail()}")
            if time.monotonic() > deadline:
                raise Unavailable(f"{child.name} is not listening on {port} after {timeout:.0f} s")
            time.sleep(0.02)

    def stop(self, child: Child) -> None:
        """Terminate ``child`` (kill it if it lingers) and reap it."""
        popen = child.popen
        if popen.poll() is None:
            popen.terminate()
            try:
                popen.wait(3)
            except subprocess.TimeoutExpired:
                popen.kill()
                popen.wait()
        for stream in (popen.stdin, popen.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        child.log.close()
        if child in self._running:
            self._running.remove(child)

    def stop_all(self) -> None:
        """Stop every process this object started and has not stopped yet."""
        for child in reversed(list(self._running)):
            self.stop(child)


def _last_line(output: bytes) -> str:
    lines = [line for line in output.decode(errors="replace").splitlines() if line.strip()]
    return lines[-1].strip() if lines else "(no output)"


def write_line(stream: IO[bytes] | None, text: str) -> None:
    """Send one line to a child's standard input, ignoring a child that already left."""
    if stream is not None:
        with contextlib.suppress(OSError):
            stream.write(text.encode() + b"\n")
            stream.flush()
