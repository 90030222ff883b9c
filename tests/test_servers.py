"""The backend fixtures work with the real client libraries, and fail loudly."""

from __future__ import annotations

import http.client
import json
import smtplib
import socket
import sys
import threading
import time
import uuid
from email.message import EmailMessage
from pathlib import Path

import psycopg
import pymemcache.client.base
import pymysql
import pytest
import redis
import requests

import servers
from servers import HTTPServer, MariaDBServer, PostgresServer, Server, SMTPServer

IO_TIMEOUT = 10.0  # seconds for any client operation below


def recv_until_eof(sock: socket.socket) -> bytes:
    """Read everything until the peer closes its write side."""
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def recv_line(sock: socket.socket) -> bytes:
    """Read one CRLF-terminated line, byte by byte (for short replies only)."""
    line = b""
    while not line.endswith(b"\r\n"):
        byte = sock.recv(1)
        assert byte, f"connection closed after {line!r}"
        line += byte
    return line


def test_servers_describe_their_address(
    redis_server: Server, memcached_server: Server, echo_server: Server
) -> None:
    for server in (redis_server, memcached_server, echo_server):
        assert server.host == "127.0.0.1"
        assert server.address == f"127.0.0.1:{server.port}"
        assert server.log_path.is_file()
    assert len({redis_server.port, memcached_server.port, echo_server.port}) == 3


# --- redis ------------------------------------------------------------------


def test_redis_commands_and_pipeline(redis_server: Server) -> None:
    client = redis.Redis(host=redis_server.host, port=redis_server.port, socket_timeout=IO_TIMEOUT)
    key = f"test:{uuid.uuid4()}"
    value = bytes(range(256)) * 4096  # 1 MiB, every byte value
    assert client.set(key, value)
    assert client.get(key) == value
    with client.pipeline(transaction=False) as pipe:
        for _ in range(100):
            pipe.incr(key + ":n")
        assert pipe.execute() == list(range(1, 101))
    assert client.delete(key, key + ":n") == 2
    assert client.config_get("save") == {"save": ""}
    assert client.config_get("appendonly") == {"appendonly": "no"}


# --- memcached --------------------------------------------------------------


def test_memcached_set_get_delete(memcached_server: Server) -> None:
    client = pymemcache.client.base.Client(
        (memcached_server.host, memcached_server.port), timeout=IO_TIMEOUT
    )
    prefix = uuid.uuid4().hex
    items = {f"{prefix}:{i}": str(i).encode() * 100 for i in range(20)}
    assert client.set_many(items) == []
    assert client.get_many(list(items)) == items
    assert client.delete(f"{prefix}:0")
    assert client.get(f"{prefix}:0") is None
    assert client.incr(f"{prefix}:absent", 1) is None
    client.close()


# --- mariadb ----------------------------------------------------------------


def test_mariadb_queries_over_tcp(mariadb_server: MariaDBServer) -> None:
    connection = pymysql.connect(**mariadb_server.connect_kwargs(), read_timeout=IO_TIMEOUT)
    with connection, connection.cursor() as cursor:
        cursor.execute("SELECT USER(), DATABASE()")
        assert cursor.fetchone() == (
            f"{mariadb_server.user}@127.0.0.1",
            mariadb_server.database,
        )
        cursor.execute("CREATE TEMPORARY TABLE t (id INT PRIMARY KEY, v TEXT)")
        cursor.executemany("INSERT INTO t VALUES (%s, %s)", [(i, "x" * i) for i in range(50)])
        cursor.execute("SELECT COUNT(*), SUM(LENGTH(v)) FROM t")
        assert cursor.fetchone() == (50, sum(range(50)))


def test_mariadb_rejects_a_wrong_password(mariadb_server: MariaDBServer) -> None:
    kwargs = {**mariadb_server.connect_kwargs(), "password": "wrong"}
    with pytest.raises(pymysql.err.OperationalError) as caught:
        pymysql.connect(**kwargs)
    assert caught.value.args[0] == 1045  # access denied


# --- postgres ---------------------------------------------------------------


def test_postgres_trusts_its_superuser_over_tcp(postgres_server: PostgresServer) -> None:
    with psycopg.connect(postgres_server.conninfo(), autocommit=True) as connection:
        assert connection.execute("SELECT 1").fetchone() == (1,)
        row = connection.execute(
            "SELECT current_user, current_database(), inet_server_addr()::text, ssl"
            " FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
        ).fetchone()
        assert row == (postgres_server.user, postgres_server.database, "127.0.0.1/32", False)
        assert connection.info.port == postgres_server.port
        assert connection.execute("SHOW fsync").fetchone() == ("off",)


