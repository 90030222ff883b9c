"""The control API, through real HTTP requests to a proxy's control server."""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import sys
import time

import pytest
import requests

from control import ControlledProxy, GreetingServer, known_options, option_values
from support import recv_exactly, wait_until
from vaurien.http_service import MAX_BODY, is_exposed, warn_if_exposed


@pytest.fixture
def controlled(echo_backend, start_proxy):
    """Factory: a proxy in front of the echo backend, with its control API."""
    started = []

    def start(**settings):
        proxy = ControlledProxy(start_proxy(echo_backend.address, **settings))
        started.append(proxy)
        return proxy

    yield start
    for proxy in started:
        proxy.stop()


@pytest.fixture
def api(controlled):
    return controlled()


def put(api, path, payload, **kwargs):
    data = payload if isinstance(payload, (str, bytes)) else json.dumps(payload)
    return requests.put(api.url + path, data=data, timeout=10, **kwargs)


def get(api, path):
    return requests.get(api.url + path, timeout=10)


def state(api):
    return get(api, "/behavior/options").json()


def echoes(sock, data=b"ping"):
    sock.sendall(data)
    return recv_exactly(sock, len(data)) == data


# -- GET and PUT /behavior ------------------------------------------------------------------


def test_get_behavior_is_the_name_when_one_behavior_has_every_event(api):
    response = get(api, "/behavior")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    assert response.json() == {"behavior": "dummy"}


def test_put_behavior_answers_ok_and_get_gives_the_name_or_the_spec(api):
    response = put(api, "/behavior", {"name": "delay", "sleep": 2})
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert get(api, "/behavior").json() == {"behavior": "delay"}
    assert put(api, "/behavior", {"name": "20:delay,10:error"}).status_code == 200
    assert get(api, "/behavior").json() == {"behavior": "20:delay,10:error,70:dummy"}
    assert put(api, "/behavior", {"name": "100:blackout"}).status_code == 200
    assert get(api, "/behavior").json() == {"behavior": "blackout"}


def test_new_behavior_applies_to_open_and_new_connections(api):
    with api.connect() as before:
        assert echoes(before)
        assert put(api, "/behavior", {"name": "blackout"}).status_code == 200
        before.sendall(b"dropped")
        assert before.recv(100) == b""  # closed by blackout: the data never came back
    with api.connect() as after:
        after.sendall(b"dropped too")
        assert after.recv(100) == b""
    assert put(api, "/behavior", {"name": "dummy"}).status_code == 200
    with api.connect() as again:
        assert echoes(again)


def test_options_are_in_force_and_a_put_without_options_restores_the_configured_ones(
    controlled,
):
    api = controlled(plugin_options={("behavior", "delay"): {"sleep": 0.05}})
    assert put(api, "/behavior", {"name": "delay", "sleep": 0.4}).status_code == 200
    assert state(api) == {
        "behavior": "delay",
        "options": {"delay": option_values("delay", sleep=0.4, before=True)},
    }
    with api.connect() as sock:
        start = time.monotonic()
        assert echoes(sock)
        assert time.monotonic() - start >= 0.4 * 2 - 0.05  # one delay each way
    assert put(api, "/behavior", {"name": "delay"}).status_code == 200
    assert state(api)["options"] == {"delay": option_values("delay", sleep=0.05, before=True)}


def test_flat_options_go_to_every_behavior_of_the_mix_that_has_them(api):
    body = {"name": "50:delay,50:error", "sleep": "0.5", "warmup": 3, "before": False}
    assert put(api, "/behavior", body).status_code == 200
    assert state(api) == {
        "behavior": "50:delay,50:error",
        "options": {
            "delay": option_values("delay", sleep=0.5, before=False),
            "error": option_values("error", inject=False, warmup=3),
        },
    }


def test_options_by_behavior_as_behavior_options_gives_them(api):
    body = {"name": "30:delay", "options": {"delay": {"sleep": 0.25}, "dummy": {}}}
    assert put(api, "/behavior", body).status_code == 200
    saved = state(api)
    assert saved["options"]["delay"] == option_values("delay", sleep=0.25)
    assert put(api, "/behavior", {"name": "blackout"}).status_code == 200
    assert put(api, "/behavior", {"name": saved["behavior"], "options": saved["options"]}).ok
    assert state(api) == saved


