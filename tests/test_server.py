"""Named proxies in one process: the config file's [proxy:NAME] sections, the command line's
proxy (``default``), seeds, and the control API's /proxies/NAME routes, over real sockets."""

from __future__ import annotations

import time

import pytest
import requests

from support import ServerThread, recv_exactly, wait_until
from vaurien.api import ControlServer
from vaurien.cli import main, parse_config, parse_server_config
from vaurien.network import Address
from vaurien.proxy_config import ServerConfig, derive_seed


def write(tmp_path, text):
    path = tmp_path / "vaurien.ini"
    path.write_text(text)
    return str(path)


TWO_PROXIES = """\
[vaurien]
backend = {first}
proxy = 127.0.0.1:0
timeout = 7
behavior = 10:error

[behavior:delay]
sleep = 0.25
jitter = 0.01

[proxy:cache]
proxy = 127.0.0.1:0
backend = {second}
behavior = 100:delay
behavior.delay.sleep = 0.3
protocol.tcp.buffer = 4096

[proxy:db]
proxy = 127.0.0.1:0
backend = {second}
timeout = 3
"""


def test_sections_add_named_proxies_that_inherit_the_rest(tmp_path):
    path = write(tmp_path, TWO_PROXIES.format(first="127.0.0.1:1", second="127.0.0.1:2"))
    config, _ = parse_server_config(["--config", path, "--seed", "42"])
    default, cache, db = config.proxies
    assert [p.name for p in config.proxies] == ["default", "cache", "db"]
    assert str(default.behavior) == "10:error,90:dummy"
    assert (cache.backend, cache.protocol, str(cache.behavior)) == (
        Address("127.0.0.1", 2),
        "tcp",
        "delay",
    )
    assert str(db.behavior) == "dummy"  # the mix is the proxy's own, never inherited
    assert (cache.timeout, db.timeout) == (7.0, 3.0)  # inherited from [vaurien], or its own
    # A section's plugin options win over [behavior:delay] option by option.
    assert cache.options_for("behavior", "delay") == {"sleep": 0.3, "jitter": 0.01}
    assert db.options_for("behavior", "delay") == {"sleep": 0.25, "jitter": 0.01}
    assert cache.options_for("protocol", "tcp") == {"buffer": 4096}
    # Each has its own registries, and a seed of its own that --seed reproduces.
    assert len({id(p.behaviors) for p in config.proxies}) == 3
    assert (default.seed, cache.seed, db.seed) == (
        42,
        derive_seed(42, "cache"),
        derive_seed(42, "db"),
    )
    assert len({default.seed, cache.seed, db.seed}) == 3
    again, _ = parse_server_config(["--config", path, "--seed", "42"])
    assert [p.seed for p in again.proxies] == [42, cache.seed, db.seed]
    assert parse_config(["--config", path])[0].name == "default"


def test_the_command_lines_proxy_may_be_named(tmp_path):
    config, _ = parse_server_config(["--backend", "127.0.0.1:1", "--name", "front"])
    assert [p.name for p in config.proxies] == ["front"]
    assert config.name == "front"


@pytest.mark.parametrize(
    "argv, names",
    [
        (["--toxiproxy-api", "127.0.0.1:0"], []),
        (["--toxiproxy-api", "127.0.0.1:0", "--backend", "127.0.0.1:1"], ["default"]),
    ],
)
def test_the_toxiproxy_api_may_start_with_no_proxy(argv, names):
    config, _ = parse_server_config(argv)
    assert [p.name for p in config.proxies] == names
    assert config.toxiproxy_api == Address("127.0.0.1", 0)


def test_sections_alone_need_no_backend(tmp_path):
    path = write(tmp_path, "[proxy:only]\nproxy = 127.0.0.1:0\nbackend = 127.0.0.1:1\n")
    config, _ = parse_server_config(["--config", path])
    assert [p.name for p in config.proxies] == ["only"]


