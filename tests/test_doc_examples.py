"""Every example of the documentation (docs/examples/) runs, and does what its page says.

Plugins run through a real proxy; config files and command lines are loaded as ``vaurien``
loads them; transcripts (``*.console``: ``$ command`` lines, each followed by what it prints)
are run and their output compared. ``EXAMPLES`` maps each file to the tests that run it, and a
test checks that no file of docs/examples/ is left out.
"""

from __future__ import annotations

import http.client
import importlib.metadata
import io
import json
import os
import re
import shlex
import socket
import subprocess
import sys
import time
import unittest
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from unittest import mock

import pytest

from support import free_port, recv_exactly, wait_until
from vaurien import cli
from vaurien.mix import BehaviorMix
from vaurien.network import Address
from vaurien.protocols import Protocol

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
EXAMPLES_DIR = DOCS / "examples"
if str(EXAMPLES_DIR) not in sys.path:
    sys.path.insert(0, str(EXAMPLES_DIR))

#: Programs of the transcripts that the suite does not run, and why.
NOT_RUN = {
    "pip": "installs from the package index",
    "apt-get": "installs Debian packages",
    "ssh": "needs an SSH server and an account",
}
#: Programs the suite runs (or parses) when a transcript shows them.
RUN = {"vaurien", "vaurienctl", "curl", "python", "export"}


# -- transcripts -------------------------------------------------------------------------------


@dataclass
class Command:
    """One ``$ ...`` line of a transcript (with its continuation lines) and what it prints."""

    path: Path
    line: int
    env: dict[str, str]
    argv: list[str]
    output: str

    @property
    def program(self) -> str:
        return self.argv[0]

    def __str__(self) -> str:
        return f"{self.path.name}:{self.line}: {shlex.join(self.argv)}"


def transcript(name: str) -> list[Command]:
    """The commands of ``docs/examples/NAME``."""
    path = EXAMPLES_DIR / name
    lines = path.read_text(encoding="utf-8").splitlines()
    commands = []
    i = 0
    while i < len(lines):
        if not lines[i].startswith("$ "):
            raise AssertionError(f"{path.name}:{i + 1}: output before any command")
        first = i
        text = lines[i][2:]
        while text.endswith("\\"):
            i += 1
            text = text[:-1] + " " + lines[i].strip()
        i += 1
        output = []
        while i < len(lines) and not lines[i].startswith("$ "):
            output.append(lines[i])
            i += 1
        tokens = shlex.split(text)
        env = {}
        while re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", tokens[0]):
            key, _, value = tokens.pop(0).partition("=")
            env[key] = value
        commands.append(Command(path, first + 1, env, tokens, "\n".join(output)))
    return commands


def run_main(main, argv, capsys) -> tuple[int, str]:
    """Run a ``main(argv)``; return its exit status and what it printed."""
    try:
        code = main(argv)
    except SystemExit as e:  # argparse's usage errors
        code = e.code
    captured = capsys.readouterr()
    return code, (captured.out + captured.err).rstrip("\n")


def load(command: Command, monkeypatch):
    """Load a ``vaurien`` command line as ``vaurien`` would, without serving: its config."""
    assert command.program == "vaurien", command
    assert not command.output, f"{command}: a command that serves prints nothing"
    for key, value in command.env.items():
        monkeypatch.setenv(key, value)
    config, _ = cli.parse_config(command.argv[1:])
    return config


def check_error(command: Command, capsys) -> None:
    """Run a ``vaurien`` command that fails, and compare its one line and exit status."""
    assert command.program == "vaurien" and command.output.startswith("vaurien: error: ")
    code, output = run_main(cli.main, command.argv[1:], capsys)
    assert (code, output) == (2, command.output), command


def mix(config) -> str:
    return ",".join(f"{percent:g}:{'+'.join(names)}" for percent, names in config.behavior.entries)


