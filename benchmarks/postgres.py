"""A private PostgreSQL for the benchmarks, and pgbench to load it.

PostgreSQL runs from Debian's server programs (``/usr/lib/postgresql/<major>/bin``, the newest
major), initialized in the run's work directory with trust authentication, listening on
127.0.0.1 on a free port and on unix sockets in its own directory. It refuses to run as root:
when the harness is root, its files and processes belong to the ``postgres`` user the Debian
package creates.
"""

from __future__ import annotations

import os
import pwd
import re
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.procs import Processes, Unavailable, free_port

POSTGRES_LIB = Path("/usr/lib/postgresql")  # Debian: one bin/ per major version
PROGRAMS = ("initdb", "postgres", "pg_isready", "pgbench")
SYSTEM_USER = "postgres"  # the Debian package's user
SUPERUSER = "postgres"
DATABASE = "postgres"
HOST = "127.0.0.1"
# A server that lives for one group: nothing is written to disk for safety.
SETTINGS = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}
# libpq's default (prefer) would first ask the server for TLS, which it does not offer.
CLIENT_ENV = {"PGSSLMODE": "disable", "PGCONNECT_TIMEOUT": "10"}
CLIENTS = 8  # pgbench connections (-c)
THREADS = 2  # pgbench threads (-j), one per CPU of the development machine
SCALE = 1  # pgbench -i scale: 100,000 accounts, which fit in shared buffers


@dataclass(frozen=True)
class Postgres:
    """A running private PostgreSQL: its programs and its port."""

    bin_dir: Path
    port: int

    def pgbench(self, port: int, *args: str) -> list[str]:
        """Command line of ``pgbench args`` as the superuser against ``port`` (this server's,
        or a proxy's in front of it)."""
        return [
            str(self.bin_dir / "pgbench"),
            *("-h", HOST, "-p", str(port), "-U", SUPERUSER),
            *args,
            DATABASE,
        ]

    def initialize(self, procs: Processes) -> None:
        """Create and fill pgbench's tables (``pgbench -i``), directly."""
        argv = self.pgbench(self.port, "-i", "-q", "-s", str(SCALE))
        procs.run(argv, timeout=120, env={**os.environ, **CLIENT_ENV})

    def select_rate(self, procs: Processes, port: int, seconds: int) -> float:
        """Transactions per second of ``pgbench -S`` (one primary-key SELECT each, simple
        query protocol) against ``port`` for ``seconds``."""
        argv = self.pgbench(
            port, "-S", "-n", "-c", str(CLIENTS), "-j", str(THREADS), "-T", str(seconds)
        )
        output = procs.run(
            argv, timeout=seconds + 30, env={**os.environ, **CLIENT_ENV}, with_stderr=True
        )
        return parse_pgbench(output)


def bin_dir() -> Path:
    """The bin directory of the newest PostgreSQL with all of :data:`PROGRAMS`."""
    found = []
    for directory in POSTGRES_LIB.glob("*/bin"):
        version = directory.parent.name
        if re.fullmatch(r"\d+(\.\d+)?", version) and all(
            (directory / program).exists() for program in PROGRAMS
        ):
            found.append((tuple(int(part) for part in version.split(".")), directory))
    if not found:
        raise Unavailable(
            f"PostgreSQL is not installed in {POSTGRES_LIB} (Debian package postgresql)"
        )
    return max(found)[1]


def start(procs: Processes, workdir: Path) -> Postgres:
    """Initialize a database cluster in ``workdir/postgres``, start its server and wait until
    it accepts connections; :class:`Unavailable` if any step fails.

    As root, the ``postgres`` user must be able to reach ``workdir``: a temporary directory
    of the system's, as the harness makes, is opened to it (mode 0711).
    """
    programs = bin_dir()
    user = None
    home = workdir / "postgres"
    data, sockets = home / "data", home / "sockets"
    sockets.mkdir(parents=True)
    if os.geteuid() == 0:
        try:
            owner = pwd.getpwnam(SYSTEM_USER)
        except KeyError as e:
            raise Unavailable(f"running as root and there is no {SYSTEM_USER!r} user") from e
        user = SYSTEM_USER
        os.chmod(workdir, 0o711)  # a temporary directory is root's only: let it pass through
        for path in (home, sockets):
            os.chown(path, owner.pw_uid, owner.pw_gid)
    output = procs.run(
        [str(programs / "initdb"), "-D", str(data), "-U", SUPERUSER, "--auth=trust"]
        + ["--encoding=UTF8", "--locale=C", "--no-sync", "--no-instructions"],
        timeout=60,
        cwd=home,
        user=user,
        with_stderr=True,
    )
    if not (data / "PG_VERSION").exists():
        error = re.search(r"^initdb: error: (.*)", output, re.MULTILINE)
        raise Unavailable(f"initdb failed: {error.group(1) if error else output.strip()[-200:]}")
    port = free_port()
    settings = {**SETTINGS, "listen_addresses": HOST, "unix_socket_directories": str(sockets)}
    argv = [str(programs / "postgres"), "-D", str(data), "-p", str(port)]
    for name, value in settings.items():
        argv += ["-c", f"{name}={value}"]
    server = procs.start(argv, name="postgres", cwd=home, user=user)
    ready = [str(programs / "pg_isready"), "-h", HOST, "-p", str(port), "-U", SUPERUSER]
    deadline = time.monotonic() + procs.budget.bound(30)
    # A server that listens may still be starting up and turn clients away: ask it.
    while "accepting connections" not in procs.run(ready, timeout=10):
        if server.popen.poll() is not None:
            code = server.popen.returncode
            raise Unavailable(f"postgres exited ({code}): {server.log_tail()}")
        if time.monotonic() > deadline:
            raise Unavailable(f"postgres does not accept connections on {port} after 30 s")
        time.sleep(0.05)
    return Postgres(programs, port)


def parse_pgbench(output: str) -> float:
    """Transactions per second from pgbench's report (its errors included); :class:`Unavailable`
    when the run was aborted, had failed transactions or printed no rate."""
    error = re.search(r"^pgbench: error: (.*)", output, re.MULTILINE)
    reason = f": {error.group(1)}" if error else ""
    if "Run was aborted" in output:
        raise Unavailable(f"pgbench: the run was aborted{reason}")
    failed = re.search(r"^number of failed transactions: (\d+)", output, re.MULTILINE)
    if failed and int(failed.group(1)):
        raise Unavailable(f"pgbench: {failed.group(1)} failed transactions{reason}")
    rate = re.search(r"^tps = ([\d.]+)", output, re.MULTILINE)
    if rate is None:
        raise Unavailable(f"pgbench printed no rate{reason or ': ' + output.strip()[-200:]}")
    return float(rate.group(1))