@pytest.mark.parametrize(
    "text, message",
    [
        ("[proxy:x]\nproxy = 127.0.0.1:0\n", "[proxy:x] needs backend = HOST:PORT"),
        ("[proxy:x]\nbackend = 127.0.0.1:1\n", "[proxy:x] needs proxy = HOST:PORT"),
        ("[proxy:a b]\nproxy = 127.0.0.1:0\nbackend = 127.0.0.1:1\n", "'a b' is not a proxy name"),
        ("[proxy:x]\nproxy = 127.0.0.1:0\nbackend = 127.0.0.1:1\nhttp = true\n",
         "[proxy:x] unknown key 'http' (known: proxy, backend, protocol, behavior, scope"),
        ("[proxy:x]\nproxy = 127.0.0.1:0\nbackend = 127.0.0.1:1\ntimeout = 0\n",
         "[proxy:x] timeout: expected a number of at least 0.001"),
        ("[proxy:x]\nproxy = 127.0.0.1:0\nbackend = 127.0.0.1:1\nbehavior.delay.slep = 1\n",
         "[proxy:x] behavior.delay.slep: unknown option 'slep' of delay (known: before"),
        ("[proxy:x]\nproxy = 127.0.0.1:0\nbackend = 127.0.0.1:1\nbehavior.delay.sleep = -1\n",
         "[proxy:x] behavior.delay.sleep: expected a number of at least 0"),
        ("[proxy:x]\nproxy = 127.0.0.1:0\nbackend = 127.0.0.1:1\nbehavior.nope.a = 1\n",
         "[proxy:x] behavior.nope.a: unknown behavior 'nope'"),
        ("[proxy:x]\nproxy = 127.0.0.1:0\nbackend = 127.0.0.1:1\nbehavior = 10:nope\n",
         "[proxy:x] behavior: unknown behavior 'nope'"),
        ("[vaurien]\nbackend = 127.0.0.1:1\nname = x\n"
         "[proxy:x]\nproxy = 127.0.0.1:0\nbackend = 127.0.0.1:1\n", "another proxy is named x"),
    ],
)  # fmt: skip
def test_section_errors_name_the_file_section_and_key(tmp_path, capsys, text, message):
    path = write(tmp_path, text)
    assert main(["--config", path]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"vaurien: error: {path}: ") and message in err, err
    assert err.count("\n") == 1


def test_without_a_backend_or_a_proxy_to_serve_the_error_is_as_before(capsys):
    assert main([]) == 2
    assert "no backend: give --backend HOST:PORT" in capsys.readouterr().err
    assert main(["--name", "a/b", "--backend", "127.0.0.1:1"]) == 2
    assert "'a/b' is not a proxy name" in capsys.readouterr().err


# -- running -------------------------------------------------------------------------------------


@pytest.fixture
def two_proxies(tmp_path, echo_backend, recording_backend):
    text = TWO_PROXIES.format(
        first=echo_backend.address, second=str(Address(*recording_backend.address))
    ).replace("behavior = 10:error\n", "")
    config, _ = parse_server_config(["--config", write(tmp_path, text)])

    def services(server):
        return [ControlServer(server, "127.0.0.1", 0).start()]

    with ServerThread(config, services) as thread:
        thread.url = f"http://127.0.0.1:{thread.services[0].address[1]}"
        yield thread


def test_each_proxy_forwards_to_its_backend_with_its_own_mix(two_proxies, recording_backend):
    with two_proxies.connect("default") as client:
        start = time.monotonic()
        client.sendall(b"one")
        assert recv_exactly(client, 3) == b"one"
        assert time.monotonic() - start < 0.25  # dummy: no delay
    with two_proxies.connect("cache") as client:
        start = time.monotonic()
        client.sendall(b"two")
        assert recv_exactly(client, 3) == b"two"
        assert time.monotonic() - start >= 0.55  # delayed 0.3 s each way
    wait_until(lambda: recording_backend.connections and recording_backend.connections[0].data)
    assert recording_backend.connections[0].data == b"two"
    stats = two_proxies.call(two_proxies.server.stats)
    assert stats["default"]["total_connections"] == 1
    assert stats["cache"]["total_connections"] == 1
    assert set(stats["cache"]["behaviors"]) == {"delay"}
    assert stats["db"]["total_connections"] == 0