def test_postgres_logs_the_scram_user_in_with_its_password(
    postgres_server: PostgresServer,
) -> None:
    conninfo = postgres_server.conninfo(scram=True)
    with psycopg.connect(conninfo) as connection:
        assert connection.pgconn.used_password
        assert connection.execute("SELECT current_user").fetchone() == (postgres_server.scram_user,)
        connection.execute("CREATE TEMPORARY TABLE t (id int PRIMARY KEY, v text)")
        with connection.cursor() as cursor:
            cursor.executemany("INSERT INTO t VALUES (%s, %s)", [(i, "x" * i) for i in range(50)])
            cursor.execute("SELECT count(*), sum(length(v)) FROM t")
            assert cursor.fetchone() == (50, sum(range(50)))
    with psycopg.connect(postgres_server.conninfo()) as connection:
        stored = connection.execute(
            "SELECT rolpassword FROM pg_authid WHERE rolname = %s", (postgres_server.scram_user,)
        ).fetchone()
    assert stored[0].startswith("SCRAM-SHA-256$")


def test_postgres_rejects_a_wrong_scram_password(postgres_server: PostgresServer) -> None:
    conninfo = postgres_server.conninfo(scram=True, password="wrong")
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(conninfo)


def test_postgres_speaks_tls_when_asked(postgres_server: PostgresServer) -> None:
    with psycopg.connect(postgres_server.conninfo(sslmode="require")) as connection:
        assert connection.pgconn.ssl_in_use
        assert connection.execute("SELECT 1").fetchone() == (1,)


def test_postgres_listens_on_its_own_unix_socket(postgres_server: PostgresServer) -> None:
    assert (postgres_server.socket_dir / f".s.PGSQL.{postgres_server.port}").is_socket()
    conninfo = postgres_server.conninfo(host=str(postgres_server.socket_dir))
    with psycopg.connect(conninfo) as connection:
        assert connection.execute("SELECT inet_server_addr()").fetchone() == (None,)


# --- smtp -------------------------------------------------------------------


def test_smtp_records_messages(smtp_server: SMTPServer) -> None:
    subject = f"test {uuid.uuid4()}"
    message = EmailMessage()
    message["From"] = "sender@example.com"
    message["To"] = "one@example.com"
    message["Subject"] = subject
    message.set_content("Hello through the SMTP backend.\n")
    with smtplib.SMTP(smtp_server.host, smtp_server.port, timeout=IO_TIMEOUT) as smtp:
        smtp.send_message(message, to_addrs=["one@example.com", "two@example.com"])
    received = [m for m in smtp_server.messages() if subject.encode() in m.data]
    assert len(received) == 1
    assert received[0].mail_from == "sender@example.com"
    assert received[0].rcpt_tos == ("one@example.com", "two@example.com")
    assert b"Hello through the SMTP backend." in received[0].data


def test_smtp_accepts_pipelined_commands(smtp_server: SMTPServer) -> None:
    smtp_server.clear()
    with socket.create_connection((smtp_server.host, smtp_server.port), timeout=IO_TIMEOUT) as sock:
        assert recv_line(sock).startswith(b"220 ")
        sock.sendall(
            b"HELO client\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n"
        )
        replies = [recv_line(sock)[:3] for _ in range(4)]
        assert replies == [b"250", b"250", b"250", b"354"]
        sock.sendall(b"Subject: pipelined\r\n\r\nbody\r\n.\r\nQUIT\r\n")
        assert recv_line(sock).startswith(b"250 ")
        assert recv_line(sock).startswith(b"221 ")
    (received,) = smtp_server.messages()
    assert received.rcpt_tos == ("b@example.com",)
    assert received.data == b"Subject: pipelined\r\n\r\nbody\r\n"
    smtp_server.clear()
    assert smtp_server.messages() == []


# --- http -------------------------------------------------------------------


def test_http_routes(http_server: HTTPServer) -> None:
    with requests.Session() as session:
        root = session.get(http_server.url(), timeout=IO_TIMEOUT)
        assert root.status_code == 200
        assert root.text.startswith("Hello")
        body = session.get(http_server.url("/bytes/300000"), timeout=IO_TIMEOUT)
        assert body.headers["Content-Length"] == "300000"
        assert body.content == http_server.pattern(300000)
        chunked = session.get(http_server.url("/chunked?chunks=5&size=1000"), timeout=IO_TIMEOUT)
        assert chunked.headers["Transfer-Encoding"] == "chunked"
        assert chunked.content == http_server.pattern(5000)
        assert session.get(http_server.url("/status/503")).status_code == 503
        no_content = session.get(http_server.url("/status/204"), timeout=IO_TIMEOUT)
        assert (no_content.status_code, no_content.content) == (204, b"")
        assert session.get(http_server.url("/nowhere")).status_code == 404
        assert session.get(http_server.url("/bytes/-1")).status_code == 400
        headers = session.get(
            http_server.url("/headers"), headers={"X-Test": "42"}, timeout=IO_TIMEOUT
        )
        assert json.loads(headers.content)["X-Test"] == "42"
        head = session.head(http_server.url("/bytes/10"), timeout=IO_TIMEOUT)
        assert (head.headers["Content-Length"], head.content) == ("10", b"")


