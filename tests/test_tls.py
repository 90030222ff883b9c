"""TLS toward the backend, toward the client, and both: real handshakes on 127.0.0.1 with
certificates from a throwaway CA, real clients (requests, redis-py) and real TLS servers."""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
import redis
import requests

from grpc_support import Calls, GrpcBackend
from protocol_support import read_responses
from support import recv_exactly, wait_until
from vaurien.errors import ConfigError
from vaurien.proxy import Proxy
from vaurien.proxy_config import ProxyConfig
from vaurien.tls import self_signed, sha256_fingerprint

ROOT = Path(__file__).parent.parent
PATTERN = bytes(range(256))


def pattern(size):
    return (PATTERN * (size // 256 + 1))[:size]


@pytest.fixture
def server_files(tls_ca):
    return tls_ca.directory / "server.pem", tls_ca.directory / "server.key"


def url(proxy, path="/", scheme="http"):
    host, port = proxy.address
    return f"{scheme}://{host}:{port}{path}"


def tls_connect(proxy, tls_ca, timeout=10.0):
    raw = socket.create_connection(proxy.address, timeout=timeout)
    return tls_ca.client_context().wrap_socket(raw, server_hostname="127.0.0.1")


def handshake_failures(caplog):
    return [r.getMessage() for r in caplog.records if "TLS handshake" in r.getMessage()]


# -- TLS toward the backend -------------------------------------------------------------------


def test_a_plain_http_client_reaches_an_https_backend_with_http_chaos(
    https_server, tls_ca, start_proxy
):
    proxy = start_proxy(
        https_server.address,
        protocol="http",
        backend_tls=True,
        backend_ca=str(tls_ca.cert_path),
        timeout=30,
    )
    with requests.Session() as client:
        answer = client.get(url(proxy, "/bytes/100000"), timeout=10)
        assert answer.status_code == 200 and answer.content == pattern(100000)
        echoed = client.post(url(proxy, "/echo"), data=pattern(300000), timeout=10)
        assert echoed.content == pattern(300000)

        proxy.call(proxy.proxy.set_behavior, "100:error")
        failed = client.get(url(proxy, "/"), timeout=10)
        assert failed.status_code in (500, 501, 502, 503)

        proxy.call(proxy.proxy.set_behavior, "100:delay", {"delay": {"sleep": 0.3}})
        started = time.monotonic()
        for _ in range(3):
            assert client.get(url(proxy, "/"), timeout=10).status_code == 200
        assert time.monotonic() - started >= 0.85  # every request waited
    stats = proxy.call(proxy.proxy.stats)
    assert stats["behaviors"]["error"] == 1 and stats["behaviors"]["delay"] == 3


def test_an_untrusted_self_signed_backend_ends_the_session_with_one_line(
    http_server, start_proxy, caplog
):
    # The backend: a proxy with a self-signed certificate in front of the HTTP server.
    backend = start_proxy(http_server.address, tls_self_signed=True)
    proxy = start_proxy(f"127.0.0.1:{backend.address[1]}", protocol="http", backend_tls=True)
    with caplog.at_level(logging.WARNING, logger="vaurien"):
        with pytest.raises(requests.ConnectionError):
            requests.get(url(proxy), timeout=10)
        wait_until(lambda: handshake_failures(caplog), what="the handshake's log line")
    (line,) = handshake_failures(caplog)
    assert f"with the backend 127.0.0.1:{backend.address[1]} failed" in line
    assert line.endswith("backend certificate not trusted: self-signed")
    # The insecure mode accepts it.
    lenient = start_proxy(
        f"127.0.0.1:{backend.address[1]}",
        protocol="http",
        backend_tls=True,
        backend_insecure=True,
    )
    assert requests.get(url(lenient), timeout=10).status_code == 200


def test_the_backend_name_is_checked_against_the_sni_name(
    https_server, tls_ca, start_proxy, caplog
):
    proxy = start_proxy(
        https_server.address,
        backend_tls=True,
        backend_ca=str(tls_ca.cert_path),
        backend_sni="api.example.com",
    )
    with caplog.at_level(logging.WARNING, logger="vaurien"):
        with proxy.connect() as sock:
            assert sock.recv(100) == b""
        wait_until(lambda: handshake_failures(caplog), what="the handshake's log line")
    (line,) = handshake_failures(caplog)
    assert line.endswith("backend certificate not valid for 'api.example.com' (name mismatch)")


# -- TLS toward the client ---------------------------------------------------------------------


def test_an_https_client_verifying_the_test_ca_gets_through_to_a_plain_backend(
    http_server, tls_ca, server_files, start_proxy
):
    cert, key = server_files
    proxy = start_proxy(
        http_server.address, protocol="http", tls_cert=str(cert), tls_key=str(key), timeout=30
    )
    with requests.Session() as client:
        for size in (0, 10, 70000, 1000000):
            answer = client.get(
                url(proxy, f"/bytes/{size}", "https"), verify=str(tls_ca.cert_path), timeout=10
            )
            assert answer.status_code == 200 and answer.content == pattern(size)
        proxy.call(proxy.proxy.set_behavior, "100:error")
        answer = client.get(url(proxy, "/", "https"), verify=str(tls_ca.cert_path), timeout=10)
        assert answer.status_code in (500, 501, 502, 503)  # the connection lives on
        proxy.call(proxy.proxy.set_behavior, "100:dummy")
        answer = client.get(url(proxy, "/", "https"), verify=str(tls_ca.cert_path), timeout=10)
        assert answer.status_code == 200
    assert proxy.call(proxy.proxy.stats)["total_connections"] == 1


def test_tcp_over_tls_moves_bulk_data_and_half_closes(
    echo_backend, tls_ca, tls_files_in_cert, start_proxy
):
    proxy = start_proxy(echo_backend.address, tls_cert=str(tls_files_in_cert), timeout=30)
    data = os.urandom(4 << 20)
    with tls_connect(proxy, tls_ca) as sock:
        sock.sendall(data)
        received = recv_exactly(sock, len(data))
        assert received == data
        # The client's close_notify ends its direction; the proxy half-closes the backend, the
        # echo server half-closes back, and the client is told with the proxy's close_notify.
        sock.unwrap()
    stats = proxy.call(proxy.proxy.stats)
    assert stats["bytes_to_backend"] == stats["bytes_to_client"] == len(data)


@pytest.fixture
def tls_files_in_cert(tls_ca):
    cert, _ = tls_ca.issue("combined", key_in_cert=True)
    return cert


def test_a_stalled_handshake_is_cut_off_while_others_are_served(
    http_server, tls_ca, server_files, start_proxy, caplog
):
    cert, key = server_files
    proxy = start_proxy(
        http_server.address, protocol="http", tls_cert=str(cert), tls_key=str(key), timeout=1.5
    )
    with caplog.at_level(logging.WARNING, logger="vaurien"):
        stalled = proxy.connect()  # connects, then never says a word
        started = time.monotonic()
        verify = str(tls_ca.cert_path)
        for _ in range(3):
            answer = requests.get(url(proxy, "/", "https"), verify=verify, timeout=10)
            assert answer.status_code == 200
        assert time.monotonic() - started < 1.5  # served while the stalled one waits
        stalled.settimeout(10)
        assert stalled.recv(100) == b""
        cut_after = time.monotonic() - started
        stalled.close()
        # And one that speaks plain HTTP to the TLS port.
        with proxy.connect() as plain:
            plain.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            assert plain.recv(100) == b""
        wait_until(lambda: len(handshake_failures(caplog)) == 2, what="two log lines")
    assert 1.0 < cut_after < 8
    stall, plain_line = handshake_failures(caplog)
    assert "with the client 127.0.0.1:" in stall and stall.endswith("(handshake timed out)")
    assert plain_line.endswith("client sent plain HTTP, no TLS")
    wait_until(lambda: proxy.call(proxy.proxy.stats)["live_sessions"] == 0)


# -- both sides ----------------------------------------------------------------------------------


def start_both_sides(start_proxy, backend, tls_ca, server_files, protocol):
    """A proxy speaking TLS to its clients (the CA's server certificate) and to ``backend``
    (verified against the CA)."""
    cert, key = server_files
    return start_proxy(
        backend.address,
        protocol=protocol,
        backend_tls=True,
        backend_ca=str(tls_ca.cert_path),
        tls_cert=str(cert),
        tls_key=str(key),
        timeout=30,
    )


@pytest.fixture
def mitm(https_server, tls_ca, server_files, start_proxy):
    return start_both_sides(start_proxy, https_server, tls_ca, server_files, "http")


def test_both_sides_keep_alive_with_chaos_per_request(mitm, tls_ca):
    verify = str(tls_ca.cert_path)
    mitm.call(mitm.proxy.set_behavior, "50:delay", {"delay": {"sleep": 0.01}})
    with requests.Session() as client:
        for size in range(0, 200000, 20000):
            answer = client.get(url(mitm, f"/bytes/{size}", "https"), verify=verify, timeout=10)
            assert answer.status_code == 200 and answer.content == pattern(size)
    stats = mitm.call(mitm.proxy.stats)
    assert stats["total_connections"] == 1
    assert sum(stats["behaviors"].values()) == 10 and stats["behaviors"]["delay"] > 0


def test_both_sides_pipelined_requests_answer_in_order(mitm, tls_ca):
    with tls_connect(mitm, tls_ca) as sock:
        sock.sendall(
            b"GET /bytes/10 HTTP/1.1\r\nHost: a\r\n\r\n"
            b"GET /slow?s=0.2 HTTP/1.1\r\nHost: a\r\n\r\n"
            b"GET /bytes/70000 HTTP/1.1\r\nHost: a\r\n\r\n"
            b"GET /status/204 HTTP/1.1\r\nHost: a\r\n\r\n"
        )
        answers = [(status, body) for status, _, body in read_responses(sock, 4)]
    assert answers == [
        (200, pattern(10)),
        (200, b"slept 0.2\n"),
        (200, pattern(70000)),
        (204, b""),
    ]


# -- Redis over TLS ------------------------------------------------------------------------------


def test_redis_over_tls_on_both_sides_with_err_replies(
    redis_tls_server, tls_ca, server_files, start_proxy
):
    proxy = start_both_sides(start_proxy, redis_tls_server, tls_ca, server_files, "redis")
    host, port = proxy.address
    client = redis.Redis(host, port, ssl=True, ssl_ca_certs=str(tls_ca.cert_path))
    try:
        assert client.set("tls-key", b"x" * 100000)
        assert client.get("tls-key") == b"x" * 100000
        with client.pipeline(transaction=False) as pipe:
            for _ in range(50):
                pipe.incr("tls-counter")
            assert pipe.execute()[-1] >= 50
        proxy.call(proxy.proxy.set_behavior, "100:error")
        with pytest.raises(redis.ResponseError):
            client.get("tls-key")
    finally:
        client.close()


def test_a_plain_redis_client_reaches_a_tls_only_redis(redis_tls_server, tls_ca, start_proxy):
    proxy = start_proxy(
        redis_tls_server.address,
        protocol="redis",
        backend_tls=True,
        backend_ca=str(tls_ca.cert_path),
    )
    client = redis.Redis(*proxy.address)
    try:
        assert client.ping()
        assert client.set("plain-to-tls", "yes") and client.get("plain-to-tls") == b"yes"
    finally:
        client.close()


# -- certificates and options ------------------------------------------------------------------


def test_a_self_signed_certificate_is_its_own_trust_anchor(tmp_path):
    certificate, key = self_signed("127.0.0.1")
    (tmp_path / "c.pem").write_bytes(certificate)
    (tmp_path / "k.pem").write_bytes(key)
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(tmp_path / "c.pem", tmp_path / "k.pem")
    client = ssl.create_default_context(cafile=str(tmp_path / "c.pem"))
    for name in ("127.0.0.1", "localhost", "::1"):
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        server_in, server_out = ssl.MemoryBIO(), ssl.MemoryBIO()
        a = client.wrap_bio(incoming, outgoing, server_hostname=name)
        b = server.wrap_bio(server_in, server_out, server_side=True)
        for _ in range(4):
            for side in (a, b):
                try:
                    side.do_handshake()
                except ssl.SSLWantReadError:
                    pass
            server_in.write(outgoing.read())
            incoming.write(server_out.read())
        assert a.version() and a.getpeercert()["subject"] == ((("commonName", "127.0.0.1"),),)
    der = ssl.PEM_cert_to_DER_cert(certificate.decode())
    assert sha256_fingerprint(certificate) == hashlib.sha256(der).digest().hex(":").upper()


def test_the_command_line_makes_a_certificate_writes_it_and_logs_its_fingerprint(
    http_server, tmp_path
):
    cert_out = tmp_path / "proxy.pem"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "vaurien",
            "--proxy",
            f"127.0.0.1:{port}",
            "--backend",
            http_server.address,
            "--protocol",
            "http",
            "--tls-self-signed",
            "--tls-cert-out",
            str(cert_out),
        ],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:

        def answer():
            try:
                return requests.get(f"https://127.0.0.1:{port}/", verify=str(cert_out), timeout=5)
            except (requests.ConnectionError, OSError):
                return None

        assert wait_until(answer, what="an HTTPS answer").status_code == 200
    finally:
        process.terminate()
        _, err = process.communicate(timeout=30)
    fingerprint = sha256_fingerprint(cert_out.read_bytes())
    assert f"tls:      clients speak TLS; certificate SHA-256 {fingerprint}" in err


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"tls_cert": "{missing}"}, "tls_cert {missing}: cannot read it: No such file"),
        ({"tls_cert": "{cert}", "tls_key": "{other_key}"}, "does not match the certificate in"),
        ({"tls_cert": "{cert}", "tls_key": "{garbage}"}, "expected a PEM certificate and a PEM"),
        ({"tls_cert": "{cert}", "tls_key": "{encrypted}"}, "the key is encrypted"),
        ({"backend_tls": True, "backend_ca": "{garbage}"}, "backend_ca {garbage}: no PEM"),
        ({"backend_ca": "{cert}"}, "backend_ca needs backend_tls (--backend-tls)"),
        ({"tls_key": "{key}"}, "tls_key needs tls_cert (--tls-cert)"),
        ({"tls_cert": "{cert}", "tls_self_signed": True}, "either tls_cert or tls_self_signed"),
        ({"tls_cert_out": "{missing}"}, "tls_cert_out needs tls_self_signed"),
        (
            {"backend_tls": True, "backend_insecure": True, "backend_ca": "{cert}"},
            "backend_ca would be ignored",
        ),
    ],
)
def test_bad_tls_settings_are_refused_naming_the_file(tls_ca, tmp_path, settings, message):
    from cryptography.hazmat.primitives import serialization

    cert, key = tls_ca.issue("options")
    _, other_key = tls_ca.issue("other")
    encrypted = tmp_path / "encrypted.key"
    loaded = serialization.load_pem_private_key(key.read_bytes(), None)
    encrypted.write_bytes(
        loaded.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    paths = {
        "cert": cert,
        "key": key,
        "other_key": other_key,
        "encrypted": encrypted,
        "garbage": garbage,
        "missing": tmp_path / "missing.pem",
    }
    settings = {k: v.format(**paths) if isinstance(v, str) else v for k, v in settings.items()}
    with pytest.raises(ConfigError) as raised:
        Proxy(ProxyConfig(backend="127.0.0.1:1", **settings))
    assert message.format(**paths) in str(raised.value)


def test_a_bad_key_on_the_command_line_exits_2_with_one_line(tls_ca, tmp_path):
    cert, _ = tls_ca.issue("cli")
    _, other_key = tls_ca.issue("cli-other")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "vaurien",
            "--backend",
            "127.0.0.1:1",
            "--proxy",
            "127.0.0.1:0",
            "--tls-cert",
            str(cert),
            "--tls-key",
            str(other_key),
        ],
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        timeout=30,
    )
    assert result.returncode == 2
    assert result.stderr == (
        f"vaurien: error: tls_key {other_key}: does not match the certificate in {cert}\n"
    )