def test_the_control_api_drives_each_proxy_under_its_name(two_proxies):
    url = two_proxies.url
    listing = requests.get(url + "/proxies", timeout=10).json()["proxies"]
    assert list(listing) == ["default", "cache", "db"]
    assert listing["cache"]["behavior"] == "delay" and listing["cache"]["enabled"] is True
    assert requests.get(url + "/proxies/db", timeout=10).json()["name"] == "db"

    response = requests.put(url + "/proxies/db/behavior", json={"name": "blackout"}, timeout=10)
    assert response.json() == {"status": "ok"}
    assert requests.get(url + "/proxies/db/behavior", timeout=10).json() == {"behavior": "blackout"}
    # The others are untouched; the 1.x routes drive the default proxy.
    assert requests.get(url + "/behavior", timeout=10).json() == {"behavior": "dummy"}
    assert requests.get(url + "/proxies/cache/behavior", timeout=10).json() == {"behavior": "delay"}
    options = requests.get(url + "/proxies/cache/behavior/options", timeout=10).json()
    assert options["options"]["delay"]["sleep"] == 0.3

    response = requests.get(url + "/proxies/nope/stats", timeout=10)
    assert response.status_code == 404
    assert "no proxy named 'nope' (known: default, cache, db)" in response.text
    assert requests.get(url + "/proxies/db/nothing", timeout=10).status_code == 404


def test_with_no_command_line_proxy_the_1x_routes_say_where_to_go(tmp_path, echo_backend):
    path = write(tmp_path, f"[proxy:only]\nproxy = 127.0.0.1:0\nbackend = {echo_backend.address}\n")
    config, _ = parse_server_config(["--config", path])
    with ServerThread(config, lambda s: [ControlServer(s, "127.0.0.1", 0).start()]) as thread:
        url = f"http://127.0.0.1:{thread.services[0].address[1]}"
        response = requests.get(url + "/behavior", timeout=10)
        assert response.status_code == 404
        assert "use /proxies/NAME/behavior" in response.text
        assert requests.get(url + "/proxies/only/behavior", timeout=10).ok


def test_a_server_config_of_one_proxy():
    config, _ = parse_config(["--backend", "127.0.0.1:1", "--timeout", "3"])
    server = ServerConfig.single(config)
    assert server.proxies == (config,) and server.timeout == 3.0 and server.http is False


# -- rules and scenarios of named proxies --------------------------------------------------------

RULED = """\
[vaurien]
backend = {web}
proxy = 127.0.0.1:0
protocol = http
scenario = 1m 100:error

[proxy:cache]
proxy = 127.0.0.1:0
backend = {redis}
protocol = redis
scenario = 2req 100:dummy; 100:error

[proxy:sessions]
proxy = 127.0.0.1:0
backend = {redis}
protocol = redis

[rule:slow-sessions]
proxies = cache, sessions
match = command=get key=session:*
behavior = 100:delay
delay.sleep = 0.3

[rule:pay]
match = method=POST path=/pay/*
behavior = error

[rule:far]
proxies = default, cache
match = client=10.0.0.0/8
behavior = reset
"""


def ruled_config(tmp_path, web="127.0.0.1:1", redis="127.0.0.1:2", argv=()):
    path = write(tmp_path, RULED.format(web=web, redis=redis))
    config, _ = parse_server_config(["--config", path, *argv])
    return {proxy.name: proxy for proxy in config.proxies}, config


def rule_names(proxy):
    return [rule.name for rule in proxy.rules]


def test_rules_go_to_the_proxies_they_name_and_scenarios_are_per_proxy(tmp_path):
    proxies, _ = ruled_config(tmp_path)
    assert {name: rule_names(proxy) for name, proxy in proxies.items()} == {
        "default": ["pay", "far"],  # no proxies =, or proxies = default
        "cache": ["slow-sessions", "far"],
        "sessions": ["slow-sessions"],
    }
    assert proxies["cache"].rules[0].options == {"delay": {"sleep": 0.3}}
    assert str(proxies["default"].scenario) == "1m 100:error"
    assert str(proxies["cache"].scenario) == "2req 100:dummy; 100:error"
    assert proxies["sessions"].scenario is None  # never inherited from [vaurien]
    # --rule replaces the rules of the command line's proxy, and only those.
    proxies, _ = ruled_config(tmp_path, argv=["--rule", "mine: path=/x => error"])
    assert rule_names(proxies["default"]) == ["mine"]
    assert rule_names(proxies["cache"]) == ["slow-sessions", "far"]
    # --scenario too.
    proxies, _ = ruled_config(tmp_path, argv=["--scenario", "5req 100:delay"])
    assert str(proxies["default"].scenario) == "5req 100:delay"
    assert str(proxies["cache"].scenario) == "2req 100:dummy; 100:error"


