"""Real backend servers for the tests, as session-scoped pytest fixtures.

Each fixture starts a private server on 127.0.0.1 on a free port, in its own
temporary directory, as a child process; polls it until it answers (deadline
``START_TIMEOUT``); yields a description of it (``host``, ``port``,
``address`` and what a client needs); and stops it when the session ends.

- ``redis_server``, ``redis_tls_server``, ``memcached_server``,
  ``mariadb_server``, ``postgres_server`` run the Debian binaries that
  ``.ci/install-deps`` installs.
- ``echo_server``, ``http_server``, ``https_server``, ``smtp_server`` run
  ``tests/backends.py`` with this Python (no gevent, no threads in the test
  process).
- ``tls_ca`` is a throwaway CA (``tests/tls_support.py``) whose server
  certificate the TLS servers present.

A missing binary or package skips the tests that need it, except when ``CI``
is set in the environment: there it fails, so CI never passes by skipping.
A server that does not start, or dies before the session ends, fails with the
last lines of its own log in the message.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import functools
import importlib.util
import json
import os
import pwd
import re
import shlex
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import pytest

try:
    from . import backends  # tests/ imported as a package
    from .support import free_port, wait_until
except ImportError:
    import backends  # tests/ on sys.path (pytest.ini's pythonpath)
    from support import free_port, wait_until

if TYPE_CHECKING:
    from tls_support import TestCA

HOST = "127.0.0.1"
START_TIMEOUT = 30.0  # seconds for a started server to answer
INSTALL_TIMEOUT = 120.0  # seconds for mariadb-install-db to build a data directory
STOP_TIMEOUT = 10.0  # seconds between SIGTERM and SIGKILL
POLL_INTERVAL = 0.05  # seconds between two readiness probes
PROBE_TIMEOUT = 1.0  # seconds for one readiness probe
PORT_ATTEMPTS = 3  # starts tried when another process takes the free port first
LOG_TAIL = 8000  # characters of a server's log quoted in a failure
BACKENDS_SCRIPT = Path(backends.__file__)
SBIN_DIRS = ("/usr/local/sbin", "/usr/sbin", "/sbin")  # root's tools, off some PATHs
PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


@dataclass(frozen=True)
class Server:
    """A running server: where it listens, and its working directory and log."""

    host: str
    port: int
    workdir: Path
    log_path: Path

    @property
    def address(self) -> str:
        """``host:port``, as Vaurien's --backend takes it."""
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class MariaDBServer(Server):
    """A MariaDB server with a database that ``user`` may use over TCP."""

    user: str
    password: str
    database: str
    unix_socket: Path

    def connect_kwargs(self) -> dict[str, str | int]:
        """Keyword arguments for ``pymysql.connect`` to reach the test database."""
        return {
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "password": self.password,
            "database": self.database,
        }


@dataclass(frozen=True)
class HTTPServer(Server):
    """The HTTP backend of ``tests/backends.py`` (routes on ``HttpHandler``)."""

    def url(self, path: str = "/") -> str:
        """The absolute URL of ``path`` on this server."""
        return f"http://{self.address}{path}"

    @staticmethod
    def pattern(size: int) -> bytes:
        """The body that ``/bytes/{size}`` serves."""
        return backends.pattern(size)


@dataclass(frozen=True)
class ReceivedMail:
    """One message the SMTP backend accepted."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    data: bytes


@dataclass(frozen=True)
class SMTPServer(Server):
    """The SMTP backend, which keeps every accepted message in ``spool``."""

    spool: Path

    def messages(self) -> list[ReceivedMail]:
        """Messages accepted so far (and not cleared), oldest first.

        A message is in the list before the server answers the client's DATA.
        """
        found = []
        for path in sorted(self.spool.glob("*.json")):
            record = json.loads(path.read_text())
            found.append(
                ReceivedMail(
                    mail_from=record["mail_from"],
                    rcpt_tos=tuple(record["rcpt_tos"]),
                    data=base64.b64decode(record["data"]),
                )
            )
        return found

    def clear(self) -> None:
        """Forget the messages accepted so far."""
        for path in self.spool.glob("*.json"):
            path.unlink()


def in_ci() -> bool:
    """Whether the environment says this is a CI run (``CI`` set and not false)."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def unavailable(reason: str) -> NoReturn:
    """Skip the requesting test, or fail it under CI."""
    if in_ci():
        pytest.fail(f"{reason}; CI is set, so this fails instead of skipping", pytrace=False)
    pytest.skip(reason)