def read_all(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


# -- plugins through a real proxy ----------------------------------------------------------------


def test_drop_behavior_keeps_the_first_bytes_and_the_connection(echo_backend, start_proxy):
    proxy = start_proxy(
        echo_backend.address,
        behavior="100:drop_behavior.Drop",
        plugin_options={("behavior", "drop"): {"keep": 3}},
    )
    with proxy.connect() as client:
        client.sendall(b"hello world")
        assert recv_exactly(client, 3) == b"hel"
        client.sendall(b"second message")
        assert recv_exactly(client, 3) == b"sec"


def test_drop_behavior_keeping_nothing_sends_nothing(echo_backend, start_proxy):
    proxy = start_proxy(echo_backend.address, behavior="100:drop_behavior:Drop")
    with proxy.connect() as client:
        client.sendall(b"lost")
        client.shutdown(socket.SHUT_WR)
        assert read_all(client) == b""


def lines_proxy(start_proxy, backend, behavior, plugin_options=None, **options):
    plugin_options = dict(plugin_options or {})
    plugin_options[("protocol", "lines")] = options
    return start_proxy(
        backend,
        protocol="line_protocol.Lines",
        behavior=behavior,
        plugin_options=plugin_options,
    )


def test_line_protocol_carries_requests_and_answers(echo_backend, start_proxy):
    proxy = lines_proxy(start_proxy, echo_backend.address, "100:dummy")
    with proxy.connect() as client:
        client.sendall(b"GET a\nGET b\n")
        assert recv_exactly(client, 12) == b"GET a\nGET b\n"


def test_line_protocol_answers_errors_with_its_error_line(echo_backend, start_proxy):
    proxy = lines_proxy(start_proxy, echo_backend.address, "100:error", error_line="ERROR busy")
    with proxy.connect() as client:
        client.sendall(b"GET a\nGET b\n")
        assert recv_exactly(client, 24) == b"ERROR busy\r\nERROR busy\r\n"


def test_line_protocol_delays_each_request(echo_backend, start_proxy):
    proxy = lines_proxy(
        start_proxy,
        echo_backend.address,
        "100:delay",
        plugin_options={("behavior", "delay"): {"sleep": 0.2}},
    )
    with proxy.connect() as client:
        start = time.monotonic()
        client.sendall(b"a\nb\n")  # two requests in one packet: two events, two delays
        assert recv_exactly(client, 4) == b"a\nb\n"
        assert time.monotonic() - start >= 0.4


def test_line_protocol_ends_a_session_with_an_endless_line(echo_backend, start_proxy):
    proxy = lines_proxy(start_proxy, echo_backend.address, "100:dummy", max_line=16)
    with proxy.connect() as client:
        client.sendall(b"x" * 100)
        assert read_all(client) == b""
    with proxy.connect() as client:  # the proxy itself carries on
        client.sendall(b"ok\n")
        assert recv_exactly(client, 3) == b"ok\n"


def test_stutter_handler_delivers_every_byte_late(echo_backend, start_proxy):
    proxy = start_proxy(
        echo_backend.address,
        behavior="100:stutter_handler.Stutter",
        plugin_options={("behavior", "stutter"): {"pause": 0.02}},
    )
    with proxy.connect() as client:
        start = time.monotonic()
        client.sendall(b"hello")
        assert recv_exactly(client, 5) == b"hello"
        assert time.monotonic() - start >= 4 * 0.02  # four pauses on the way to the backend


def test_plugins_ini_registers_and_configures_its_plugins(echo_backend, start_proxy, monkeypatch):
    monkeypatch.chdir(ROOT)
    config, _ = cli.parse_config(["--config", "docs/examples/plugins.ini"])
    assert config.protocol == "lines"
    assert mix(config) == "10:stutter,5:drop,85:dummy"
    assert config.options_for("protocol", "lines") == {"error_line": "ERROR try again later"}
    assert config.options_for("behavior", "stutter") == {"pause": 0.05}
    assert config.options_for("behavior", "drop") == {"keep": 4}
    config = replace(
        config,
        proxy=Address("127.0.0.1", 0),
        backend=Address.parse(echo_backend.address),
        behavior=BehaviorMix.parse("100:error"),
    )
    proxy = start_proxy(config=config)
    with proxy.connect() as client:
        client.sendall(b"GET a\n")
        assert recv_exactly(client, 23) == b"ERROR try again later\r\n"


def test_pyproject_entry_points_register_the_plugins(tmp_path):
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((EXAMPLES_DIR / "pyproject.toml").read_text())["project"]
    dist_info = tmp_path / f"{project['name'].replace('-', '_')}-{project['version']}.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n"
    )
    sections = []
    for group, entries in project["entry-points"].items():
        sections += [f"[{group}]", *(f"{name} = {ref}" for name, ref in entries.items()), ""]
    (dist_info / "entry_points.txt").write_text("\n".join(sections))
    script = (
        "import json\n"
        "from vaurien.behaviors import Behavior\n"
        "from vaurien.protocols import Protocol\n"
        "print(json.dumps({'drop': Behavior.get('drop').__module__,"
        " 'stutter': Behavior.get('stutter').__module__,"
        " 'lines': Protocol.get('lines').__module__}))\n"
    )
    path = os.pathsep.join(map(str, (tmp_path, EXAMPLES_DIR, ROOT)))
    result = subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, "PYTHONPATH": path},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "drop": "drop_behavior",
        "stutter": "stutter_handler",
        "lines": "line_protocol",
    }


# -- command lines and config files ----------------------------------------------------------------


def test_quickstart_console(monkeypatch):
    install, demo, first_proxy = transcript("quickstart.console")
    assert install.program in NOT_RUN
    load(demo, monkeypatch)
    config = load(first_proxy, monkeypatch)
    assert (str(config.proxy), str(config.backend)) == ("localhost:8000", "localhost:8888")
    assert mix(config) == "20:delay,10:error,70:dummy"
    assert config.options_for("behavior", "delay") == {}  # the default: one second


def test_usage_run_console(monkeypatch):
    plain, ipv6 = transcript("usage-run.console")
    config = load(plain, monkeypatch)
    assert (config.proxy, config.backend) == (
        Address("localhost", 8000),
        Address("localhost", 8888),
    )
    config = load(ipv6, monkeypatch)
    assert (config.proxy, config.backend) == (Address("::1", 6380), Address("::1", 6379))


def test_usage_errors_console(capsys):
    commands = transcript("usage-errors.console")
    assert len(commands) == 3
    for command in commands:
        check_error(command, capsys)


def test_usage_options_console(monkeypatch):
    delay, handler_spelling = transcript("usage-options.console")
    config = load(delay, monkeypatch)
    assert config.options_for("behavior", "delay") == {"sleep": 0.2, "before": False}
    config = load(handler_spelling, monkeypatch)
    assert mix(config) == "30:error,70:dummy"
    assert config.options_for("behavior", "error") == {"warmup": 5}


def test_usage_direction_console(monkeypatch):
    answers_only, per_connection = transcript("usage-direction.console")
    config = load(answers_only, monkeypatch)
    assert config.options_for("behavior", "delay") == {"direction": "to_client"}
    config = load(per_connection, monkeypatch)
    assert (config.scope, mix(config)) == ("connection", "10:reset,90:dummy")


def test_usage_seed_console(monkeypatch):
    (command,) = transcript("usage-seed.console")
    config = load(command, monkeypatch)
    assert (config.seed, config.log_level, mix(config)) == (1234, "debug", "10:blackout,90:dummy")


def test_usage_tls_console(monkeypatch):
    backend_only, both, self_signed = transcript("usage-tls.console")
    config = load(backend_only, monkeypatch)
    assert (config.protocol, str(config.backend), config.backend_tls) == (
        "http",
        "api.example.com:443",
        True,
    )
    assert (config.backend_ca, config.backend_insecure, config.tls_cert) == (None, False, None)
    config = load(both, monkeypatch)
    assert (config.tls_cert, config.tls_key, config.backend_ca) == (
        "proxy.pem",
        "proxy.key",
        "ca.pem",
    )
    config = load(self_signed, monkeypatch)
    assert (config.tls_self_signed, config.tls_cert_out, config.backend_insecure) == (
        True,
        "vaurien.pem",
        True,
    )


