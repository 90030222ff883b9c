"""vaurien.Client against a real control API."""

from __future__ import annotations

import subprocess
import sys

import pytest
import requests

import vaurien
from control import ControlledProxy, GreetingServer, option_values
from support import free_port, recv_exactly
from vaurien.api import ControlServer
from vaurien.client import Client


@pytest.fixture
def controlled(echo_backend, start_proxy):
    proxy = ControlledProxy(
        start_proxy(echo_backend.address, plugin_options={("behavior", "delay"): {"sleep": 0.05}})
    )
    yield proxy
    proxy.stop()


@pytest.fixture
def client(controlled):
    return controlled.client()


def test_from_vaurien_import_client_is_the_client():
    from vaurien import Client as Exported

    assert Exported is Client
    assert vaurien.start_proxy.__module__ == "vaurien.util"
    with pytest.raises(AttributeError):
        vaurien.NoSuchThing  # noqa: B018


def test_importing_vaurien_does_not_import_requests():
    code = "import sys, vaurien; print('requests' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "False", result.stderr


def test_urls_follow_the_1x_client():
    client = Client()
    assert client.root_url == "http://localhost:8080"
    assert client.behavior_url == "http://localhost:8080/behavior"
    assert Client("::1", "8081", "https").root_url == "https://[::1]:8081"


def test_set_get_and_list(client, controlled):
    assert client.get_behavior() == "dummy"
    client.set_behavior("delay", sleep=0.5)
    assert client.get_behavior() == "delay"
    assert client.get_behavior_options() == {
        "delay": option_values("delay", sleep=0.5, before=True)
    }
    client.set_behavior("20:delay,10:error", warmup=2)
    assert client.get_behavior() == "20:delay,10:error,70:dummy"
    assert client.list_behaviors() == controlled.proxy.config.behaviors.names()
    assert "tcp" in client.list_protocols()


def test_unknown_behavior_raises_value_error_with_the_proxys_description(client):
    with pytest.raises(ValueError, match=r"unknown behavior 'nope' \(known: abort, "):
        client.set_behavior("nope")
    with pytest.raises(ValueError, match="unknown option 'slep' for delay"):
        client.set_behavior("delay", slep=1)
    with pytest.raises(ValueError, match="sleep: expected float"):
        client.set_behavior("delay", sleep="later")
    assert client.get_behavior() == "dummy"


def test_api_fields_are_not_options_and_behavior_may_be_one(client):
    with pytest.raises(ValueError, match="'name' is a field of the API"):
        client.set_behavior("delay", name="hang")
    with pytest.raises(ValueError, match="'options' is a field of the API"):
        client.set_behavior("delay", options={})
    with pytest.raises(ValueError, match="unknown option 'behavior' for delay"):
        client.set_behavior("delay", behavior="x")  # sent, and refused by the proxy
    assert client.get_behavior() == "dummy"


def test_with_behavior_restores_the_previous_behavior_and_its_options(client, controlled):
    client.set_behavior("delay", sleep=0.2, before=False)
    with client.with_behavior("blackout"):
        assert client.get_behavior() == "blackout"
        with controlled.connect() as sock:
            sock.sendall(b"x")
            assert sock.recv(10) == b""
    assert client.get_behavior() == "delay"
    assert client.get_behavior_options() == {
        "delay": option_values("delay", sleep=0.2, before=False)
    }


def test_with_behavior_restores_a_mix_with_its_options(client):
    client.set_behavior("30:delay,20:error", sleep=0.3, warmup=4)
    with client.with_behavior("delay", sleep=1):
        assert client.get_behavior_options() == {
            "delay": option_values("delay", sleep=1.0, before=True)
        }
    assert client.get_behavior() == "30:delay,20:error,50:dummy"
    assert client.get_behavior_options() == {
        "delay": option_values("delay", sleep=0.3, before=True),
        "error": option_values("error", inject=False, warmup=4),
        "dummy": option_values("dummy"),
    }


def test_with_behavior_restores_also_when_the_block_raises(client):
    with pytest.raises(RuntimeError, match="inside"):
        with client.with_behavior("hang"):
            assert client.get_behavior() == "hang"
            raise RuntimeError("inside")
    assert client.get_behavior() == "dummy"


