"""The Toxiproxy-compatible API, driven by toxiproxy-python (a real, unchanged Toxiproxy client)
and by raw HTTP where the client has no call for it, against a running Vaurien; every toxic is
measured on real connections to real backends."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time

import pytest
import requests
from toxiproxy import Toxiproxy
from toxiproxy.exceptions import InvalidToxic, NotFound, ProxyExists

from support import ServerThread, free_port, recv_exactly, wait_until
from vaurien.proxy_config import ServerConfig
from vaurien.toxiproxy_api import TOXIPROXY_VERSION, ToxiproxyServer


def start(settings=None):
    """A Vaurien with no proxy and its Toxiproxy API on a free port; a client pointed at it."""

    def services(server):
        return [ToxiproxyServer(server, "127.0.0.1", 0).start()]

    thread = ServerThread(ServerConfig(settings or {}), services).start()
    host, port = thread.services[0].address
    thread.url = f"http://{host}:{port}"
    client = Toxiproxy()
    client.update_api_consumer(host, port)
    return thread, client


@pytest.fixture
def vaurien():
    thread, client = start()
    thread.client = client
    yield thread
    thread.stop()


def connect(listen: str, timeout: float = 10.0) -> socket.socket:
    host, _, port = listen.rpartition(":")
    return socket.create_connection((host, int(port)), timeout=timeout)


def refused(listen: str) -> bool:
    try:
        connect(listen, 2).close()
    except ConnectionRefusedError:
        return True
    except OSError:  # accepted, then reset (the listener closed with it in its queue)
        pass
    return False


def round_trip(sock: socket.socket, data: bytes = b"ping") -> float:
    start = time.monotonic()
    sock.sendall(data)
    assert recv_exactly(sock, len(data)) == data
    return time.monotonic() - start


def api(vaurien, method, path, body=None, **kwargs):
    kwargs.setdefault("timeout", 10)
    if body is not None:
        kwargs["data"] = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return requests.request(method, vaurien.url + path, **kwargs)


# -- proxies ---------------------------------------------------------------------------------------


def test_create_list_disable_enable_delete(vaurien, echo_backend):
    client = vaurien.client
    assert client.proxies() == {}
    proxy = client.create(upstream=echo_backend.address, name="echo")
    assert proxy.enabled is True and proxy.listen.startswith("127.0.0.1:")
    assert not proxy.listen.endswith(":0")  # the port bound is returned
    assert list(client.proxies()) == ["echo"]
    with connect(proxy.listen) as sock:
        round_trip(sock)

    proxy.disable()
    assert refused(proxy.listen)
    assert client.get_proxy("echo").enabled is False
    proxy.enable()
    with connect(proxy.listen) as sock:  # the same port again
        round_trip(sock)

    with proxy.down():
        assert refused(proxy.listen)
    assert not refused(proxy.listen)

    assert proxy.destroy() is True
    assert client.proxies() == {}
    assert refused(proxy.listen)
    with pytest.raises(NotFound):
        proxy.destroy()


def test_disable_closes_the_open_connections(vaurien, echo_backend):
    proxy = vaurien.client.create(upstream=echo_backend.address, name="echo")
    with connect(proxy.listen) as sock:
        round_trip(sock)
        proxy.disable()
        assert sock.recv(10) == b""


def test_a_proxy_that_exists_is_a_conflict(vaurien, echo_backend):
    vaurien.client.create(upstream=echo_backend.address, name="echo")
    with pytest.raises(ProxyExists):
        vaurien.client.create(upstream=echo_backend.address, name="echo")
    response = api(vaurien, "POST", "/proxies", {"name": "echo", "upstream": "127.0.0.1:1"})
    assert (response.status_code, response.json()) == (
        409,
        {"error": "proxy already exists", "status": 409},
    )


def test_changing_listen_or_upstream_restarts_the_proxy(vaurien, echo_backend, recording_backend):
    proxy = vaurien.client.create(upstream=echo_backend.address, name="p")
    with connect(proxy.listen) as sock:
        round_trip(sock)
        upstream = "{}:{}".format(*recording_backend.address)
        response = api(vaurien, "PATCH", "/proxies/p", {"upstream": upstream})
        assert response.json()["upstream"] == upstream
        assert sock.recv(10) == b""  # restarted: its connections were closed
    with connect(proxy.listen) as sock:
        round_trip(sock, b"there")
    assert recording_backend.connections[0].data == b"there"

    listen = f"127.0.0.1:{free_port()}"
    response = api(vaurien, "POST", "/proxies/p", {"listen": listen})
    assert response.json()["listen"] == listen
    assert refused(proxy.listen)
    with connect(listen) as sock:
        round_trip(sock)


def test_populate_twice_keeps_proxies_toxics_and_connections(vaurien, echo_backend):
    ports = [free_port(), free_port()]
    config = [
        {"name": f"p{i}", "listen": f"127.0.0.1:{port}", "upstream": echo_backend.address}
        for i, port in enumerate(ports)
    ]
    response = api(vaurien, "POST", "/populate", config)
    assert response.status_code == 201
    assert [p["name"] for p in response.json()["proxies"]] == ["p0", "p1"]
    proxy = vaurien.client.get_proxy("p0")
    proxy.add_toxic(type="latency", attributes={"latency": 1})
    with connect(proxy.listen) as sock:
        round_trip(sock)
        again = api(vaurien, "POST", "/populate", config)
        assert again.status_code == 201
        assert again.json()["proxies"][0]["toxics"][0]["name"] == "latency_downstream"
        round_trip(sock)  # the connection is still open
    # toxiproxy-python's own populate (proxy by proxy) finds them all there: nothing made.
    assert vaurien.client.populate(config) == []
    assert list(vaurien.client.proxies()) == ["p0", "p1"]
    # A changed upstream makes that proxy anew (its toxics go), the other stays.
    config[0]["upstream"] = "127.0.0.1:1"
    response = api(vaurien, "POST", "/populate", config)
    assert [p["toxics"] for p in response.json()["proxies"]] == [[], []]
    assert response.json()["proxies"][0]["upstream"] == "127.0.0.1:1"


def test_populate_checks_everything_before_it_changes_anything(vaurien, echo_backend):
    with socket.create_server(("127.0.0.1", 0)) as taken:
        busy = f"127.0.0.1:{taken.getsockname()[1]}"
        for bad, status, error in [
            ([{"name": "a", "upstream": echo_backend.address}, {"name": "", "upstream": "x:1"}],
             400, "missing required field: name at proxy 2"),
            ([{"name": "a", "upstream": echo_backend.address}, {"name": "b", "listen": "local373",
              "upstream": "x:1"}], 400, "bad request body: listen: 'local373': expected HOST:PORT"),
            ([{"name": "a", "upstream": echo_backend.address},
              {"name": "b", "listen": busy, "upstream": "x:1"}], 409, "Address already in use"),
            ([{"name": "a", "upstream": echo_backend.address,
               "toxics": [{"type": "latency", "attributes": {"latency": -1}}]}], 400, "latency"),
            ({"name": "a"}, 400, "expected an array of proxies"),
        ]:  # fmt: skip
            response = api(vaurien, "POST", "/populate", bad)
            assert response.status_code == status, response.text
            assert error in response.json()["error"]
            assert response.json()["status"] == status
            assert vaurien.client.proxies() == {}  # nothing was made


def test_reset_enables_every_proxy_and_removes_every_toxic(vaurien, echo_backend):
    one = vaurien.client.create(upstream=echo_backend.address, name="one")
    two = vaurien.client.create(upstream=echo_backend.address, name="two")
    one.add_toxic(type="latency", attributes={"latency": 500})
    two.disable()
    assert vaurien.client.reset() is True
    assert one.toxics() == {}
    assert vaurien.client.get_proxy("two").enabled is True
    with connect(one.listen) as sock:
        assert round_trip(sock) < 0.4
    with connect(two.listen) as sock:
        round_trip(sock)


def test_version_is_toxiproxy_2(vaurien):
    body = json.loads(vaurien.client.version())
    assert body["version"] == TOXIPROXY_VERSION and body["version"].startswith("2.")


# -- toxics, measured ------------------------------------------------------------------------------


def test_latency_downstream_is_within_30ms_of_what_was_asked(vaurien, echo_backend):
    proxy = vaurien.client.create(upstream=echo_backend.address, name="echo")
    proxy.add_toxic(type="latency", stream="downstream", attributes={"latency": 200})
    assert proxy.toxics()["latency_downstream"].attributes == {"latency": 200, "jitter": 0}
    with connect(proxy.listen) as sock:
        times = [round_trip(sock) for _ in range(5)]
    median = statistics.median(times)
    assert 0.2 <= median <= 0.23, times


def test_bandwidth_is_the_rate_asked_in_kb_per_second(vaurien, echo_backend):
    proxy = vaurien.client.create(upstream=echo_backend.address, name="echo")
    proxy.add_toxic(type="bandwidth", attributes={"rate": 100})  # 100 KB/s = 100,000 B/s
    payload = os.urandom(250_000)
    with connect(proxy.listen, timeout=30) as sock:
        threading.Thread(target=sock.sendall, args=(payload,), daemon=True).start()
        first = sock.recv(65536)
        start = time.monotonic()
        rest = recv_exactly(sock, len(payload) - len(first))
        elapsed = time.monotonic() - start
    assert first + rest == payload
    rate = len(rest) / elapsed
    assert 0.85 * 100_000 <= rate <= 1.1 * 100_000, rate


def test_timeout_drops_the_data_then_closes(vaurien, echo_backend):
    proxy = vaurien.client.create(upstream=echo_backend.address, name="echo")
    proxy.add_toxic(type="timeout", attributes={"timeout": 300})
    with connect(proxy.listen) as sock:
        start = time.monotonic()
        sock.sendall(b"lost")
        assert sock.recv(10) == b""
        assert 0.3 <= time.monotonic() - start < 5


def test_reset_peer_resets_the_connection(vaurien, echo_backend):
    proxy = vaurien.client.create(upstream=echo_backend.address, name="echo")
    proxy.add_toxic(type="reset_peer", attributes={"timeout": 100})
    with connect(proxy.listen) as sock:
        start = time.monotonic()
        sock.sendall(b"hello")
        with pytest.raises(ConnectionResetError):
            sock.recv(10)
        assert time.monotonic() - start >= 0.1


def test_limit_data_lets_the_exact_byte_count_through(vaurien, echo_backend):
    proxy = vaurien.client.create(upstream=echo_backend.address, name="echo")
    proxy.add_toxic(type="limit_data", attributes={"bytes": 1234})
    with connect(proxy.listen) as sock:
        sock.sendall(os.urandom(5000))
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    assert len(received) == 1234


def test_latency_and_bandwidth_stack(vaurien, echo_backend):
    proxy = vaurien.client.create(upstream=echo_backend.address, name="echo")
    proxy.add_toxic(type="latency", attributes={"latency": 300})
    proxy.add_toxic(type="bandwidth", attributes={"rate": 50})
    payload = os.urandom(50_000)  # a second's worth
    with connect(proxy.listen, timeout=30) as sock:
        start = time.monotonic()
        sock.sendall(payload)
        first = sock.recv(65536)
        first_at = time.monotonic() - start
        received = first + recv_exactly(sock, len(payload) - len(first))
        elapsed = time.monotonic() - start
    assert received == payload
    assert first_at >= 0.3  # the latency first
    assert 1.2 <= elapsed <= 1.3 + 0.5, elapsed  # then the rate: 300 ms + 1 s


def test_toxics_changed_on_an_open_connection_take_effect(vaurien, echo_backend):
    proxy = vaurien.client.create(upstream=echo_backend.address, name="echo")
    with connect(proxy.listen) as sock:
        assert round_trip(sock) < 0.15
        proxy.add_toxic(type="latency", name="slow", attributes={"latency": 250})
        assert round_trip(sock) >= 0.25
        response = api(
            vaurien, "PATCH", "/proxies/echo/toxics/slow", {"attributes": {"latency": 500}}
        )
        assert response.json()["attributes"] == {"latency": 500, "jitter": 0}
        assert round_trip(sock) >= 0.5
        proxy.destroy_toxic("slow")
        assert round_trip(sock) < 0.15


def test_an_update_keeps_what_it_does_not_say(vaurien, echo_backend):
    proxy = vaurien.client.create(upstream=echo_backend.address, name="echo")
    proxy.add_toxic(type="latency", toxicity=0.5, attributes={"latency": 100, "jitter": 10})
    response = api(vaurien, "PATCH", "/proxies/echo/toxics/latency_downstream", {"toxicity": 0.25})
    assert response.json() == {
        "attributes": {"latency": 100, "jitter": 10},
        "name": "latency_downstream",
        "type": "latency",
        "stream": "downstream",
        "toxicity": 0.25,
    }
    response = api(vaurien, "POST", "/proxies/echo/toxics/latency_downstream",
                   {"attributes": {"latency": 7}})  # fmt: skip
    assert response.json()["attributes"] == {"latency": 7, "jitter": 10}
    assert response.json()["toxicity"] == 0.25


def test_vaurien_behaviors_are_toxic_types_with_their_own_options(vaurien, redis_server):
    body = {"name": "cache", "upstream": redis_server.address, "protocol": "redis"}
    assert api(vaurien, "POST", "/proxies", body).status_code == 201
    proxy = vaurien.client.get_proxy("cache")
    proxy.add_toxic(type="error", stream="upstream", attributes={"warmup": 1})
    toxic = proxy.toxics()["error_upstream"]
    assert toxic.attributes == {"inject": False, "warmup": 1}
    with connect(proxy.listen) as sock:
        sock.sendall(b"*1\r\n$4\r\nPING\r\n")
        assert recv_exactly(sock, 7) == b"+PONG\r\n"  # the warm-up call passes
        sock.sendall(b"*1\r\n$4\r\nPING\r\n")
        assert sock.recv(100).startswith(b"-ERR ")  # then the protocol's own error


# -- where Vaurien is right ------------------------------------------------------------------------


def test_half_close_is_passed_on(vaurien, echo_backend):
    proxy = vaurien.client.create(upstream=echo_backend.address, name="echo")
    proxy.add_toxic(type="latency", attributes={"latency": 10})
    with connect(proxy.listen) as sock:
        sock.sendall(b"last words")
        sock.shutdown(socket.SHUT_WR)  # the echo server answers once it sees this end
        assert recv_exactly(sock, 10) == b"last words"
        assert sock.recv(10) == b""


def test_reset_peer_at_toxicity_0_never_resets(vaurien, echo_backend):
    proxy = vaurien.client.create(upstream=echo_backend.address, name="echo")
    proxy.add_toxic(type="reset_peer", toxicity=0, attributes={"timeout": 0})
    for _ in range(20):
        with connect(proxy.listen) as sock:
            round_trip(sock)
            sock.shutdown(socket.SHUT_WR)
            assert sock.recv(10) == b""  # a clean end of stream, no reset, ever


def draws(seed):
    """Which of 30 connections a limit_data toxic at toxicity 0.5 joined, under ``seed``."""
    thread, client = start({"seed": seed})
    backend = socket.create_server(("127.0.0.1", 0))
    seen = []
    try:
        upstream = f"127.0.0.1:{backend.getsockname()[1]}"
        echo = threading.Thread(target=_echo_forever, args=(backend,), daemon=True)
        echo.start()
        proxy = client.create(upstream=upstream, name="drawn")
        proxy.add_toxic(type="limit_data", toxicity=0.5, attributes={"bytes": 2})
        for _ in range(30):
            with connect(proxy.listen) as sock:
                sock.sendall(b"12345")
                received = b""
                while len(received) < 5 and (chunk := sock.recv(10)):
                    received += chunk
                seen.append(len(received) == 2)
    finally:
        backend.close()
        thread.stop()
    return seen


def _echo_forever(listener):
    while True:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        with conn:
            try:
                while data := conn.recv(100):
                    conn.sendall(data)
            except OSError:
                pass


def test_the_seed_reproduces_toxicity_draws():
    first, again, other = draws(1234), draws(1234), draws(99)
    assert first == again
    assert 5 <= sum(first) <= 25  # about half joined
    assert first != other


def test_startup_file_toxics_apply(tmp_path, echo_backend):
    listen = f"127.0.0.1:{free_port()}"
    api_port = free_port()
    path = tmp_path / "toxiproxy.json"
    path.write_text(
        json.dumps(
            [
                {
                    "name": "slow",
                    "listen": listen,
                    "upstream": echo_backend.address,
                    "toxics": [{"type": "latency", "attributes": {"latency": 300}}],
                }
            ]
        )
    )
    argv = [sys.executable, "-m", "vaurien", "--toxiproxy-api", f"127.0.0.1:{api_port}"]
    argv += ["--toxiproxy-config", str(path), "--log-level", "warning"]
    process = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: not refused(f"127.0.0.1:{api_port}") or process.poll() is not None)
        assert process.poll() is None, process.stderr.read()
        client = Toxiproxy()
        client.update_api_consumer("127.0.0.1", api_port)
        assert list(client.get_proxy("slow").toxics()) == ["latency_downstream"]
        with connect(listen) as sock:
            assert round_trip(sock) >= 0.3
    finally:
        process.terminate()
        process.wait(10)


def test_an_empty_server_starts_like_toxiproxy_server():
    api_port = free_port()
    argv = [sys.executable, "-m", "vaurien", "--toxiproxy-api", f"127.0.0.1:{api_port}"]
    process = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: not refused(f"127.0.0.1:{api_port}") or process.poll() is not None)
        assert process.poll() is None, process.stderr.read()
        assert requests.get(f"http://127.0.0.1:{api_port}/proxies", timeout=10).json() == {}
    finally:
        process.terminate()
        assert process.wait(10) == 0


def test_a_dead_upstream_refuses_new_connections_with_the_flag(vaurien):
    port = free_port()
    body = {"name": "db", "upstream": f"127.0.0.1:{port}", "refuse_when_backend_down": True}
    listen = api(vaurien, "POST", "/proxies", body).json()["listen"]
    wait_until(lambda: refused(listen), what="the proxy to refuse while its upstream is down")
    assert vaurien.client.get_proxy("db").enabled is True  # up, only not listening
    with socket.create_server(("127.0.0.1", port)):
        wait_until(lambda: not refused(listen), what="the proxy to listen again")
    # Without the flag (Toxiproxy's way), a client is accepted, then closed.
    plain = vaurien.client.create(upstream=f"127.0.0.1:{port}", name="plain")
    with connect(plain.listen) as sock:
        assert sock.recv(10) == b""


# -- errors, as Toxiproxy shapes them --------------------------------------------------------------


@pytest.fixture
def echo_proxy(vaurien, echo_backend):
    vaurien.client.create(upstream=echo_backend.address, name="echo")
    return vaurien.client.get_proxy("echo")


BAD_TOXICS = [
    ({"type": "latency", "stream": "sideways"}, 400,
     "stream was invalid, can be either upstream or downstream"),
    ({"type": "walrus"}, 400, "invalid toxic type: 'walrus' (known: latency, bandwidth"),
    ({}, 400, "invalid toxic type: None"),
    ({"type": "latency", "attributes": {"latency": -5}}, 400,
     "latency: expected a whole number of ms from 0, got -5"),
    ({"type": "latency", "attributes": {"latency": 1.5}}, 400, "got 1.5"),
    ({"type": "latency", "attributes": {"latency": "100"}}, 400, "got '100'"),
    ({"type": "latency", "attributes": {"lag": 1}}, 400, "latency has no attribute 'lag'"),
    ({"type": "latency", "attributes": [1]}, 400, "attributes must be an object"),
    ({"type": "latency", "toxicity": 1.5}, 400, "toxicity must be a number from 0 to 1"),
    ({"type": "latency", "toxicity": True}, 400, "toxicity must be a number from 0 to 1"),
    ({"type": "latency", "colour": "red"}, 400, "unknown field 'colour'"),
    ({"type": "latency", "name": "a/b"}, 400, "'a/b' is not a toxic name"),
    ({"type": "error", "attributes": {"warmup": -1}}, 400, "warmup: expected a whole number"),
    ({"type": "error", "attributes": {"direction": "both"}}, 400, "direction is the stream's"),
    ({"type": "delay", "attributes": {"sleepy": 1}}, 400, "unknown option 'sleepy'"),
    ([1, 2], 400, "bad request body: the body must be a JSON object"),
]  # fmt: skip


@pytest.mark.parametrize(("body", "status", "error"), BAD_TOXICS)
def test_bad_toxics_are_refused_in_toxiproxys_shape_and_change_nothing(
    vaurien, echo_proxy, body, status, error
):
    echo_proxy.add_toxic(type="latency", name="kept", attributes={"latency": 1})
    before = api(vaurien, "GET", "/proxies").json()
    response = api(vaurien, "POST", "/proxies/echo/toxics", body)
    assert response.status_code == status
    assert set(response.json()) == {"error", "status"}
    assert error in response.json()["error"] and response.json()["status"] == status
    assert api(vaurien, "GET", "/proxies").json() == before


def test_the_client_raises_its_usual_exceptions(vaurien, echo_proxy):
    echo_proxy.add_toxic(type="latency")
    with pytest.raises(ProxyExists):  # a toxic name taken: 409
        echo_proxy.add_toxic(type="latency")
    with pytest.raises(InvalidToxic):  # 400
        echo_proxy.add_toxic(type="walrus")
    with pytest.raises(NotFound):
        echo_proxy.destroy_toxic("nope")


@pytest.mark.parametrize(
    "method, path, body, status, error",
    [
        ("POST", "/proxies", {}, 400, "missing required field: name"),
        ("POST", "/proxies", {"name": "x"}, 400, "missing required field: upstream"),
        ("POST", "/proxies", {"name": "x", "upstream": "nowhere"}, 400,
         "bad request body: upstream: 'nowhere': expected HOST:PORT"),
        ("POST", "/proxies", {"name": "x y", "upstream": "a:1"}, 400, "is not a proxy name"),
        ("POST", "/proxies", {"name": "x", "upstream": "a:1", "enabled": "yes"}, 400,
         "enabled must be true or false, not a string"),
        ("POST", "/proxies", {"name": "x", "upstream": "a:1", "port": 1}, 400,
         "unknown field 'port'"),
        ("POST", "/proxies", {"name": "x", "upstream": "a:1", "protocol": "gopher"}, 400,
         "unknown protocol 'gopher'"),
        ("POST", "/proxies", b"{not json", 400, "bad request body: the body is not valid JSON"),
        ("POST", "/proxies", b"", 400, "bad request body"),
        ("GET", "/proxies/nope", None, 404, "proxy not found"),
        ("DELETE", "/proxies/nope", None, 404, "proxy not found"),
        ("GET", "/proxies/echo/toxics/nope", None, 404, "toxic not found"),
        ("PATCH", "/proxies/echo/toxics/nope", {}, 404, "toxic not found"),
        ("GET", "/proxies/nope/toxics", None, 404, "proxy not found"),
        ("PATCH", "/proxies/echo", {"name": "other"}, 400, "a proxy's name cannot change"),
        ("PATCH", "/proxies/echo", {"protocol": "http"}, 400, "a proxy's protocol is set"),
        ("PATCH", "/proxies/echo", {"listen": 5}, 400, "listen must be a string, not a number"),
        ("DELETE", "/proxies", None, 405, "method DELETE not allowed on /proxies"),
        ("GET", "/nowhere", None, 404, "not found: /nowhere"),
        ("POST", "/proxies", b"x" * 70_000, 413, "bad request body"),
    ],
)  # fmt: skip
def test_bad_requests_are_refused_in_toxiproxys_shape(vaurien, echo_proxy, method, path, body,
                                                      status, error):  # fmt: skip
    before = api(vaurien, "GET", "/proxies").json()
    response = api(vaurien, method, path, body)
    assert response.status_code == status, response.text
    assert response.json() == {"error": response.json()["error"], "status": status}
    assert error in response.json()["error"]
    assert api(vaurien, "GET", "/proxies").json() == before


def test_a_toxic_of_a_changed_type_or_stream_is_refused(vaurien, echo_proxy):
    echo_proxy.add_toxic(type="latency")
    response = api(vaurien, "PATCH", "/proxies/echo/toxics/latency_downstream",
                   {"stream": "upstream"})  # fmt: skip
    assert response.status_code == 400
    assert "a toxic's stream cannot change" in response.json()["error"]


def test_a_listen_address_in_use_is_a_conflict(vaurien, echo_backend):
    with socket.create_server(("127.0.0.1", 0)) as taken:
        busy = f"127.0.0.1:{taken.getsockname()[1]}"
        body = {"name": "x", "listen": busy, "upstream": echo_backend.address}
        response = api(vaurien, "POST", "/proxies", body)
    assert response.status_code == 409
    assert "Address already in use" in response.json()["error"]
    assert vaurien.client.proxies() == {}


def test_browsers_are_turned_away(vaurien):
    response = api(vaurien, "GET", "/proxies", headers={"User-Agent": "Mozilla/5.0 (X11)"})
    assert response.status_code == 403
    assert api(vaurien, "GET", "/proxies", headers={"User-Agent": "Wget/2.1"}).ok


def test_the_go_clients_bodies_are_taken(vaurien, echo_backend):
    # What Toxiproxy's Go client sends: the whole proxy (with "toxics": null) on create and
    # on Save(), a toxic without a stream (omitempty), an update with null attributes.
    body = {"name": "go", "listen": "127.0.0.1:0", "upstream": echo_backend.address,
            "enabled": True, "toxics": None}  # fmt: skip
    created = api(vaurien, "POST", "/proxies", body).json()
    assert created["toxics"] == []
    toxic = {"name": "", "type": "noop", "toxicity": 1, "attributes": None}
    assert api(vaurien, "POST", "/proxies/go/toxics", toxic).json() == {
        "attributes": {},
        "name": "noop_downstream",
        "type": "noop",
        "stream": "downstream",
        "toxicity": 1.0,
    }
    created["enabled"] = False
    created["toxics"] = api(vaurien, "GET", "/proxies/go/toxics").json()
    saved = api(vaurien, "POST", "/proxies/go", created).json()
    assert saved["enabled"] is False and saved["listen"] == created["listen"]
    assert len(saved["toxics"]) == 1  # sent back as read: left as they are
    update = {"attributes": None, "toxicity": 0.5}
    assert (
        api(vaurien, "PATCH", "/proxies/go/toxics/noop_downstream", update).json()["toxicity"]
        == 0.5
    )


def test_metrics_label_each_proxy(vaurien, echo_backend):
    pytest.importorskip("prometheus_client")
    proxy = vaurien.client.create(upstream=echo_backend.address, name="echo")
    with connect(proxy.listen) as sock:
        round_trip(sock)
    text = api(vaurien, "GET", "/metrics").text
    assert 'vaurien_connections_total{proxy="echo"} 1.0' in text


@contextlib.contextmanager
def both_apis(tmp_path, ini: str):
    """A Vaurien started from the config file ``ini`` with its Toxiproxy API and its control
    API: the server's thread, the Toxiproxy API's URL, and the control API's URL of the proxy
    named web."""
    from vaurien.api import ControlServer
    from vaurien.cli import parse_server_config

    path = tmp_path / "vaurien.ini"
    path.write_text(ini)
    config, _ = parse_server_config(["--config", str(path)])

    def services(server):
        return [
            ToxiproxyServer(server, "127.0.0.1", 0).start(),
            ControlServer(server, "127.0.0.1", 0).start(),
        ]

    with ServerThread(config, services) as thread:
        toxiproxy = f"http://127.0.0.1:{thread.services[0].address[1]}"
        control = f"http://127.0.0.1:{thread.services[1].address[1]}/proxies/web"
        yield thread, toxiproxy, control


def test_toxics_and_the_mix_take_turns_and_reset_brings_back_the_configured_mix(
    tmp_path, echo_backend
):
    with both_apis(
        tmp_path,
        f"[proxy:web]\nproxy = 127.0.0.1:0\nbackend = {echo_backend.address}\n"
        "behavior = 100:delay\nbehavior.delay.sleep = 0.01\n",
    ) as (thread, toxiproxy, control):
        assert list(requests.get(toxiproxy + "/proxies", timeout=10).json()) == ["web"]
        toxic = {"type": "latency", "attributes": {"latency": 1}}
        requests.post(toxiproxy + "/proxies/web/toxics", json=toxic, timeout=10)
        assert requests.get(control + "/behavior", timeout=10).json() == {"behavior": "toxics"}
        options = requests.get(control + "/behavior/options", timeout=10).json()["options"]
        assert options["toxics"]["latency_downstream"]["attributes"] == {"latency": 1, "jitter": 0}
        # A mix put in force takes the toxics' place.
        requests.put(control + "/behavior", json={"name": "blackout"}, timeout=10)
        assert requests.get(toxiproxy + "/proxies/web/toxics", timeout=10).json() == []
        # Reset: no toxics, and the mix of the configuration.
        requests.post(toxiproxy + "/proxies/web/toxics", json=toxic, timeout=10)
        assert requests.post(toxiproxy + "/reset", timeout=10).status_code == 204
        assert requests.get(toxiproxy + "/proxies/web/toxics", timeout=10).json() == []
        assert requests.get(control + "/behavior", timeout=10).json() == {"behavior": "delay"}


def test_toxics_are_listed_upstream_first_as_toxiproxy_does(vaurien, echo_proxy):
    echo_proxy.add_toxic(type="latency", stream="downstream")
    echo_proxy.add_toxic(type="slicer", stream="upstream")
    echo_proxy.add_toxic(type="bandwidth", stream="downstream")
    listed = api(vaurien, "GET", "/proxies/echo/toxics").json()
    assert [t["name"] for t in listed] == [
        "slicer_upstream",
        "latency_downstream",
        "bandwidth_downstream",
    ]


def test_populate_leaves_a_disabled_proxy_disabled_unless_told(vaurien, echo_backend):
    entry = {"name": "p", "listen": f"127.0.0.1:{free_port()}", "upstream": echo_backend.address}
    api(vaurien, "POST", "/populate", [entry])
    vaurien.client.get_proxy("p").disable()
    api(vaurien, "POST", "/populate", [entry])
    assert vaurien.client.get_proxy("p").enabled is False
    api(vaurien, "POST", "/populate", [{**entry, "enabled": True}])
    assert vaurien.client.get_proxy("p").enabled is True


def test_an_update_that_cannot_be_done_changes_nothing(vaurien, echo_proxy):
    echo_proxy.disable()
    before = api(vaurien, "GET", "/proxies/echo").json()
    with socket.create_server(("127.0.0.1", 0)) as taken:
        busy = f"127.0.0.1:{taken.getsockname()[1]}"
        response = api(vaurien, "PATCH", "/proxies/echo", {"listen": busy, "enabled": True})
    assert response.status_code == 409 and "Address already in use" in response.json()["error"]
    assert api(vaurien, "GET", "/proxies/echo").json() == before


def test_tls_settings_are_fields_of_a_proxy_made_through_the_api(vaurien, https_server, tls_ca):
    """Vaurien's additions: a proxy made with backend_tls speaks TLS to its upstream, and the
    protocol-aware toxics see clear text."""
    body = {
        "name": "secure",
        "upstream": https_server.address,
        "protocol": "http",
        "backend_tls": True,
        "backend_ca": str(tls_ca.cert_path),
    }
    assert api(vaurien, "POST", "/proxies", body).status_code == 201
    listen = vaurien.client.get_proxy("secure").listen
    assert requests.get(f"http://{listen}/bytes/3", timeout=10).content == b"\x00\x01\x02"
    error = {"type": "error", "stream": "upstream"}
    assert api(vaurien, "POST", "/proxies/secure/toxics", error).status_code == 200
    assert requests.get(f"http://{listen}/bytes/3", timeout=10).status_code in (500, 501, 502, 503)
    response = api(vaurien, "POST", "/proxies/secure", {"backend_tls": False})
    assert response.status_code == 400
    assert "backend_tls is set when it is made" in response.json()["error"]
    response = api(vaurien, "POST", "/proxies", {**body, "name": "x", "backend_tls": "yes"})
    assert response.status_code == 400 and "backend_tls must be true or false" in response.text


def served_from(address, source: str) -> float | None:
    """The round trip of a ping from ``source`` through the proxy at ``address``; None when the
    connection is reset."""
    with socket.create_connection(address, timeout=10, source_address=(source, 0)) as sock:
        try:
            return round_trip(sock)
        except ConnectionResetError:
            return None


def test_toxics_take_the_mix_place_while_rules_and_a_scenario_stay(tmp_path, echo_backend):
    with both_apis(
        tmp_path,
        f"[proxy:web]\nproxy = 127.0.0.1:0\nbackend = {echo_backend.address}\n\n"
        "[rule:far]\nproxies = web\nmatch = client=127.0.0.2\nbehavior = reset\n",
    ) as (thread, toxiproxy, control):
        address = thread.address("web")
        latency = {"type": "latency", "attributes": {"latency": 300}}
        assert requests.post(toxiproxy + "/proxies/web/toxics", json=latency, timeout=10).ok
        # The toxic takes the place of the mix; the rule still comes first.
        assert served_from(address, "127.0.0.1") >= 0.3
        assert served_from(address, "127.0.0.2") is None
        assert [
            r["name"] for r in requests.get(control + "/rules", timeout=10).json()["rules"]
        ] == ["far"]
        # A scenario's step takes the place of the toxics while it runs, and they are back
        # when it ends.
        scenario = {"scenario": "1m 100:dummy"}
        assert requests.put(control + "/scenario", json=scenario, timeout=10).ok
        assert served_from(address, "127.0.0.1") < 0.25
        assert served_from(address, "127.0.0.2") is None
        assert requests.delete(control + "/scenario", timeout=10).ok
        assert served_from(address, "127.0.0.1") >= 0.3
        # Toxics put in force while a scenario runs leave it running.
        assert requests.post(toxiproxy + "/reset", timeout=10).status_code == 204
        assert requests.put(control + "/scenario", json=scenario, timeout=10).ok
        assert requests.post(toxiproxy + "/proxies/web/toxics", json=latency, timeout=10).ok
        assert requests.get(control + "/scenario", timeout=10).json()["step"] == 1
        # A mix put in force removes the toxics and ends the scenario; the rules stay.
        assert requests.put(control + "/behavior", json={"name": "dummy"}, timeout=10).ok
        assert requests.get(toxiproxy + "/proxies/web/toxics", timeout=10).json() == []
        assert requests.get(control + "/scenario", timeout=10).json() == {"scenario": None}
        assert served_from(address, "127.0.0.1") < 0.25
        assert served_from(address, "127.0.0.2") is None
        stats = thread.call(thread.server.stats)["web"]
        assert stats["rules"] == {"far": 3}  # once per connection from 127.0.0.2
        assert set(stats["steps"]) == {"1"}