def test_behaviors_and_protocols_are_listed_sorted(api):
    behaviors = get(api, "/behaviors").json()["behaviors"]
    assert behaviors == sorted(behaviors)
    assert {"abort", "blackout", "delay", "dummy", "error", "hang", "transient"} <= set(behaviors)
    assert behaviors == api.proxy.config.behaviors.names()
    protocols = get(api, "/protocols").json()["protocols"]
    assert "tcp" in protocols and protocols == sorted(protocols)


# -- refused bodies: 400, the field named, nothing changed -------------------------------------

BAD_BEHAVIOR_BODIES = [
    ("{", "body", "not valid JSON"),
    (b"\xff\xfe", "body", "not valid JSON"),
    ("[1, 2]", "body", "must be a JSON object"),
    ("", "body", "not valid JSON"),
    ({}, "name", 'must have a "name"'),
    ({"sleep": 1}, "name", 'must have a "name"'),
    ({"name": 3}, "name", "must be a behavior name or a spec"),
    ({"name": ""}, "name", "must be a behavior name or a spec"),
    ({"name": "nope"}, "name", "unknown behavior 'nope' (known: abort, "),
    ({"name": "vaurien.behaviors.delay.Delay"}, "name", "unknown behavior"),
    ({"name": "20:delay,90:error"}, "name", "over 100"),
    ({"name": "20delay,10:error"}, "name", "missing ':'"),
    ({"name": "20:nope"}, "name", "unknown behavior 'nope'"),
    (
        {"name": "delay", "slep": 1},
        "slep",
        f"unknown option 'slep' for delay (known: {known_options('delay')})",
    ),
    (
        {"name": "blackout", "foo": "x"},
        "foo",
        f"unknown option 'foo' for blackout (known: {known_options('blackout')})",
    ),
    ({"name": "delay", "sleep": "soon"}, "sleep", "expected float"),
    ({"name": "delay", "sleep": True}, "sleep", "expected a number"),
    ({"name": "delay", "sleep": [1]}, "sleep", "expected a number"),
    ({"name": "delay", "before": "maybe"}, "before", "expected true or false"),
    ({"name": "error", "warmup": 1.5}, "warmup", "expected an integer"),
    ({"name": "delay", "sleep": -1}, "sleep", "expected a number of at least 0, got -1.0"),
    ({"name": "corrupt", "probability": 2}, "probability", "expected a number of at most 1"),
    ({"name": "transient", "agitate": -1}, "agitate", "expected a whole number of at least 0"),
    ({"name": "30:delay+nothing"}, "name", "unknown behavior 'nothing'"),
    ({"name": "delay", "options": [1]}, "options", "must map behavior names"),
    ({"name": "delay", "options": {"error": {}}}, "options", "not in the mix"),
    ({"name": "delay", "options": {"delay": 2}}, "options", "must be an object"),
    # By behavior, the field is BEHAVIOR.OPTION: the same option may be another behavior's.
    ({"name": "delay", "options": {"delay": {"slp": 2}}}, "delay.slp", "unknown option 'slp'"),
    ({"name": "delay", "options": {"delay": {"sleep": "x"}}}, "delay.sleep", "expected float"),
]


@pytest.mark.parametrize(("body", "field", "why"), BAD_BEHAVIOR_BODIES)
def test_bad_behavior_bodies_are_refused_naming_the_field_and_change_nothing(api, body, field, why):
    assert put(api, "/behavior", {"name": "delay", "sleep": 0.125}).ok
    before = state(api)
    response = put(api, "/behavior", body)
    assert response.status_code == 400
    assert response.json()["status"] == "error"
    [error] = response.json()["errors"]
    assert error["location"] == "body"
    assert error["name"] == field
    assert why in error["description"]
    assert state(api) == before