def test_config_run_console_and_its_files(monkeypatch):
    monkeypatch.chdir(ROOT)
    from_file, with_flags, with_environment = transcript("config-run.console")
    config = load(from_file, monkeypatch)
    assert (str(config.proxy), str(config.backend)) == ("localhost:8000", "localhost:8888")
    assert (mix(config), config.timeout) == ("20:delay,10:error,70:dummy", 10.0)
    assert config.options_for("behavior", "delay") == {"sleep": 0.5}
    config = load(with_flags, monkeypatch)  # flags win, the rest comes from the file
    assert (mix(config), config.timeout) == ("50:delay,50:dummy", 10.0)
    assert config.options_for("behavior", "delay") == {"sleep": 2.0}
    config = load(with_environment, monkeypatch)
    assert (str(config.proxy), str(config.backend)) == ("localhost:8001", "localhost:6379")


def test_config_errors_console(monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    for variable in ("PROXY_PORT", "BACKEND"):
        monkeypatch.delenv(variable, raising=False)
    commands = transcript("config-errors.console")
    assert len(commands) == 2
    for command in commands:
        check_error(command, capsys)


def test_extending_plugins_console(monkeypatch):
    monkeypatch.chdir(ROOT)
    export, drop, lines, stutter, from_file = transcript("extending-plugins.console")
    assert export.argv == ["export", "PYTHONPATH=docs/examples"]
    assert str(EXAMPLES_DIR) in sys.path  # what the export gives the commands below
    config = load(drop, monkeypatch)
    assert mix(config) == "10:drop,90:dummy"
    assert config.options_for("behavior", "drop") == {"keep": 5}
    config = load(lines, monkeypatch)
    assert (config.protocol, mix(config)) == ("lines", "5:error,95:dummy")
    assert config.options_for("protocol", "lines") == {"error_line": "ERROR busy"}
    config = load(stutter, monkeypatch)
    assert mix(config) == "20:stutter,80:dummy"
    assert config.options_for("behavior", "stutter") == {"pause": 0.1}
    config = load(from_file, monkeypatch)  # the flag wins over plugins.ini's keep = 4
    assert config.options_for("behavior", "drop") == {"keep": 2}
    assert config.options_for("behavior", "stutter") == {"pause": 0.05}


# -- the scenarios of the examples page ------------------------------------------------------------

SCENARIOS = {
    "examples-http-errors.console": ("http", "20:error,80:dummy", {}),
    "examples-grpc-errors.console": ("http2", "20:error,80:dummy", {}),
    "examples-smtp.console": ("smtp", "5:error,10:delay,85:dummy", {}),
    "examples-warmup.console": ("http", "100:error", {"error": {"warmup": 12}}),
    "examples-mysql.console": ("mysql", "100:delay", {"delay": {"sleep": 1.0}}),
    "examples-postgres.console": ("postgres", "20:error,80:dummy", {}),
    "examples-redis.console": ("redis", "100:transient", {"transient": {"agitate": 3}}),
    "examples-ssh.console": ("tcp", "10:delay,5:blackout,85:dummy", {}),
    "examples-slow-answers.console": ("tcp", "100:delay", {"delay": {"direction": "to_client"}}),
    "examples-resets.console": ("tcp", "10:reset,90:dummy", {}),
}


def needs(protocol):
    """Skip a test, before its fixtures start servers, when ``protocol`` is not registered."""
    return pytest.mark.skipif(
        protocol not in Protocol, reason=f"the {protocol} protocol is not in this tree (issue 3)"
    )


def scenario(name, monkeypatch, backend=None):
    """The config of a scenario's command, listening on a free port in front of ``backend``."""
    protocol = SCENARIOS[name][0]
    if protocol not in Protocol:
        pytest.skip(f"the {protocol} protocol is not in this tree (issue 3)")
    command, *others = transcript(name)
    assert all(other.program in NOT_RUN for other in others)
    config = load(command, monkeypatch)
    if backend is not None:
        config = replace(config, proxy="127.0.0.1:0", backend=backend, seed=20240601)
    return config


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_scenario_commands(name, monkeypatch):
    protocol, expected_mix, options = SCENARIOS[name]
    config = scenario(name, monkeypatch)
    assert (config.protocol, mix(config)) == (protocol, expected_mix)
    for behavior, values in options.items():
        assert config.options_for("behavior", behavior) == values


@needs("http")
def test_scenario_http_errors(http_server, start_proxy, monkeypatch):
    requests = pytest.importorskip("requests")
    config = scenario("examples-http-errors.console", monkeypatch, http_server.address)
    proxy = start_proxy(config=config)
    host, port = proxy.address
    statuses = [requests.get(f"http://{host}:{port}/", timeout=10).status_code for _ in range(60)]
    assert set(statuses) <= {200, 500, 501, 502, 503}
    assert 3 <= sum(status >= 500 for status in statuses) <= 30, statuses


@needs("http")
def test_scenario_errors_after_12_calls(http_server, start_proxy, monkeypatch):
    requests = pytest.importorskip("requests")
    config = scenario("examples-warmup.console", monkeypatch, http_server.address)
    proxy = start_proxy(config=config)
    host, port = proxy.address
    statuses = [requests.get(f"http://{host}:{port}/", timeout=10).status_code for _ in range(14)]
    assert statuses[:12] == [200] * 12
    assert all(500 <= status <= 503 for status in statuses[12:]), statuses


@needs("http2")
def test_scenario_grpc_errors(start_proxy, monkeypatch):
    grpc = pytest.importorskip("grpc")
    from grpc_support import Calls, GrpcBackend

    backend = GrpcBackend()
    try:
        proxy = start_proxy(
            config=scenario("examples-grpc-errors.console", monkeypatch, backend.address)
        )
        with grpc.insecure_channel("{}:{}".format(*proxy.address)) as channel:
            outcomes = [Calls(channel).outcome(b"call %d" % i) for i in range(60)]
    finally:
        backend.close()
    failed = outcomes.count(grpc.StatusCode.UNAVAILABLE)
    assert set(outcomes) <= {grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE}
    assert 3 <= failed <= 30, outcomes
    assert backend.calls == 60 - failed


@needs("smtp")
def test_scenario_smtp(smtp_server, start_proxy, monkeypatch):
    import smtplib

    config = scenario("examples-smtp.console", monkeypatch, smtp_server.address)
    config.plugin_options[("behavior", "delay")] = {"sleep": 0.05}  # the page's 1 s, shorter
    proxy = start_proxy(config=config)
    host, port = proxy.address
    sent, codes = 0, []
    for number in range(30):
        try:
            with smtplib.SMTP(host, port, timeout=10) as smtp:
                smtp.sendmail("app@example.com", ["user@example.com"], f"Subject: {number}\n\n")
            sent += 1
        except smtplib.SMTPRecipientsRefused as e:
            codes += [code for code, _ in e.recipients.values()]
        except smtplib.SMTPResponseException as e:
            codes.append(e.smtp_code)
    assert sent > 0
    assert codes and set(codes) == {451}


@needs("mysql")
def test_scenario_mysql(mariadb_server, start_proxy, monkeypatch):
    pymysql = pytest.importorskip("pymysql")
    config = scenario("examples-mysql.console", monkeypatch, mariadb_server.address)
    proxy = start_proxy(config=config)
    host, port = proxy.address
    kwargs = {**mariadb_server.connect_kwargs(), "host": host, "port": port}
    start = time.monotonic()
    connection = pymysql.connect(**kwargs, autocommit=None)
    # The handshake and the authentication are not delayed; SET NAMES, the one command
    # PyMySQL sends while connecting, is.
    assert 1.0 <= time.monotonic() - start < 1.9
    with connection, connection.cursor() as cursor:
        start = time.monotonic()
        cursor.execute("SELECT 1")
        assert cursor.fetchone() == (1,)
        assert time.monotonic() - start >= 1.0
    with pytest.raises(pymysql.err.OperationalError) as error:  # at SET NAMES already
        impatient = pymysql.connect(**kwargs, read_timeout=0.5)
        impatient.cursor().execute("SELECT 1")
    assert error.value.args[0] == 2013


@needs("postgres")
def test_scenario_postgres(postgres_server, start_proxy, monkeypatch):
    import postgres_retries

    config = scenario("examples-postgres.console", monkeypatch, postgres_server.address)
    proxy = start_proxy(config=config)
    host, port = proxy.address
    conninfo = postgres_server.conninfo(host=host, port=port)
    rows, retried = postgres_retries.main(conninfo, queries=60)
    assert rows == [(number,) for number in range(60)]  # every query ran in the end
    assert 3 <= retried <= 30, retried


@needs("redis")
def test_scenario_redis(redis_server, start_proxy, monkeypatch):
    redis = pytest.importorskip("redis")
    backend = f"127.0.0.1:{redis_server.port}"
    config = scenario("examples-redis.console", monkeypatch, backend)
    proxy = start_proxy(config=config)
    with proxy.connect() as client:  # the commands the proxy sees, one by one
        replies = []
        for _ in range(4):
            client.sendall(b"*1\r\n$4\r\nPING\r\n")
            replies.append(client.recv(1024)[:1])
    assert replies == [b"-", b"-", b"-", b"+"]
    proxy = start_proxy(config=scenario("examples-redis.console", monkeypatch, backend))
    host, port = proxy.address
    client = redis.Redis(host, port, socket_timeout=10)
    with pytest.raises(redis.exceptions.ResponseError):
        client.ping()  # its connection's own commands may have taken the first errors
    assert any(_try_ping(client, redis) for _ in range(3))


def _try_ping(client, redis):
    try:
        return client.ping()
    except redis.exceptions.ResponseError:
        return False


def test_scenario_slow_answers_fast_requests(echo_backend, start_proxy, monkeypatch):
    config = scenario("examples-slow-answers.console", monkeypatch, echo_backend.address)
    proxy = start_proxy(config=config)
    with proxy.connect() as client:
        start = time.monotonic()
        client.sendall(b"ping")
        assert recv_exactly(client, 4) == b"ping"
        # The answer waits its second; the request did not wait one too.
        assert 1.0 <= time.monotonic() - start < 1.8


def test_scenario_one_connection_in_ten_is_reset(echo_backend, start_proxy, monkeypatch):
    config = scenario("examples-resets.console", monkeypatch, echo_backend.address)
    assert config.scope == "connection"
    proxy = start_proxy(config=config)
    outcomes = []
    for _ in range(40):
        with proxy.connect() as client:
            done = 0
            try:
                for _ in range(3):
                    client.sendall(b"ping")
                    if recv_exactly(client, 4) != b"ping":
                        break
                    done += 1
            except ConnectionResetError:
                pass
            outcomes.append(done)
    assert set(outcomes) <= {0, 3}, outcomes  # reset at once, or never touched
    assert 1 <= outcomes.count(0) <= 15, outcomes


# -- rules and scenarios --------------------------------------------------------------------------


def rules_of(config) -> list[tuple[str, str, str, dict]]:
    return [
        (rule.name, rule.match, str(rule.behavior), dict(rule.options)) for rule in config.rules
    ]


def test_rules_run_console(monkeypatch, http_server, start_proxy):
    payments, sessions, writes, clients = transcript("rules-run.console")
    config = load(payments, monkeypatch)
    assert rules_of(config) == [
        ("rule1", "method=POST path=/api/payments/*", "50:error,50:dummy", {})
    ]
    config = load(sessions, monkeypatch)
    assert rules_of(config) == [
        ("sessions", "command=get key=session:*", "delay", {"delay": {"sleep": 0.5}})
    ]
    config = load(writes, monkeypatch)
    assert (config.protocol, rules_of(config)) == (
        "mysql",
        [("writes", "statement=INSERT,UPDATE", "error", {})],
    )
    config = load(clients, monkeypatch)
    assert [(rule.name, rule.match) for rule in config.rules] == [
        ("rule1", "client=10.1.2.3"),
        ("rule2", "client=10.0.0.0/8"),
    ]
    requests = pytest.importorskip("requests")
    config = replace(load(payments, monkeypatch), proxy="127.0.0.1:0", backend=http_server.address)
    proxy = start_proxy(config=config)
    root = "http://{}:{}".format(*proxy.address)
    posts = [requests.post(f"{root}/api/payments/1", timeout=10).status_code for _ in range(40)]
    gets = [requests.get(f"{root}/api/payments/1", timeout=10).status_code for _ in range(20)]
    assert 5 <= sum(status >= 500 for status in posts) <= 35, posts  # about half
    assert set(posts) - {500, 501, 502, 503} == {404}  # the test backend has no such page
    assert set(gets) == {404}  # the rule is on POSTs


@needs("http2")
def test_rules_grpc_console(monkeypatch, start_proxy):
    grpc = pytest.importorskip("grpc")
    from grpc_support import ShopBackend

    (command,) = transcript("rules-grpc.console")
    config = load(command, monkeypatch)
    assert (config.protocol, rules_of(config)) == (
        "http2",
        [("get", "path=/shop.Inventory/Get", "20:error,80:dummy", {})],
    )
    backend = ShopBackend()
    try:
        proxy = start_proxy(
            config=replace(config, proxy="127.0.0.1:0", backend=backend.address, seed=20240601)
        )
        with grpc.insecure_channel("{}:{}".format(*proxy.address)) as channel:
            get = channel.unary_unary("/shop.Inventory/Get")
            check = channel.unary_unary("/grpc.health.v1.Health/Check")
            outcomes = []
            for number in range(100):
                try:
                    assert get(b"item %d" % number, timeout=10) == b"42 x item %d" % number
                    outcomes.append(grpc.StatusCode.OK)
                except grpc.RpcError as error:
                    outcomes.append(error.code())
                # Every health check passes, on the same connection.
                assert check(b"", timeout=10) == ShopBackend.SERVING
    finally:
        backend.close()
    failed = outcomes.count(grpc.StatusCode.UNAVAILABLE)
    assert set(outcomes) <= {grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE}
    assert 8 <= failed <= 35, failed  # about 20
    assert backend.calls == {"Get": 100 - failed, "Check": 100}
    stats = proxy.call(proxy.proxy.stats)
    assert stats["rules"] == {"get": 100}
    assert stats["total_connections"] == 1  # the failed calls left the connection up


def test_rules_ini(monkeypatch, http_server, start_proxy):
    monkeypatch.chdir(ROOT)
    config, _ = cli.parse_config(["--config", "docs/examples/rules.ini"])
    assert rules_of(config) == [
        ("health", "path=/health,/ready", "dummy", {}),
        (
            "payments",
            "method=POST path=/api/payments/*",
            "50:error,50:dummy",
            {"error": {"warmup": 3}},
        ),
        ("debug-search", "path=~^/search header.x-debug=*", "delay", {"delay": {"sleep": 2.0}}),
    ]
    assert str(config.scenario) == "30s 100:dummy; 10s 50:error; 100:dummy"
    requests = pytest.importorskip("requests")
    config = replace(config, proxy="127.0.0.1:0", backend=http_server.address, scenario=None)
    proxy = start_proxy(config=config)
    root = "http://{}:{}".format(*proxy.address)
    assert (
        requests.get(f"{root}/search", headers={"X-Debug": "1"}, timeout=10).elapsed.total_seconds()
        >= 2
    )
    assert requests.get(f"{root}/health", timeout=10).status_code == 404  # untouched
    assert proxy.call(proxy.proxy.stats)["rules"] == {"debug-search": 1, "health": 1}


def test_rules_proxies_ini(redis_server):
    from support import ServerThread

    config, _ = cli.parse_server_config(["--config", str(EXAMPLES_DIR / "rules-proxies.ini")])
    proxies = {proxy.name: proxy for proxy in config.proxies}
    assert {name: [rule.name for rule in proxy.rules] for name, proxy in proxies.items()} == {
        "default": ["payments", "cut-off"],
        "cache": ["slow-sessions", "cut-off"],
        "sessions": ["slow-sessions", "cut-off"],
    }
    assert proxies["cache"].rules[0].options == {"delay": {"sleep": 0.5}}
    assert str(proxies["cache"].scenario) == "1000req 100:dummy; 10:error"
    assert proxies["default"].scenario is None and proxies["sessions"].scenario is None
    # The two Redis proxies, on free ports in front of a real redis-server.
    running = replace(
        config,
        proxies=tuple(
            replace(proxies[name], proxy="127.0.0.1:0", backend=redis_server.address)
            for name in ("cache", "sessions")
        ),
    )
    with ServerThread(running) as thread:
        for name in ("cache", "sessions"):
            with thread.connect(name) as client, client.makefile("rb") as answers:
                client.sendall(b"SET session:1 alice\r\nSET user:1 bob\r\n")
                assert [answers.readline() for _ in range(2)] == [b"+OK\r\n"] * 2
                for key, slow in ((b"user:1", False), (b"session:1", True)):
                    started = time.monotonic()
                    client.sendall(b"GET %s\r\n" % key)
                    answers.readline()
                    assert answers.readline() in (b"bob\r\n", b"alice\r\n")
                    assert (time.monotonic() - started >= 0.5) is slow, (name, key)
        stats = thread.call(thread.server.stats)
    assert stats["cache"]["rules"] == stats["sessions"]["rules"] == {"slow-sessions": 1}
    assert stats["cache"]["steps"] == {"1": 3}


def test_rules_errors_console(capsys):
    commands = transcript("rules-errors.console")
    assert len(commands) == 3
    for command in commands:
        check_error(command, capsys)


def test_scenario_run_console(monkeypatch, redis_server, start_proxy):
    looping, hang, by_bytes = transcript("scenario-run.console")
    config = load(looping, monkeypatch)
    assert str(config.scenario) == "30s 100:dummy; 10s 50:error; 100req 100:delay; repeat"
    config = load(by_bytes, monkeypatch)
    assert (str(config.scenario), config.seed) == ("10MiB 100:dummy; 100:reset", 42)
    config = replace(load(hang, monkeypatch), proxy="127.0.0.1:0", backend=redis_server.address)
    proxy = start_proxy(config=config)
    with proxy.connect(timeout=0.5) as client, client.makefile("rb") as replies:
        for _ in range(100):
            client.sendall(b"PING\r\n")
            assert replies.readline() == b"+PONG\r\n"
        client.sendall(b"PING\r\n")  # the 101st command hangs
        with pytest.raises(TimeoutError):
            replies.readline()


def test_rules_fixture_example():
    run_example_tests("rules_fixture_test.py", 2)


# -- the control API, the client, vaurienctl and the test helpers ------------------------------


def contains(expected, actual) -> bool:
    """Whether JSON ``actual`` has everything ``expected`` shows (objects may have more keys)."""
    if isinstance(expected, dict):
        return isinstance(actual, dict) and all(
            key in actual and contains(value, actual[key]) for key, value in expected.items()
        )
    if isinstance(expected, list):
        return (
            isinstance(actual, list)
            and len(expected) == len(actual)
            and all(map(contains, expected, actual))
        )
    return type(expected) is type(actual) and expected == actual


@contextmanager
def control_api(command: Command, tmp_path: Path):
    """``vaurien`` as the transcript starts it, on free ports; yields the control API's port."""
    assert command.program == "vaurien" and "--http" in command.argv, command
    port = free_port()
    argv = [
        *command.argv[1:],
        *("--proxy", f"127.0.0.1:{free_port()}"),
        *("--http-host", "127.0.0.1", "--http-port", str(port)),
    ]
    with vaurien_process(argv, port, tmp_path):
        yield port


@contextmanager
def vaurien_process(argv: list[str], port: int, tmp_path: Path):
    """``python -m vaurien ARGV`` in a child process, until ``port`` accepts connections."""
    log = tmp_path / "vaurien.log"
    with open(log, "wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "vaurien", *argv],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    try:

        def ready():
            if process.poll() is not None:
                raise AssertionError(f"vaurien exited:\n{log.read_text()}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return True
            except OSError:
                return False

        wait_until(ready)
        yield process
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def check_curl(command: Command, port: int) -> None:
    method, body, url = "GET", None, None
    headers = {"Host": "localhost:8080"}  # as curl sends it: the transcript's address
    args = iter(command.argv[1:])
    for arg in args:
        if arg == "-s":
            continue
        if arg == "-X":
            method = next(args)
        elif arg == "-d":
            body = next(args).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        elif arg == "-H":
            key, _, value = next(args).partition(":")
            headers[key.strip()] = value.strip()
        else:
            url = arg
    assert url is not None and url.startswith("localhost:8080/"), command
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.request(method, url[len("localhost:8080") :], body=body, headers=headers)
    response = connection.getresponse()
    text = response.read().decode()
    connection.close()
    try:
        expected = json.loads(command.output)
    except ValueError:  # text: its lines, in this order, with nothing between them
        lines = text.splitlines()
        wanted = command.output.splitlines()
        assert any(lines[i : i + len(wanted)] == wanted for i in range(len(lines))), (
            f"{command}\n--- shown\n{command.output}\n--- answered\n{text}"
        )
        assert response.status == 200
        return
    assert contains(expected, json.loads(text)), (
        f"{command}\n  shown:    {command.output}\n  answered: {text}"
    )
    refused = expected.get("status") == "error"
    assert (400 <= response.status < 500) if refused else response.status == 200, command


def check_vaurienctl(command: Command, port: int, capsys) -> None:
    from vaurien.ctl import main

    argv = command.argv[1:]
    if "--host" not in argv:
        argv = ["--host", f"http://127.0.0.1:{port}", *argv]
    with mock.patch.dict(os.environ, command.env):
        code, output = run_main(main, argv, capsys)
    expected_code = 1 if command.output.startswith("vaurienctl: error: ") else 0
    assert (code, output) == (expected_code, command.output), command


def run_api_transcript(name: str, tmp_path: Path, capsys) -> None:
    pytest.importorskip("vaurien.api", reason="the control API is not in this tree (issue 4)")
    start, *commands = transcript(name)
    with control_api(start, tmp_path) as port:
        for command in commands:
            if command.program == "curl":
                check_curl(command, port)
            elif command.program == "vaurienctl":
                check_vaurienctl(command, port, capsys)
            else:
                raise AssertionError(f"{command}: not a command of the control API")


@pytest.mark.parametrize(
    "name",
    [
        "api-behavior.console",
        "api-lists.console",
        "api-backend.console",
        "api-stats.console",
        "api-errors.console",
        "api-vaurienctl.console",
        "api-enabled.console",
        "api-token.console",
        "api-rules.console",
    ],
)
def test_api_transcripts(name, tmp_path, capsys):
    if name == "api-stats.console":
        pytest.importorskip("prometheus_client")
    if name in (
        "api-vaurienctl.console",
        "api-enabled.console",
        "api-token.console",
        "api-rules.console",
    ):
        pytest.importorskip("requests")
    run_api_transcript(name, tmp_path, capsys)


def test_functional_test_example(monkeypatch):
    pytest.importorskip("vaurien.util", reason="the test helpers are not in this tree (issue 4)")
    import functional_test

    monkeypatch.setattr(functional_test, "PROXY_PORT", free_port())
    monkeypatch.setattr(functional_test, "CONTROL_PORT", free_port())
    suite = unittest.defaultTestLoader.loadTestsFromModule(functional_test)
    stream = io.StringIO()
    result = unittest.TextTestRunner(stream=stream, verbosity=2).run(suite)
    assert result.wasSuccessful(), stream.getvalue()
    assert result.testsRun == 2


def test_fixture_example():
    run_example_tests("fixture_test.py", 2)


def run_example_tests(name: str, count: int) -> None:
    """Run the tests of ``docs/examples/NAME`` with pytest, as a user would: all must pass."""
    pytest.importorskip("vaurien.pytest_plugin", reason="the fixture is not in this tree (issue 4)")
    argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    installed = importlib.metadata.entry_points(group="pytest11")
    if not any(entry.value.startswith("vaurien.") for entry in installed):
        argv += ["-p", "vaurien.pytest_plugin"]  # a checkout that is not installed
    result = subprocess.run(
        [*argv, str(EXAMPLES_DIR / name)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{count} passed" in result.stdout


def test_performance_console(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT))
    run = pytest.importorskip(
        "benchmarks.run", reason="the benchmark is not in this tree (issue 6)"
    )
    install, *commands = transcript("performance-run.console")
    assert install.program in NOT_RUN
    for command in commands:
        assert command.argv[:3] == ["python", "-m", "benchmarks"], command
        run.parse_args(command.argv[3:])  # exits 2 on a flag the harness does not take


def test_performance_results(monkeypatch):
    """The published table is the harness's own: every row of each group it shows, each
    verdict the one its target gives for the numbers shown. (A group added to the harness
    after the published run is absent as a whole until the next full run.)"""
    monkeypatch.syspath_prepend(str(ROOT))
    table = pytest.importorskip(
        "benchmarks.table", reason="the benchmark is not in this tree (issue 6)"
    )
    text = (EXAMPLES_DIR / "performance-results.txt").read_text(encoding="utf-8")
    assert text.startswith("vaurien benchmark: commit ")
    # the growth group's connection counts are the run's (--growth): read them off its rows
    growth = [int(n) for n in re.findall(r"^(\d+) conns x 5 round trips, per", text, re.M)]
    by_key = table.make_rows(5000, 5, growth or table.GROWTH)
    rows = {row.label: row for row in by_key.values()}
    seen = set()
    for line in text.splitlines():
        label = next((label for label in rows if line.startswith(label + " ")), None)
        if label is None:
            continue
        seen.add(label)
        row = rows[label]
        cells = line[len(label) :].split()
        assert cells[0] == row.unit, line
        if row.target is None:
            continue
        direct, proxied, ratio, _, target, verdict = cells[1:7]
        assert target == row.target.describe(), line
        value = float(proxied.replace(",", ""))
        if row.target.on_ratio:
            shown = float(ratio.rstrip("x"))
            # the verdict is the unrounded ratio's: 0.3955 shows as 0.40x and misses >=0.4x
            value /= float(direct.replace(",", ""))
            assert abs(value - shown) <= 0.01 * shown + 0.01, line
        assert verdict == ("pass" if row.target.met(value) else "FAIL"), line
    groups = {
        group: {by_key[key].label for key in keys} for group, keys in table.GROUP_ROWS.items()
    }
    shown = [group for group, labels in groups.items() if labels & seen]
    assert {"bulk", "rtt", "connect", "concurrent", "http"} <= set(shown)
    assert seen == set().union(*(groups[group] for group in shown))


# -- named proxies and the Toxiproxy API ------------------------------------------------------


def test_named_proxies_ini():
    config, _ = cli.parse_server_config(["--config", str(EXAMPLES_DIR / "named-proxies.ini")])
    default, cache, db = config.proxies
    assert [p.name for p in config.proxies] == ["default", "cache", "db"]
    assert (default.protocol, cache.protocol, db.protocol) == ("http", "redis", "postgres")
    assert mix(cache) == "20:delay+bandwidth,5:error,75:dummy"
    assert cache.options_for("behavior", "delay") == {"sleep": 0.2}
    assert default.options_for("behavior", "delay") == {"sleep": 0.5}
    assert cache.options_for("behavior", "bandwidth") == {"rate": 64.0, "direction": "to_client"}
    assert (db.timeout, db.refuse_when_backend_down) == (5.0, True)
    assert (default.timeout, default.refuse_when_backend_down) == (30.0, False)
    assert config.toxiproxy_api == Address("localhost", 8474) and config.http is True


def test_toxiproxy_json_startup_file(tmp_path, redis_server):
    from support import ServerThread
    from vaurien.proxy_config import ServerConfig
    from vaurien.toxiproxy_proxies import load_startup_file

    entries = json.loads((EXAMPLES_DIR / "toxiproxy.json").read_text())
    assert [entry["name"] for entry in entries] == ["redis", "search"]
    for entry in entries:
        entry["listen"] = f"127.0.0.1:{free_port()}"
    entries[0]["upstream"] = redis_server.address
    path = tmp_path / "toxiproxy.json"
    path.write_text(json.dumps(entries))
    with ServerThread(ServerConfig({})) as thread:
        thread.call(load_startup_file, thread.server, str(path))
        redis_proxy, search = thread.proxy("redis"), thread.proxy("search")
        toxics = [toxic.name for toxic in redis_proxy.toxics.toxics]
        assert toxics == ["latency_downstream", "error_upstream"]
        assert search.enabled is False and redis_proxy.config.protocol == "redis"
        with socket.create_connection(redis_proxy.address, timeout=10) as sock:
            start = time.monotonic()
            sock.sendall(b"*1\r\n$4\r\nPING\r\n")
            reply = sock.recv(100)
            if not reply.startswith(b"-ERR "):  # one connection in ten: the proxy's error
                assert reply == b"+PONG\r\n"
                assert time.monotonic() - start >= 0.09  # the answer's latency: 100 ms ± 10


@contextmanager
def toxiproxy_api(command: Command, tmp_path: Path):
    """``vaurien --toxiproxy-api ...`` as the transcript starts it, on a free port."""
    assert command.program == "vaurien" and "--toxiproxy-api" in command.argv, command
    port = free_port()
    with vaurien_process(
        [*command.argv[1:], "--toxiproxy-api", f"127.0.0.1:{port}"], port, tmp_path
    ):
        yield port


def test_toxiproxy_api_console(tmp_path):
    start, *commands = transcript("toxiproxy-api.console")
    listen = str(free_port())  # where the transcript's proxy listens: 26379
    with toxiproxy_api(start, tmp_path) as port:
        for command in commands:
            assert command.program == "curl", command
            argv = [arg.replace("26379", listen) for arg in command.argv]
            shown = command.output.replace("26379", listen)
            check_toxiproxy_curl(replace(command, argv=argv, output=shown), port)


def check_toxiproxy_curl(command: Command, port: int) -> None:
    method, body, url = "GET", None, None
    args = iter(command.argv[1:])
    for arg in args:
        if arg == "-X":
            method = next(args)
        elif arg == "-d":
            body = next(args).encode()
        elif arg != "-s":
            url = arg
    assert url is not None and url.startswith("localhost:8474/"), command
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.request(method, url[len("localhost:8474") :], body=body)
    response = connection.getresponse()
    answered = json.loads(response.read())
    connection.close()
    assert answered == json.loads(command.output), f"{command}\n  answered: {answered}"
    failed = "error" in answered
    assert (400 <= response.status < 500) if failed else 200 <= response.status < 300, command


def test_toxiproxy_test_example(tmp_path):
    pytest.importorskip("toxiproxy", reason="toxiproxy-python is not installed")
    start = Command(EXAMPLES_DIR, 0, {}, ["vaurien", "--toxiproxy-api", "localhost:8474"], "")
    with toxiproxy_api(start, tmp_path) as port:
        result = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
             str(EXAMPLES_DIR / "toxiproxy_test.py")],
            cwd=tmp_path,
            env={**os.environ, "TOXIPROXY_PORT": str(port)},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout


# -- nothing on the site escapes the tests ---------------------------------------------------

EXAMPLES = {
    "drop_behavior.py": [
        "test_drop_behavior_keeps_the_first_bytes_and_the_connection",
        "test_drop_behavior_keeping_nothing_sends_nothing",
    ],
    "line_protocol.py": [
        "test_line_protocol_carries_requests_and_answers",
        "test_line_protocol_answers_errors_with_its_error_line",
        "test_line_protocol_delays_each_request",
        "test_line_protocol_ends_a_session_with_an_endless_line",
    ],
    "stutter_handler.py": ["test_stutter_handler_delivers_every_byte_late"],
    "plugins.ini": ["test_plugins_ini_registers_and_configures_its_plugins"],
    "pyproject.toml": ["test_pyproject_entry_points_register_the_plugins"],
    "vaurien.ini": ["test_config_run_console_and_its_files"],
    "env.ini": ["test_config_run_console_and_its_files", "test_config_errors_console"],
    "quickstart.console": ["test_quickstart_console"],
    "usage-run.console": ["test_usage_run_console"],
    "usage-errors.console": ["test_usage_errors_console"],
    "usage-options.console": ["test_usage_options_console"],
    "usage-tls.console": ["test_usage_tls_console"],
    "usage-seed.console": ["test_usage_seed_console"],
    "config-run.console": ["test_config_run_console_and_its_files"],
    "config-errors.console": ["test_config_errors_console"],
    "extending-plugins.console": ["test_extending_plugins_console"],
    "examples-http-errors.console": ["test_scenario_commands", "test_scenario_http_errors"],
    "examples-grpc-errors.console": ["test_scenario_commands", "test_scenario_grpc_errors"],
    "examples-smtp.console": ["test_scenario_commands", "test_scenario_smtp"],
    "examples-warmup.console": ["test_scenario_commands", "test_scenario_errors_after_12_calls"],
    "examples-mysql.console": ["test_scenario_commands", "test_scenario_mysql"],
    "examples-postgres.console": ["test_scenario_commands", "test_scenario_postgres"],
    "postgres_retries.py": ["test_scenario_postgres"],
    "examples-redis.console": ["test_scenario_commands", "test_scenario_redis"],
    "examples-ssh.console": ["test_scenario_commands"],
    "examples-slow-answers.console": [
        "test_scenario_commands",
        "test_scenario_slow_answers_fast_requests",
    ],
    "examples-resets.console": [
        "test_scenario_commands",
        "test_scenario_one_connection_in_ten_is_reset",
    ],
    "usage-direction.console": ["test_usage_direction_console"],
    "api-behavior.console": ["test_api_transcripts"],
    "api-lists.console": ["test_api_transcripts"],
    "api-backend.console": ["test_api_transcripts"],
    "api-stats.console": ["test_api_transcripts"],
    "api-errors.console": ["test_api_transcripts"],
    "api-vaurienctl.console": ["test_api_transcripts"],
    "api-enabled.console": ["test_api_transcripts"],
    "api-token.console": ["test_api_transcripts"],
    "functional_test.py": ["test_functional_test_example"],
    "rules-run.console": ["test_rules_run_console"],
    "rules.ini": ["test_rules_ini"],
    "rules-proxies.ini": ["test_rules_proxies_ini"],
    "rules-grpc.console": ["test_rules_grpc_console"],
    "rules-errors.console": ["test_rules_errors_console"],
    "scenario-run.console": ["test_scenario_run_console"],
    "api-rules.console": ["test_api_transcripts"],
    "rules_fixture_test.py": ["test_rules_fixture_example"],
    "fixture_test.py": ["test_fixture_example"],
    "performance-run.console": ["test_performance_console"],
    "performance-results.txt": ["test_performance_results"],
    "named-proxies.ini": ["test_named_proxies_ini"],
    "toxiproxy.json": ["test_toxiproxy_json_startup_file"],
    "toxiproxy-api.console": ["test_toxiproxy_api_console"],
    "toxiproxy_test.py": ["test_toxiproxy_test_example"],
}


def pages() -> dict[str, str]:
    return {path.name: path.read_text(encoding="utf-8") for path in sorted(DOCS.glob("*.rst"))}


def test_every_example_file_is_run_by_a_test():
    files = {path.name for path in EXAMPLES_DIR.iterdir() if path.is_file()}
    assert files == set(EXAMPLES)
    for tests in EXAMPLES.values():
        for test in tests:
            assert callable(globals().get(test)), test


def test_every_example_file_is_on_a_page_and_every_include_exists():
    shown = set()
    for name, text in pages().items():
        for target in re.findall(r"(?:literalinclude:: |:download:`[^<`]*<)([^\s>`]+)", text):
            assert (DOCS / target).is_file(), f"{name}: {target}"
            if target.startswith("examples/"):
                shown.add(target.removeprefix("examples/"))
    assert shown == set(EXAMPLES)


def test_pages_show_code_only_from_example_files():
    for name, text in pages().items():
        for number, line in enumerate(text.splitlines(), 1):
            where = f"{name}:{number}: {line}"
            if line.rstrip().endswith("::") and not line.lstrip().startswith(".. "):
                raise AssertionError(f"{where}: a literal block; make it a file under examples/")
            if "code-block::" in line:
                assert line.split("code-block::")[1].strip() == "text", where  # diagrams only


def test_transcripts_show_only_commands_the_suite_knows():
    for path in sorted(EXAMPLES_DIR.glob("*.console")):
        for command in transcript(path.name):
            assert command.program in RUN | set(NOT_RUN), command


def test_no_page_or_example_has_a_hole():
    hole = re.compile(r"\b(XXX|TODO|TBD|FIXME)\b")
    for path in [*DOCS.glob("*.rst"), *EXAMPLES_DIR.iterdir()]:
        assert not hole.search(path.read_text(encoding="utf-8")), path