def require_binary(name: str) -> str:
    """The path of executable ``name`` (sbin directories included), or skip/fail."""
    search = os.pathsep.join([os.environ.get("PATH", os.defpath), *SBIN_DIRS])
    path = shutil.which(name, path=search)
    if path is None:
        unavailable(f"{name} is not installed (.ci/install-deps installs it)")
    return path


def require_module(name: str) -> None:
    """Skip/fail unless Python package ``name`` can be imported."""
    if importlib.util.find_spec(name) is None:
        unavailable(f"Python package {name} is not installed")


def answers(
    port: int, request: bytes, prefix: bytes, context: ssl.SSLContext | None = None
) -> bool:
    """Whether the server on ``port`` answers ``request`` with ``prefix`` (over TLS with
    ``context``)."""
    received = b""
    try:
        with socket.create_connection((HOST, port), timeout=PROBE_TIMEOUT) as raw:
            sock = raw if context is None else context.wrap_socket(raw, server_hostname=HOST)
            with sock:
                sock.sendall(request)
                while len(received) < len(prefix):
                    chunk = sock.recv(len(prefix) - len(received))
                    if not chunk:
                        break
                    received += chunk
    except OSError:
        return False
    return received == prefix


def mariadb_greets(port: int) -> bool:
    """Whether MariaDB on ``port`` sends a protocol-10 handshake (not an error)."""
    with socket.socket() as sock:
        sock.settimeout(PROBE_TIMEOUT)
        try:
            sock.connect((HOST, port))
            header = sock.recv(5, socket.MSG_WAITALL)
        except OSError:
            return False
    # 3-byte length, sequence 0, then the protocol version (0xff starts an error).
    return len(header) == 5 and header[4] == 10


def _load_prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _load_prctl()


def _die_with_parent() -> None:
    """Run in the child before exec: SIGTERM it if the test process dies first."""
    if _PRCTL is not None:
        _PRCTL(PR_SET_PDEATHSIG, signal.SIGTERM)


class ServerProcess:
    """A server running as a child process, its output kept in a log file in ``workdir``.

    It runs in ``cwd`` (default ``workdir``), as ``user`` if given (a root test process
    starting a server that refuses root), and ``stop`` sends it ``stop_signal`` first.
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str | os.PathLike[str]],
        workdir: Path,
        env: dict[str, str] | None = None,
        user: str | None = None,
        stop_signal: int = signal.SIGTERM,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = [os.fspath(arg) for arg in argv]
        self.log_path = workdir / f"{name}.log"
        self.stop_signal = stop_signal
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                self.argv,
                cwd=cwd or workdir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                # Switched to before preexec_fn runs, so the death signal survives it.
                user=user,
                group=pwd.getpwnam(user).pw_gid if user else None,
                extra_groups=[] if user else None,
                # Only a prctl call through ctypes, resolved before the fork.
                preexec_fn=_die_with_parent,
            )

    def exit_reason(self) -> str | None:
        """Once the server has exited, why it cannot answer any more; None while it runs."""
        code = self.process.poll()
        return None if code is None else f"exited with code {code}"

    def wait_ready(self, ready: Callable[[], bool], what: str) -> str | None:
        """Poll ``ready`` (with :func:`support.wait_until`) until it holds; otherwise return
        why it never did."""
        try:
            wait_until(ready, START_TIMEOUT, POLL_INTERVAL, what=what, give_up=self.exit_reason)
        except AssertionError as e:
            return str(e)
        return None

    def log_tail(self) -> str:
        """The end of the server's log."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError as e:
            return f"(log unreadable: {e})"
        return text[-LOG_TAIL:] or "(empty)"

    def fail(self, reason: str) -> NoReturn:
        """Stop the server and fail the test with ``reason`` and the server's log."""
        self.stop()
        pytest.fail(
            f"{self.name} {reason}\ncommand: {shlex.join(self.argv)}\n"
            f"--- end of {self.log_path} ---\n{self.log_tail()}",
            pytrace=False,
        )

    def stop(self) -> int | None:
        """Terminate (then kill) the server; return its exit code if it had
        already exited on its own, else None."""
        code = self.process.poll()
        if code is None:
            self.process.send_signal(self.stop_signal)
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return code


@contextlib.contextmanager
def supervised(process: ServerProcess) -> Iterator[ServerProcess]:
    """Stop ``process`` on exit; fail if it had died on its own before that."""
    try:
        yield process
    finally:
        code = process.stop()
    if code is not None:
        process.fail(f"exited with code {code} while the tests were using it")