BAD_BACKEND_BODIES = [
    ({}, "backend", '"backend" must be "HOST:PORT"'),
    ({"backend": 8080}, "backend", '"backend" must be "HOST:PORT"'),
    ({"backend": "nohost"}, "backend", "expected HOST:PORT"),
    ({"backend": "localhost:99999"}, "backend", "port must be a number"),
    ({"backend": "::1:80"}, "backend", "in brackets"),
    ({"backend": "localhost:1", "timeout": 3}, "timeout", "unknown field 'timeout'"),
    ("nope", "body", "not valid JSON"),
]


@pytest.mark.parametrize(("body", "field", "why"), BAD_BACKEND_BODIES)
def test_bad_backend_bodies_are_refused_naming_the_field(api, body, field, why):
    before = get(api, "/backend").json()
    response = put(api, "/backend", body)
    assert response.status_code == 400
    assert response.json() == {
        "status": "error",
        "errors": [
            {
                "location": "body",
                "name": field,
                "description": response.json()["errors"][0]["description"],
            }
        ],
    }
    assert why in response.json()["errors"][0]["description"]
    assert get(api, "/backend").json() == before


# -- the request itself: 404, 405, 413 ---------------------------------------------------------


def test_unknown_path_is_404_in_json(api):
    response = get(api, "/nope")
    assert response.status_code == 404
    assert response.json()["errors"] == [
        {"location": "url", "name": "path", "description": "no such resource: /nope"}
    ]


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("DELETE", "/behavior", "GET, PUT"),
        ("POST", "/behavior", "GET, PUT"),
        ("PUT", "/stats", "GET"),
    ],
)
def test_wrong_method_is_405_with_allow(api, method, path, allowed):
    response = requests.request(method, api.url + path, data="{}", timeout=10)
    assert response.status_code == 405
    assert response.headers["Allow"] == allowed
    [error] = response.json()["errors"]
    assert error["name"] == "method" and method in error["description"]


def test_a_body_of_exactly_the_limit_is_read(api):
    body = json.dumps({"name": "blackout"}).encode()
    body += b" " * (MAX_BODY - len(body))
    assert len(body) == MAX_BODY
    assert put(api, "/behavior", body).status_code == 200
    assert get(api, "/behavior").json() == {"behavior": "blackout"}


def test_a_body_over_the_limit_is_refused_with_413(api):
    body = json.dumps({"name": "blackout"}).encode() + b" " * MAX_BODY
    response = put(api, "/behavior", body)
    assert response.status_code == 413
    [error] = response.json()["errors"]
    assert error["name"] == "body" and "over 65536 bytes" in error["description"]
    assert get(api, "/behavior").json() == {"behavior": "dummy"}


def test_a_chunked_body_over_the_limit_is_refused_with_413(api):
    chunks = (b" " * 16384 for _ in range(8))  # a generator: requests sends it chunked
    response = requests.put(api.url + "/behavior", data=chunks, timeout=10)
    assert response.status_code == 413
    assert response.json()["errors"][0]["name"] == "body"


@pytest.mark.parametrize("request_line", [b"PUT /behavior", b"POST /behavior", b"GET /nope"])
def test_a_huge_declared_body_is_refused_before_it_is_read(api, request_line):
    """Whatever the route: a 413, then the server closes without waiting for the body."""
    with socket.create_connection(("127.0.0.1", api.port), timeout=10) as sock:
        sock.sendall(
            request_line + b" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000000000\r\n\r\n{"
        )
        answer = b""
        while chunk := sock.recv(65536):  # until the server closes (a timeout fails the test)
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 413 ")
    assert b"Connection: close" in answer


def test_a_413_reaches_a_client_that_sent_its_whole_body_at_once(api):
    """The server closes after its 413 without reading the body, but not on top of it: the
    body already sent is read and dropped first, so no reset overtakes the answer."""
    body = b"[" * 150_000  # over the limit, under what the close lingers for
    for _ in range(20):
        with socket.create_connection(("127.0.0.1", api.port), timeout=10) as sock:
            sock.sendall(
                b"PUT /behavior HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
            )
            answer = b""
            while chunk := sock.recv(65536):  # a reset here fails the test
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 413 "), answer