def test_http_echo_with_length_and_chunked_bodies(http_server: HTTPServer) -> None:
    payload = bytes(range(256)) * 1000
    echoed = requests.post(http_server.url("/echo"), data=payload, timeout=IO_TIMEOUT)
    assert echoed.content == payload
    pieces = (payload[i : i + 10000] for i in range(0, len(payload), 10000))
    echoed = requests.post(http_server.url("/echo"), data=pieces, timeout=IO_TIMEOUT)
    assert echoed.content == payload
    bad_length = requests.post(
        http_server.url("/echo"), headers={"Content-Length": "x"}, timeout=IO_TIMEOUT
    )
    assert bad_length.status_code == 400


def test_http_slow_route_waits(http_server: HTTPServer) -> None:
    started = time.monotonic()
    response = requests.get(http_server.url("/slow?s=0.3"), timeout=IO_TIMEOUT)
    assert response.status_code == 200
    assert time.monotonic() - started >= 0.3


def test_http_keeps_the_connection_alive(http_server: HTTPServer) -> None:
    connection = http.client.HTTPConnection(http_server.host, http_server.port, timeout=IO_TIMEOUT)
    try:
        connection.request("GET", "/bytes/100")
        assert connection.getresponse().read() == http_server.pattern(100)
        first_socket = connection.sock
        connection.request("GET", "/chunked")
        assert connection.getresponse().read() == http_server.pattern(4096)
        assert connection.sock is first_socket
    finally:
        connection.close()


# --- echo -------------------------------------------------------------------


def test_echo_returns_bytes_and_propagates_half_close(echo_server: Server) -> None:
    payload = bytes(range(256)) * 4096  # 1 MiB, more than socket buffers hold
    with socket.create_connection((echo_server.host, echo_server.port), timeout=IO_TIMEOUT) as sock:

        def send_then_half_close() -> None:
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)

        writer = threading.Thread(target=send_then_half_close)
        writer.start()
        received = recv_until_eof(sock)  # EOF: the server half-closed too
        writer.join(IO_TIMEOUT)
    assert received == payload


def test_echo_serves_many_clients_at_once(echo_server: Server) -> None:
    address = (echo_server.host, echo_server.port)
    clients = [socket.create_connection(address, timeout=IO_TIMEOUT) for _ in range(50)]
    try:
        for i, sock in enumerate(clients):
            sock.sendall(b"client %d\n" % i)
        for i, sock in enumerate(clients):
            expected = b"client %d\n" % i
            received = b""
            while len(received) < len(expected):
                received += sock.recv(len(expected) - len(received))
            assert received == expected
    finally:
        for sock in clients:
            sock.close()


# --- the helpers' own failure paths -----------------------------------------


def test_missing_binary_skips_outside_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="no-such-server"):
        servers.require_binary("no-such-server")


def test_missing_binary_fails_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="no-such-server.*CI is set"):
        servers.require_binary("no-such-server")


def test_a_server_that_dies_fails_with_its_log(tmp_path: Path) -> None:
    def command(port: int) -> list[str]:
        return [sys.executable, "-c", f"print('cannot serve {port}'); exit(3)"]

    with pytest.raises(pytest.fail.Exception) as caught:
        servers.start_on_free_port("doomed", command, tmp_path, lambda port: False)
    message = str(caught.value)
    assert "doomed on port" in message
    assert "exited with code 3 before answering" in message
    assert "cannot serve" in message


LISTENER = """
import pathlib, socket, sys, time
marker = pathlib.Path("tried")
if not marker.exists():
    marker.touch()
    sys.exit("bind: Address already in use")
listener = socket.create_server(("127.0.0.1", int(sys.argv[1])))
while True:
    time.sleep(1)
"""


def test_a_port_clash_is_retried_on_another_port(tmp_path: Path) -> None:
    def command(port: int) -> list[str]:
        return [sys.executable, "-c", LISTENER, str(port)]

    def listening(port: int) -> bool:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except OSError:
            return False
        return True

    process, port = servers.start_on_free_port("clash", command, tmp_path, listening)
    assert (tmp_path / "tried").exists()
    assert listening(port)
    assert process.stop() is None  # still running until stopped
    assert process.process.returncode is not None


def test_a_server_dying_during_the_tests_fails_them(tmp_path: Path) -> None:
    process, _ = servers.start_backend("echo", tmp_path, lambda port: True)
    expected = pytest.raises(pytest.fail.Exception, match="while the tests were using")
    with expected, servers.supervised(process):
        process.process.kill()
        process.process.wait()