def start_on_free_port(
    name: str,
    command: Callable[[int], Sequence[str | os.PathLike[str]]],
    workdir: Path,
    probe: Callable[[int], bool],
    **process_options: Any,
) -> tuple[ServerProcess, int]:
    """Start ``command(port)`` on a free port and wait until ``probe(port)``.

    Another process may take the port between ``free_port`` and the server's
    bind; then the server says so in its log and a new port is tried.
    ``process_options`` go to :class:`ServerProcess`.
    """
    for attempt in range(1, PORT_ATTEMPTS + 1):
        port = free_port()
        process = ServerProcess(name, command(port), workdir, **process_options)
        reason = process.wait_ready(functools.partial(probe, port), "answering")
        if reason is None:
            return process, port
        process.stop()
        clash = "Address already in use" in process.log_tail()
        if not clash or attempt == PORT_ATTEMPTS:
            process.fail(f"on port {port} {reason}")
    raise AssertionError("unreachable")


def start_backend(
    kind: str,
    workdir: Path,
    probe: Callable[[int], bool],
    *options: str | os.PathLike[str],
) -> tuple[ServerProcess, int]:
    """Start ``tests/backends.py KIND`` on a port it picks, and wait until it answers."""
    port_file = workdir / "port"
    process = ServerProcess(
        f"{kind}-backend",
        [sys.executable, BACKENDS_SCRIPT, kind, "--port-file", port_file, *options],
        workdir,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    reason = process.wait_ready(port_file.exists, "listening")
    if reason is not None:
        process.fail(reason)
    port = int(port_file.read_text())
    reason = process.wait_ready(functools.partial(probe, port), "answering")
    if reason is not None:
        process.fail(f"on port {port} {reason}")
    return process, port


def run_setup(
    argv: Sequence[str | os.PathLike[str]],
    cwd: Path,
    user: str | None = None,
    stdin: bytes = b"",
) -> str:
    """Run one step of a server's setup (as ``user``, ``stdin`` as its input) and return its
    output; fail with that output if it fails or takes over ``INSTALL_TIMEOUT``."""
    command = [os.fspath(arg) for arg in argv]
    try:
        return subprocess.run(
            command,
            cwd=cwd,
            user=user,
            group=pwd.getpwnam(user).pw_gid if user else None,
            extra_groups=[] if user else None,
            input=stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=INSTALL_TIMEOUT,
            check=True,
        ).stdout.decode(errors="replace")
    except subprocess.CalledProcessError as e:
        output = e.stdout.decode(errors="replace")
        pytest.fail(f"{shlex.join(command)} failed:\n{output}", pytrace=False)
    except subprocess.TimeoutExpired as e:
        output = (e.stdout or b"").decode(errors="replace")
        reason = f"took over {INSTALL_TIMEOUT:.0f} s"
        pytest.fail(f"{shlex.join(command)} {reason}:\n{output}", pytrace=False)


def running_as_root() -> bool:
    """Whether this process is root (servers then need to be told to stay root)."""
    return hasattr(os, "geteuid") and os.geteuid() == 0


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A redis-server without persistence."""
    binary = require_binary("redis-server")
    workdir = tmp_path_factory.mktemp("redis")

    config = workdir / "redis.conf"
    config.write_text(f'bind {HOST}\ndir "{workdir}"\nsave ""\nappendonly no\ndaemonize no\n')

    def command(port: int) -> list[str | os.PathLike[str]]:
        return [binary, config, "--port", str(port)]

    probe = functools.partial(answers, request=b"PING\r\n", prefix=b"+PONG")
    process, port = start_on_free_port("redis-server", command, workdir, probe)
    with supervised(process):
        yield Server(HOST, port, workdir, process.log_path)


@pytest.fixture(scope="session")
def tls_ca(tmp_path_factory: pytest.TempPathFactory) -> TestCA:
    """A throwaway CA; its ``server`` certificate (``server.pem``, ``server.key``) names
    127.0.0.1 and localhost."""
    require_module("cryptography")
    from tls_support import TestCA

    ca = TestCA(tmp_path_factory.mktemp("tls"))
    ca.issue("server")
    return ca


@pytest.fixture(scope="session")
def https_server(tmp_path_factory: pytest.TempPathFactory, tls_ca: TestCA) -> Iterator[HTTPServer]:
    """The HTTP backend over TLS, with ``tls_ca``'s server certificate."""
    workdir = tmp_path_factory.mktemp("https")
    request = b"GET / HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n"
    probe = functools.partial(
        answers, request=request, prefix=b"HTTP/1.1 200 ", context=tls_ca.client_context()
    )
    cert, key = tls_ca.directory / "server.pem", tls_ca.directory / "server.key"
    process, port = start_backend("http", workdir, probe, "--tls", cert, key)
    with supervised(process):
        yield HTTPServer(HOST, port, workdir, process.log_path)


@pytest.fixture(scope="session")
def redis_tls_server(tmp_path_factory: pytest.TempPathFactory, tls_ca: TestCA) -> Iterator[Server]:
    """A redis-server speaking TLS only (``--tls-port``, no plain port), with ``tls_ca``'s
    server certificate; clients need no certificate."""
    binary = require_binary("redis-server")
    workdir = tmp_path_factory.mktemp("redis-tls")
    config = workdir / "redis.conf"
    config.write_text(f'bind {HOST}\ndir "{workdir}"\nsave ""\nappendonly no\ndaemonize no\n')
    directory = tls_ca.directory

    def command(port: int) -> list[str | os.PathLike[str]]:
        return [
            binary,
            config,
            "--port",
            "0",
            "--tls-port",
            str(port),
            "--tls-cert-file",
            directory / "server.pem",
            "--tls-key-file",
            directory / "server.key",
            "--tls-ca-cert-file",
            tls_ca.cert_path,
            "--tls-auth-clients",
            "no",
        ]

    probe = functools.partial(
        answers, request=b"PING\r\n", prefix=b"+PONG", context=tls_ca.client_context()
    )
    process, port = start_on_free_port("redis-server-tls", command, workdir, probe)
    with supervised(process):
        yield Server(HOST, port, workdir, process.log_path)


@pytest.fixture(scope="session")
def memcached_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A memcached with 64 MiB of memory, TCP only."""
    binary = require_binary("memcached")
    workdir = tmp_path_factory.mktemp("memcached")
    as_root = ["-u", "root"] if running_as_root() else []

    def command(port: int) -> list[str | os.PathLike[str]]:
        return [binary, "-l", HOST, "-p", str(port), "-U", "0", "-m", "64", *as_root]

    probe = functools.partial(answers, request=b"version\r\n", prefix=b"VERSION ")
    process, port = start_on_free_port("memcached", command, workdir, probe)
    with supervised(process):
        yield Server(HOST, port, workdir, process.log_path)


MARIADB_USER = "vaurien"
MARIADB_PASSWORD = "vaurien-test-password"
MARIADB_DATABASE = "vaurien_test"
# Small and unsafe on crash, for a server that lives one test session.
MARIADB_TUNING = (
    "--innodb-buffer-pool-size=16M",
    "--innodb-log-file-size=8M",
    "--innodb-flush-log-at-trx-commit=0",
    "--innodb-doublewrite=0",
    "--skip-name-resolve",
)


@pytest.fixture(scope="session")
def mariadb_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MariaDBServer]:
    """A MariaDB with database ``vaurien_test`` and a password user over TCP."""
    install_db = require_binary("mariadb-install-db")
    mariadbd = require_binary("mariadbd")
    workdir = tmp_path_factory.mktemp("mariadb")
    datadir = workdir / "data"
    as_root = ["--user=root"] if running_as_root() else []
    install = [
        install_db,
        "--no-defaults",
        f"--datadir={datadir}",
        *as_root,
        "--auth-root-authentication-method=normal",
        "--skip-test-db",
        *MARIADB_TUNING,
    ]
    run_setup(install, workdir)
    # The init file runs before the server listens, so answering means ready.
    init_file = workdir / "init.sql"
    init_file.write_text(
        f"CREATE DATABASE IF NOT EXISTS {MARIADB_DATABASE};\n"
        f"CREATE USER IF NOT EXISTS '{MARIADB_USER}'@'%' "
        f"IDENTIFIED BY '{MARIADB_PASSWORD}';\n"
        f"GRANT ALL PRIVILEGES ON {MARIADB_DATABASE}.* TO '{MARIADB_USER}'@'%';\n"
    )
    unix_socket = workdir / "mariadbd.sock"

    def command(port: int) -> list[str | os.PathLike[str]]:
        return [
            mariadbd,
            "--no-defaults",
            *as_root,
            f"--datadir={datadir}",
            f"--bind-address={HOST}",
            f"--port={port}",
            f"--socket={unix_socket}",
            f"--pid-file={workdir / 'mariadbd.pid'}",
            f"--tmpdir={workdir}",
            f"--init-file={init_file}",
            "--skip-log-bin",
            "--performance-schema=OFF",
            "--max-connections=1000",
            *MARIADB_TUNING,
        ]

    process, port = start_on_free_port("mariadbd", command, workdir, mariadb_greets)
    with supervised(process):
        yield MariaDBServer(
            HOST,
            port,
            workdir,
            process.log_path,
            user=MARIADB_USER,
            password=MARIADB_PASSWORD,
            database=MARIADB_DATABASE,
            unix_socket=unix_socket,
        )


@pytest.fixture(scope="session")
def echo_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A TCP echo server that half-closes when its client half-closes."""
    workdir = tmp_path_factory.mktemp("echo")
    probe = functools.partial(answers, request=b"ping", prefix=b"ping")
    process, port = start_backend("echo", workdir, probe)
    with supervised(process):
        yield Server(HOST, port, workdir, process.log_path)


@pytest.fixture(scope="session")
def http_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HTTPServer]:
    """An HTTP/1.1 keep-alive server with the routes of ``backends.HttpHandler``."""
    workdir = tmp_path_factory.mktemp("http")
    request = b"GET / HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n"
    probe = functools.partial(answers, request=request, prefix=b"HTTP/1.1 200 ")
    process, port = start_backend("http", workdir, probe)
    with supervised(process):
        yield HTTPServer(HOST, port, workdir, process.log_path)