def test_with_behavior_that_is_refused_changes_nothing(client):
    client.set_behavior("delay", sleep=0.4)
    with pytest.raises(ValueError, match="unknown behavior"):
        with client.with_behavior("nope"):
            raise AssertionError("the block must not run")
    assert client.get_behavior_options() == {
        "delay": option_values("delay", sleep=0.4, before=True)
    }


def test_backend_get_and_set(client, controlled, echo_backend):
    assert client.get_backend() == echo_backend.address
    other = GreetingServer(b"hello")
    try:
        client.set_backend(f"127.0.0.1:{other.address[1]}")
        assert client.get_backend() == f"127.0.0.1:{other.address[1]}"
        with controlled.connect() as sock:
            assert recv_exactly(sock, 5) == b"hello"
        with pytest.raises(ValueError, match="expected HOST:PORT"):
            client.set_backend("nowhere")
    finally:
        other.close()


def test_stats(client, controlled):
    with controlled.connect() as sock:
        sock.sendall(b"abc")
        assert recv_exactly(sock, 3) == b"abc"
    assert client.get_stats()["bytes_to_backend"] == 3


def test_a_control_api_on_ipv6_loopback(echo_backend, start_proxy):
    thread = start_proxy(echo_backend.address)
    server = thread.call(lambda: ControlServer(thread.proxy, "::1", 0).start())
    try:
        client = Client("::1", server.address[1])
        assert client.root_url == f"http://[::1]:{server.address[1]}"
        client.set_behavior("hang")
        assert client.get_behavior() == "hang"
    finally:
        thread.call(server.stop)


def test_an_unreachable_proxy_raises_connection_error():
    with pytest.raises(requests.ConnectionError):
        Client("127.0.0.1", free_port(), timeout=5).get_behavior()


def test_a_named_proxy_is_driven_under_its_name(tmp_path, echo_backend):
    from support import ServerThread
    from vaurien.cli import parse_server_config

    path = tmp_path / "vaurien.ini"
    path.write_text(
        f"[vaurien]\nproxy = 127.0.0.1:0\nbackend = {echo_backend.address}\n\n"
        f"[proxy:cache]\nproxy = 127.0.0.1:0\nbackend = {echo_backend.address}\n"
    )
    config, _ = parse_server_config(["--config", str(path)])
    with ServerThread(config, lambda s: [ControlServer(s, "127.0.0.1", 0).start()]) as thread:
        port = thread.services[0].address[1]
        cache = Client("127.0.0.1", port, proxy="cache")
        assert cache.behavior_url == f"http://127.0.0.1:{port}/proxies/cache/behavior"
        cache.set_behavior("delay", sleep=0.5)
        assert cache.get_behavior() == "delay"
        default = Client("127.0.0.1", port)
        assert default.get_behavior() == "dummy"
        assert list(default.list_proxies()) == ["default", "cache"]
        assert default.for_proxy("cache").get_behavior_options()["delay"]["sleep"] == 0.5
        with pytest.raises(ValueError, match="no proxy named 'nope'"):
            Client("127.0.0.1", port, proxy="nope").get_behavior()


def test_set_enabled_takes_the_proxy_down_and_up(client, controlled):
    assert client.is_enabled() is True
    client.set_enabled(False)
    assert client.is_enabled() is False and not controlled.proxy.enabled
    client.set_enabled(True)
    assert client.is_enabled() is True
    with controlled.connect() as sock:
        sock.sendall(b"up")
        assert recv_exactly(sock, 2) == b"up"


def test_the_token_goes_with_every_request_and_with_for_proxy(echo_backend, start_proxy):
    token = "a-token-of-the-tests"
    guarded = ControlledProxy(start_proxy(echo_backend.address), token=token)
    try:
        client = Client("127.0.0.1", guarded.port, token=token)
        client.set_behavior("blackout")
        client.for_proxy("default").set_enabled(False)
        assert guarded.proxy.behavior.names == ["blackout"] and not guarded.proxy.enabled
        with pytest.raises(PermissionError, match="needs its token"):
            Client("127.0.0.1", guarded.port, token="not-the-token").set_enabled(True)
    finally:
        guarded.stop()