# -- /backend ------------------------------------------------------------------------------


def test_put_backend_switches_new_connections_only(api, echo_backend):
    host, port = echo_backend.host, echo_backend.port
    assert get(api, "/backend").json() == {"backend": f"{host}:{port}"}
    other = GreetingServer(b"the other backend\n")
    try:
        with api.connect() as before:
            assert echoes(before)
            address = f"127.0.0.1:{other.address[1]}"
            response = put(api, "/backend", {"backend": address})
            assert response.status_code == 200 and response.json() == {"status": "ok"}
            assert get(api, "/backend").json() == {"backend": address}
            with api.connect() as after:
                assert recv_exactly(after, 18) == b"the other backend\n"
            assert echoes(before, b"still the echo")
    finally:
        other.close()


# -- /stats --------------------------------------------------------------------------------


def test_stats_count_connections_bytes_events_and_behaviors(api):
    with api.connect() as sock:
        assert echoes(sock, b"12345")
        active = get(api, "/stats").json()
        assert active["active_connections"] == 1
    wait_until(lambda: get(api, "/stats").json()["active_connections"] == 0)
    stats = get(api, "/stats").json()
    assert stats["total_connections"] == 1
    assert stats["bytes_to_backend"] == stats["bytes_to_client"] == 5
    assert stats["events_to_backend"] >= 1 and stats["events_to_client"] >= 1
    events = stats["events_to_backend"] + stats["events_to_client"]
    assert stats["behaviors"] == {"dummy": events}


# -- where it listens -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "exposed"),
    [
        ("127.0.0.1", False),
        ("127.0.0.2", False),
        ("::1", False),
        ("0.0.0.0", True),
        ("::", True),
        ("192.0.2.7", True),
        ("fe80::1%eth0", True),
    ],
)
def test_only_loopback_addresses_are_private(host, exposed):
    assert is_exposed(host) is exposed


def test_a_non_loopback_address_is_warned_about(caplog):
    with caplog.at_level(logging.WARNING, logger="vaurien.http_service"):
        warn_if_exposed("0.0.0.0", 8080)
        warn_if_exposed("127.0.0.1", 8080)
    [record] = caplog.records
    assert record.levelno == logging.WARNING
    assert "0.0.0.0:8080" in record.getMessage()
    assert "anyone who can reach it can reconfigure the proxies" in record.getMessage()


def test_the_loopback_control_api_logs_no_warning(controlled, caplog):
    with caplog.at_level(logging.INFO, logger="vaurien.http_service"):
        api = controlled()
    assert [r.levelno for r in caplog.records if r.name == "vaurien.http_service"] == [logging.INFO]
    assert api.url in caplog.records[-1].getMessage()


def test_vaurien_http_fails_in_one_line_when_the_port_is_taken(echo_backend):
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "vaurien",
                "--proxy",
                "127.0.0.1:0",
                "--backend",
                echo_backend.address,
                "--http",
                "--http-host",
                "127.0.0.1",
                "--http-port",
                str(port),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert (
        last
        == f"vaurien: error: control API: cannot listen on 127.0.0.1:{port}: Address already in use"
    )
    assert "Traceback" not in result.stderr


# -- the option tables -----------------------------------------------------------------------


def test_behaviors_gives_every_option_table_as_the_registry_declares_it(api):
    answer = get(api, "/behaviors").json()
    registry = api.proxy.config.behaviors
    assert answer["behaviors"] == registry.names()
    assert set(answer["options"]) == set(registry.names())
    for name in registry.names():
        expected = {key: option.to_json() for key, option in registry.options(name).items()}
        assert answer["options"][name] == json.loads(json.dumps(expected)), name
    delay = answer["options"]["delay"]
    assert delay["sleep"] == {
        "description": registry.options("delay")["sleep"].description,
        "type": "float",
        "default": 1.0,
        "minimum": 0,
    }
    assert delay["before"]["type"] == "bool" and delay["before"]["default"] is True
    assert delay["direction"]["choices"] == list(registry.options("delay")["direction"].choices)
    assert answer["options"]["corrupt"]["probability"]["maximum"] == 1