@pytest.fixture(scope="session")
def smtp_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SMTPServer]:
    """An aiosmtpd server that records every message it accepts."""
    require_module("aiosmtpd")
    workdir = tmp_path_factory.mktemp("smtp")
    spool = workdir / "spool"
    probe = functools.partial(answers, request=b"", prefix=b"220 ")
    process, port = start_backend("smtp", workdir, probe, "--spool", spool)
    with supervised(process):
        yield SMTPServer(HOST, port, workdir, process.log_path, spool=spool)


POSTGRES_LIB = Path("/usr/lib/postgresql")  # Debian: one bin/ per major version
POSTGRES_SYSTEM_USER = "postgres"  # the Debian package's user: postgres refuses to run as root
POSTGRES_SUPERUSER = "postgres"
POSTGRES_DATABASE = "vaurien_test"
POSTGRES_SCRAM_USER = "vaurien_scram"
POSTGRES_SCRAM_PASSWORD = "vaurien-test-password"
# Small and unsafe on crash, for a server that lives one test session.
POSTGRES_SETTINGS = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "shared_buffers": "32MB",
    "max_connections": "200",
    "password_encryption": "scram-sha-256",
}


@dataclass(frozen=True)
class PostgresServer(Server):
    """A PostgreSQL server: ``user`` logs in over TCP without a password (trust), and
    ``scram_user`` with ``scram_password`` (SCRAM-SHA-256). TLS is on with a self-signed
    certificate, so clients that prefer it (libpq's default ``sslmode``) get it: the
    connection strings here say ``sslmode=disable`` unless asked otherwise."""

    user: str
    database: str
    scram_user: str
    scram_password: str
    socket_dir: Path
    bin_dir: Path

    def conninfo(
        self,
        host: str | None = None,
        port: int | None = None,
        scram: bool = False,
        sslmode: str = "disable",
        **params: str | int,
    ) -> str:
        """A libpq connection string for this server, or for a proxy in front of it at
        ``host``/``port``; ``scram`` logs in as the SCRAM user."""
        fields = {
            "host": host or self.host,
            "port": port or self.port,
            "dbname": self.database,
            "user": self.scram_user if scram else self.user,
            **({"password": self.scram_password} if scram else {}),
            "sslmode": sslmode,
            "connect_timeout": 10,
            **params,
        }
        return " ".join(f"{key}={value}" for key, value in fields.items())