# -- HTTP/2 over TLS -------------------------------------------------------------------------------


def test_grpc_over_tls_agrees_on_h2_and_gets_per_call_errors(tls_ca, server_files, start_proxy):
    backend = GrpcBackend()
    cert, key = server_files
    proxy = start_proxy(
        backend.address, protocol="http2", tls_cert=str(cert), tls_key=str(key), seed=7
    )
    credentials = grpc.ssl_channel_credentials(root_certificates=tls_ca.cert_path.read_bytes())
    channel = grpc.secure_channel(
        "{}:{}".format(*proxy.address),
        credentials,
        options=[("grpc.ssl_target_name_override", "localhost")],
    )
    try:
        calls = Calls(channel)
        assert calls.outcome(b"over tls") == grpc.StatusCode.OK
        proxy.call(proxy.proxy.set_behavior, "100:error")
        assert calls.outcome(b"failing") == grpc.StatusCode.UNAVAILABLE
        proxy.call(proxy.proxy.set_behavior, "100:dummy")
        assert calls.outcome(b"again") == grpc.StatusCode.OK
    finally:
        channel.close()
        backend.close()
    assert proxy.call(proxy.proxy.stats)["total_connections"] == 1


# -- behaviors on a TLS side ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "behavior, options",
    [
        ("slicer", {"average_size": 700, "size_variation": 600}),
        ("bandwidth", {"rate": 4096}),
        ("delay", {"sleep": 0.001}),
        ("corrupt", {}),
    ],
)
def test_behaviors_that_rework_the_bytes_work_on_both_tls_sides(
    echo_backend, tls_ca, tls_files_in_cert, start_proxy, behavior, options
):
    """The echo backend behind a proxy that speaks TLS to its clients and to a second proxy
    terminating TLS in front of the echo server: every behavior's writes are encrypted."""
    inner = start_proxy(echo_backend.address, tls_cert=str(tls_files_in_cert))
    proxy = start_proxy(
        f"127.0.0.1:{inner.address[1]}",
        tls_cert=str(tls_files_in_cert),
        backend_tls=True,
        backend_ca=str(tls_ca.cert_path),
        behavior=f"100:{behavior}",
        plugin_options={("behavior", behavior): options},
        timeout=30,
    )
    data = os.urandom(300000)
    with tls_connect(proxy, tls_ca) as sock:
        sock.sendall(data)
        received = recv_exactly(sock, len(data))
    assert len(received) == len(data)
    if behavior != "corrupt":
        assert received == data


def test_reset_cuts_a_tls_client_off_without_close_notify(
    echo_backend, tls_ca, tls_files_in_cert, start_proxy
):
    proxy = start_proxy(echo_backend.address, tls_cert=str(tls_files_in_cert), behavior="100:reset")
    raw = socket.create_connection(proxy.address, timeout=10)
    context = tls_ca.client_context()
    with context.wrap_socket(raw, server_hostname="127.0.0.1", suppress_ragged_eofs=False) as sock:
        sock.sendall(b"hello")
        # Python's ssl reports a reset as an end without close_notify.
        with pytest.raises((ConnectionResetError, ssl.SSLEOFError)):
            sock.recv(100)


def test_stopping_the_proxy_ends_a_session_waiting_in_its_handshake(
    http_server, tls_files_in_cert, start_proxy
):
    proxy = start_proxy(http_server.address, tls_cert=str(tls_files_in_cert), timeout=60)
    stalled = proxy.connect()
    wait_until(lambda: proxy.call(proxy.proxy.stats)["active_connections"] == 1)
    started = time.monotonic()
    proxy.stop()
    assert time.monotonic() - started < 5
    stalled.settimeout(10)
    assert stalled.recv(100) == b""
    stalled.close()