def test_an_options_default_is_the_value_this_proxy_uses_when_it_is_not_given(controlled):
    api = controlled(plugin_options={("behavior", "delay"): {"sleep": 0.05}})
    assert get(api, "/behaviors").json()["options"]["delay"]["sleep"]["default"] == 0.05
    assert put(api, "/behavior", {"name": "delay"}).ok
    assert state(api)["options"]["delay"]["sleep"] == 0.05


# -- /enabled ------------------------------------------------------------------------------


def test_put_enabled_takes_the_proxy_down_and_up_on_the_same_address(api):
    address = api.thread.address
    assert get(api, "/enabled").json() == {"enabled": True}
    with api.connect() as sock:
        assert echoes(sock)
        assert put(api, "/enabled", {"enabled": False}).json() == {"status": "ok"}
        assert sock.recv(10) == b""  # its sessions are closed
    assert get(api, "/enabled").json() == {"enabled": False}
    assert get(api, "/proxies/default").json()["enabled"] is False
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(address, timeout=10)
    assert put(api, "/enabled", {"enabled": False}).ok  # already down: nothing to do
    assert put(api, "/enabled", {"enabled": True}).ok
    assert api.thread.address == address
    with api.connect() as sock:
        assert echoes(sock)


@pytest.mark.parametrize(
    ("body", "field", "why"),
    [
        ({}, "enabled", '"enabled" must be true or false, got None'),
        ({"enabled": "no"}, "enabled", "got 'no'"),
        ({"enabled": 0}, "enabled", "got 0"),
        ({"enabled": True, "listen": "x"}, "listen", "unknown field 'listen'"),
    ],
)
def test_bad_enabled_bodies_are_refused(api, body, field, why):
    response = put(api, "/enabled", body)
    assert response.status_code == 400
    [error] = response.json()["errors"]
    assert error["name"] == field and why in error["description"]
    assert get(api, "/enabled").json() == {"enabled": True}


def test_enabling_a_proxy_whose_address_was_taken_meanwhile_is_a_409(api):
    address = api.thread.address
    assert put(api, "/enabled", {"enabled": False}).ok
    with socket.create_server(address):
        response = put(api, "/enabled", {"enabled": True})
    assert response.status_code == 409
    [error] = response.json()["errors"]
    assert error["name"] == "enabled" and "cannot listen" in error["description"]
    assert get(api, "/enabled").json() == {"enabled": False}


# -- who may change things: the token and the origin ---------------------------------------

TOKEN = "s3cret-token-for-tests"


@pytest.fixture
def guarded(echo_backend, start_proxy):
    """A proxy whose control API requires ``TOKEN`` for changes."""
    controlled = ControlledProxy(start_proxy(echo_backend.address), token=TOKEN)
    yield controlled
    controlled.stop()


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer wrong-token-123", f"Basic {TOKEN}", f"Bearer {TOKEN}x", "Bearer"],
)
def test_a_change_without_the_token_is_a_401_and_changes_nothing(guarded, authorization):
    headers = {"Authorization": authorization} if authorization is not None else {}
    for path, body in (("/behavior", {"name": "blackout"}), ("/enabled", {"enabled": False})):
        response = put(guarded, path, body, headers=headers)
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"] == 'Bearer realm="vaurien"'
        [error] = response.json()["errors"]
        assert error == {
            "location": "header",
            "name": "Authorization",
            "description": "this API needs its token for changes: Authorization: Bearer TOKEN",
        }
    assert get(guarded, "/behavior").json() == {"behavior": "dummy"}  # reading needs none
    assert get(guarded, "/enabled").json() == {"enabled": True}


def test_a_change_with_the_token_is_done(guarded):
    headers = {"Authorization": f"Bearer {TOKEN}"}
    assert put(guarded, "/behavior", {"name": "blackout"}, headers=headers).ok
    assert get(guarded, "/behavior").json() == {"behavior": "blackout"}
    client = guarded.client()  # vaurien.Client(token=...) sends it
    client.set_behavior("dummy")
    assert client.get_behavior() == "dummy"