def postgres_bin_dir() -> Path:
    """The bin directory of the newest PostgreSQL under /usr/lib/postgresql, or skip/fail."""
    found = []
    for postgres in POSTGRES_LIB.glob("*/bin/postgres"):
        version = postgres.parent.parent.name
        if re.fullmatch(r"\d+(\.\d+)?", version) and (postgres.parent / "initdb").exists():
            found.append((tuple(int(part) for part in version.split(".")), postgres.parent))
    if not found:
        unavailable(f"PostgreSQL is not installed in {POSTGRES_LIB} (.ci/install-deps does it)")
    return max(found)[1]


def postgres_ready(port: int) -> bool:
    """Whether PostgreSQL on ``port`` lets its superuser in (not still starting up)."""
    body = b"".join(
        key + b"\x00" + value + b"\x00"
        for key, value in ((b"user", POSTGRES_SUPERUSER.encode()), (b"database", b"postgres"))
    )
    startup = struct.pack("!ii", 8 + len(body) + 1, 196608) + body + b"\x00"
    # AuthenticationOk; a server starting up or shutting down answers with an ErrorResponse.
    return answers(port, startup, b"R\x00\x00\x00\x08\x00\x00\x00\x00")


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    """A PostgreSQL with database ``vaurien_test``, trust for its superuser and SCRAM for
    one more user over TCP on 127.0.0.1, TLS on, unix sockets in its own directory."""
    bin_dir = postgres_bin_dir()
    openssl = require_binary("openssl")
    workdir = tmp_path_factory.mktemp("postgres")
    user = None
    if running_as_root():
        # PostgreSQL refuses to run as root: its files and processes belong to the system
        # user the Debian package creates, in a directory of its own (pytest's are root's).
        try:
            system_user = pwd.getpwnam(POSTGRES_SYSTEM_USER)
        except KeyError:
            unavailable(f"running as root and there is no {POSTGRES_SYSTEM_USER!r} user")
        user = POSTGRES_SYSTEM_USER
    with tempfile.TemporaryDirectory(prefix="vaurien-postgres-") as home:
        home = Path(home)
        datadir, socket_dir = home / "data", home / "sockets"
        socket_dir.mkdir()
        certificate, key = home / "server.crt", home / "server.key"
        run_setup(
            [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-days", "2", "-subj", f"/CN={HOST}", "-keyout", key, "-out", certificate],
            home,
        )  # fmt: skip
        if user is not None:
            for path in (home, socket_dir, certificate, key):
                os.chown(path, system_user.pw_uid, system_user.pw_gid)
        run_setup(
            [bin_dir / "initdb", "-D", datadir, "-U", POSTGRES_SUPERUSER, "--auth=trust",
             "--encoding=UTF8", "--locale=C", "--no-sync", "--no-instructions"],
            home,
            user,
        )  # fmt: skip
        # The first matching line wins: SCRAM for one user, trust for the others.
        (datadir / "pg_hba.conf").write_text(
            "local all all trust\n"
            f"host all {POSTGRES_SCRAM_USER} {HOST}/32 scram-sha-256\n"
            f"host all all {HOST}/32 trust\n"
        )
        settings = {
            **POSTGRES_SETTINGS,
            "listen_addresses": HOST,
            "unix_socket_directories": str(socket_dir),
            "ssl": "on",
            "ssl_cert_file": str(certificate),
            "ssl_key_file": str(key),
        }
        options = [f"--{name.replace('_', '-')}={value}" for name, value in settings.items()]
        # Single-user mode runs one statement per line, before the server listens.
        output = run_setup(
            [bin_dir / "postgres", "--single", "-D", datadir, *options, "postgres"],
            home,
            user,
            stdin=(
                f"CREATE DATABASE {POSTGRES_DATABASE}\n"
                f"CREATE ROLE {POSTGRES_SCRAM_USER} LOGIN PASSWORD '{POSTGRES_SCRAM_PASSWORD}'\n"
                f"GRANT ALL ON DATABASE {POSTGRES_DATABASE} TO {POSTGRES_SCRAM_USER}\n"
                f"ALTER DATABASE {POSTGRES_DATABASE} OWNER TO {POSTGRES_SCRAM_USER}\n"
            ).encode(),
        )
        if re.search(r"\b(ERROR|FATAL|PANIC):", output):
            reason = "setting up PostgreSQL in single-user mode failed"
            pytest.fail(f"{reason}:\n{output}", pytrace=False)

        def command(port: int) -> list[str | os.PathLike[str]]:
            return [bin_dir / "postgres", "-D", datadir, f"--port={port}", *options]

        process, port = start_on_free_port(
            "postgres",
            command,
            workdir,
            postgres_ready,
            user=user,
            cwd=home,
            stop_signal=signal.SIGINT,  # a fast shutdown: the smart one waits for clients
        )
        with supervised(process):
            yield PostgresServer(
                HOST,
                port,
                workdir,
                process.log_path,
                user=POSTGRES_SUPERUSER,
                database=POSTGRES_DATABASE,
                scram_user=POSTGRES_SCRAM_USER,
                scram_password=POSTGRES_SCRAM_PASSWORD,
                socket_dir=socket_dir,
                bin_dir=bin_dir,
            )