@pytest.mark.parametrize(
    "text, message",
    [
        (
            "[vaurien]\nbackend = 127.0.0.1:1\n"
            "[proxy:a]\nproxy = 127.0.0.1:0\nbackend = 127.0.0.1:1\n"
            "[rule:r]\nproxies = a, b\nmatch = client=::1\nbehavior = error\n",
            "[rule:r] proxies: no proxy named 'b' (known: default, a)",
        ),
        (
            "[proxy:a]\nproxy = 127.0.0.1:0\nbackend = 127.0.0.1:1\n"
            "[rule:r]\nproxies = default\nmatch = client=::1\nbehavior = error\n",
            "[rule:r] proxies: no proxy named 'default' (known: a)",
        ),
        (
            "[proxy:a]\nproxy = 127.0.0.1:0\nbackend = 127.0.0.1:1\n"
            "[rule:r]\nmatch = client=::1\nbehavior = error\n",
            "[rule:r] is for the proxy of [vaurien], which has no backend: name the proxies it "
            "is for with proxies = NAME, NAME (known: a)",
        ),
        (
            "[proxy:a]\nproxy = 127.0.0.1:0\nbackend = 127.0.0.1:1\nprotocol = redis\n"
            "[rule:r]\nproxies = a\nmatch = path=/x\nbehavior = error\n",
            "[proxy:a] rule 'r': unknown field 'path' for the redis protocol (known: client, "
            "command, key)",
        ),
        (
            "[proxy:a]\nproxy = 127.0.0.1:0\nbackend = 127.0.0.1:1\nscenario = 10x 100:error\n",
            "[proxy:a] scenario: scenario step 1 '10x 100:error': unknown unit 'x'",
        ),
        (
            "[proxy:a]\nproxy = 127.0.0.1:0\nbackend = 127.0.0.1:1\nscenario = 10s 100:eror\n",
            "[proxy:a] scenario step 1 '10s 100:eror': unknown behavior 'eror'",
        ),
    ],
)
def test_a_rule_for_no_proxy_or_a_bad_scenario_is_one_line(tmp_path, capsys, text, message):
    path = write(tmp_path, text)
    assert main(["--config", path]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"vaurien: error: {path}: ") and message in err, err
    assert err.count("\n") == 1


def resp(sock, command: bytes) -> bytes:
    """One inline redis command and its one-line answer."""
    sock.sendall(command + b"\r\n")
    answer = b""
    while not answer.endswith(b"\r\n"):
        chunk = sock.recv(1)
        assert chunk, answer
        answer += chunk
    if answer.startswith(b"$") and answer != b"$-1\r\n":
        answer += recv_exactly(sock, int(answer[1:-2]) + 2)
    return answer


def timed_resp(sock, command: bytes) -> tuple[bytes, float]:
    started = time.monotonic()
    answer = resp(sock, command)
    return answer, time.monotonic() - started


@pytest.fixture
def ruled(tmp_path, http_server, redis_server):
    _, config = ruled_config(tmp_path, web=http_server.address, redis=redis_server.address)

    def services(server):
        return [ControlServer(server, "127.0.0.1", 0).start()]

    with ServerThread(config, services) as thread:
        thread.url = f"http://127.0.0.1:{thread.services[0].address[1]}"
        yield thread


INJECTED = b"-ERR ping failed (error injected by vaurien)\r\n"