def test_the_client_without_the_token_gets_a_permission_error(guarded):
    from vaurien.client import Client

    client = Client("127.0.0.1", guarded.port)
    assert client.get_behavior() == "dummy"
    with pytest.raises(PermissionError, match="needs its token"):
        client.set_behavior("blackout")


@pytest.mark.parametrize(
    "origin",
    ["http://attacker.example", "null", "http://127.0.0.1", "https://127.0.0.1:1", "file://"],
)
def test_a_change_from_a_page_of_another_origin_is_a_403_even_with_the_token(guarded, origin):
    headers = {"Authorization": f"Bearer {TOKEN}", "Origin": origin}
    response = put(guarded, "/behavior", {"name": "blackout"}, headers=headers)
    assert response.status_code == 403
    [error] = response.json()["errors"]
    assert error["location"] == "header" and error["name"] == "Origin"
    assert error["description"].startswith(f"cross-site request refused: a page of {origin} ")
    assert get(guarded, "/behavior").json() == {"behavior": "dummy"}


def test_a_change_from_the_apis_own_page_is_done(api):
    origin = f"http://127.0.0.1:{api.port}"
    assert put(api, "/behavior", {"name": "blackout"}, headers={"Origin": origin}).ok
    assert get(api, "/behavior").json() == {"behavior": "blackout"}


def test_without_a_token_only_pages_on_loopback_addresses_may_change_things(api, guarded):
    # A name that is not localhost may be a DNS rebinding: attacker.example resolving to
    # 127.0.0.1 makes the attacker's page the API's own origin for the browser.
    host = f"dashboard.example:{api.port}"
    headers = {"Host": host, "Origin": f"http://{host}"}
    response = put(api, "/behavior", {"name": "blackout"}, headers=headers)
    assert response.status_code == 403
    assert "only with its token (http_token)" in response.json()["errors"][0]["description"]
    localhost = f"localhost:{api.port}"
    headers = {"Host": localhost, "Origin": f"http://{localhost}"}
    assert put(api, "/behavior", {"name": "blackout"}, headers=headers).ok
    host = f"dashboard.example:{guarded.port}"
    headers = {"Host": host, "Origin": f"http://{host}", "Authorization": f"Bearer {TOKEN}"}
    assert put(guarded, "/behavior", {"name": "blackout"}, headers=headers).ok


def test_http_token_comes_from_the_command_line_or_the_config_file(tmp_path):
    from vaurien.cli import main, parse_config

    config, _ = parse_config(["--backend", "127.0.0.1:1", "--http-token", TOKEN])
    assert config.http_token == TOKEN
    ini = tmp_path / "vaurien.ini"
    ini.write_text(f"[vaurien]\nbackend = 127.0.0.1:1\nhttp_token = {TOKEN}\n")
    assert parse_config(["--config", str(ini)])[0].http_token == TOKEN
    assert parse_config(["--backend", "127.0.0.1:1"])[0].http_token is None
    assert main(["--backend", "127.0.0.1:1", "--http-token", "short"]) == 2


def test_the_served_control_api_requires_the_configured_token():
    from support import ServerThread, free_port
    from vaurien.proxy_config import ServerConfig
    from vaurien.serving import start_services

    port = free_port()
    settings = {"http": True, "http_host": "127.0.0.1", "http_port": port, "http_token": TOKEN}
    config = ServerConfig(settings)
    with ServerThread(config, start_services):
        url = f"http://127.0.0.1:{port}/proxies"
        assert requests.get(url, timeout=10).ok
        response = requests.put(url + "/nope/behavior", json={"name": "dummy"}, timeout=10)
        assert response.status_code == 401
        headers = {"Authorization": f"Bearer {TOKEN}"}
        response = requests.put(url + "/nope/behavior", json={}, headers=headers, timeout=10)
        assert response.status_code == 404  # past the token: no proxy of that name