def test_named_proxies_run_their_rules_and_scenarios(ruled):
    with ruled.connect("sessions") as client:
        assert resp(client, b"SET session:1 alice") == b"+OK\r\n"
        answer, took = timed_resp(client, b"GET session:1")
        assert (answer, took >= 0.3) == (b"$5\r\nalice\r\n", True)
        assert [resp(client, b"PING") for _ in range(4)] == [b"+PONG\r\n"] * 4
    with ruled.connect("cache") as client:
        # The scenario: two picks pass, then errors; the rule comes first, and its picks are
        # not the step's.
        assert [resp(client, b"PING") for _ in range(2)] == [b"+PONG\r\n"] * 2
        answer, took = timed_resp(client, b"GET session:1")
        assert (answer, took >= 0.3) == (b"$5\r\nalice\r\n", True)
        assert resp(client, b"PING") == INJECTED
    stats = ruled.call(ruled.server.stats)
    assert (stats["sessions"]["rules"], stats["sessions"]["steps"]) == ({"slow-sessions": 1}, {})
    assert stats["cache"]["rules"] == {"slow-sessions": 1}
    assert stats["cache"]["steps"] == {"1": 2, "2": 1}
    # The default proxy's own scenario fails every request no rule takes.
    root = "http://{}:{}".format(*ruled.address("default"))
    assert requests.get(root + "/", timeout=10).status_code >= 500


def test_the_api_client_and_vaurienctl_drive_each_proxys_rules_and_scenario(ruled, capsys):
    from vaurien import ctl
    from vaurien.client import Client

    url, port = ruled.url, ruled.services[0].address[1]
    listed = requests.get(url + "/proxies/cache/rules", timeout=10).json()["rules"]
    assert [(rule["name"], rule["behavior"]) for rule in listed] == [
        ("slow-sessions", "delay"),
        ("far", "reset"),
    ]
    assert [r["name"] for r in requests.get(url + "/rules", timeout=10).json()["rules"]] == [
        "pay",
        "far",
    ]
    status = requests.get(url + "/proxies/cache/scenario", timeout=10).json()
    assert (status["scenario"], status["step"], status["left"]) == (
        "2req 100:dummy; 100:error",
        1,
        2,
    )
    assert requests.get(url + "/proxies/sessions/scenario", timeout=10).json() == {"scenario": None}

    # A change to one proxy leaves the others as they were.
    sessions = Client("127.0.0.1", port, proxy="sessions")
    sessions.set_rules(["ping: command=ping => 100:error"])
    assert [rule["name"] for rule in sessions.get_rules()] == ["ping"]
    sessions.set_scenario("1m 100:delay", delay={"sleep": 0})
    assert sessions.get_scenario()["scenario"] == "1m 100:delay"
    with ruled.connect("sessions") as client:
        assert resp(client, b"PING") == INJECTED
        assert resp(client, b"ECHO x") == b"$1\r\nx\r\n"
    assert [rule["name"] for rule in Client("127.0.0.1", port, proxy="cache").get_rules()] == [
        "slow-sessions",
        "far",
    ]
    assert requests.get(url + "/proxies/cache/scenario", timeout=10).json()["step"] == 1

    # vaurienctl --proxy NAME.
    host = f"--host={url}"
    assert ctl.main([host, "--proxy", "cache", "get-rules"]) == 0
    assert capsys.readouterr().out == (
        "slow-sessions: command=get key=session:* => delay\nfar: client=10.0.0.0/8 => reset\n"
    )
    assert ctl.main([host, "--proxy", "cache", "end-scenario"]) == 0
    assert ctl.main([host, "--proxy", "cache", "get-scenario"]) == 0
    assert capsys.readouterr().out == "Scenario ended\nno scenario\n"
    assert ctl.main([host, "--proxy", "cache", "clear-rules"]) == 0
    assert requests.get(url + "/proxies/cache/rules", timeout=10).json() == {"rules": []}
    assert len(requests.get(url + "/rules", timeout=10).json()["rules"]) == 2
    # PUT /proxies/NAME/behavior ends that proxy's scenario only.
    requests.put(url + "/proxies/sessions/behavior", json={"name": "dummy"}, timeout=10)
    assert sessions.get_scenario() == {"scenario": None}
    assert requests.get(url + "/scenario", timeout=10).json()["scenario"] == "1m 100:error"
    # A rule refused for one proxy's protocol names it, and changes nothing.
    response = requests.put(
        url + "/proxies/sessions/rules", json={"rules": ["path=/x => error"]}, timeout=10
    )
    assert response.status_code == 400
    assert "unknown field 'path' for the redis protocol" in response.text
    assert [rule["name"] for rule in sessions.get_rules()] == ["ping"]
