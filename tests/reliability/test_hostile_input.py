"""Hostile input, for every registered protocol: random bytes and mutated valid traffic.

Whatever a client sends (and the echo backend sends the same bytes back, so the answer side of
a protocol gets them too), the session ends within the idle timeout, the proxy logs at most one
warning for it and never a traceback, the other sessions are not disturbed, and the proxy keeps
serving. New protocols are covered as soon as they register; SAMPLES gives them valid traffic
to mutate (a protocol without samples is fed generic lines).

``http2`` terminates HTTP/2 on both sides: whatever the client sends, the backend gets the
proxy's own HTTP/2, so its backend is an HTTP/2 server rather than the echo server (which would
send the proxy's preface back, and no HTTP/2 server does that).
"""

from __future__ import annotations

import logging
import random
import socket
import struct
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from support import recv_exactly, wait_until
from vaurien.protocols import Protocol

#: The proxy's idle timeout in these tests, and the margin allowed on top of it.
TIMEOUT = 0.5
MARGIN = 5.0
LINGER_RESET = struct.pack("ii", 1, 0)


def _mysql_packet(sequence: int, body: bytes) -> bytes:
    return len(body).to_bytes(3, "little") + bytes([sequence]) + body


def _postgres_message(kind: bytes, body: bytes = b"") -> bytes:
    return kind + struct.pack("!i", 4 + len(body)) + body


_POSTGRES_STARTUP = struct.pack("!ii", 30, 196608) + b"user\x00app\x00database\x00db\x00\x00"


def _http2_samples() -> list[bytes]:
    """A prior-knowledge request with a body, a GET, and an h2c upgrade (none without h2)."""
    try:
        from h2_support import h2_connection, request_head
    except ImportError:
        return []
    client = h2_connection(client_side=True)
    client.send_headers(1, request_head(b"/echo"))
    client.send_data(1, b"hello", end_stream=True)
    client.send_headers(3, request_head(b"/", b"GET"), end_stream=True)
    client.reset_stream(3)
    return [
        client.data_to_send(),
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00",
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\n"
        b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\n\r\n",
    ]


#: Valid (or valid-looking, with hostile sizes) client traffic of each protocol.
SAMPLES: dict[str, list[bytes]] = {
    "tcp": [b"hello\n", bytes(range(256))],
    "http": [
        b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n",
        b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
        b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    ],
    "redis": [
        b"*1\r\n$4\r\nPING\r\n",
        b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n",
        b"PING\r\n",
        b"*2\r\n$3\r\nGET\r\n$999999999999\r\n",
        b"*-5\r\n$-2\r\n",
        b"*99999999999\r\n",
    ],
    "memcache": [
        b"get key\r\n",
        b"set key 0 0 5\r\nhello\r\n",
        b"set key 0 0 99999999999\r\n",
        b"gets a b c d e f\r\n",
        b"VALUE key 0 5\r\nhello\r\nEND\r\n",
    ],
    "mysql": [
        _mysql_packet(0, b"\x03SELECT 1"),
        _mysql_packet(0, b"\x01"),
        b"\xff\xff\xff\x00" + b"x" * 64,
        _mysql_packet(0, b"\x0a8.0.0\x00" + b"\x00" * 40),
    ],
    "postgres": [
        _POSTGRES_STARTUP,
        _POSTGRES_STARTUP + _postgres_message(b"p", b"secret\x00"),
        struct.pack("!ii", 8, 80877103),  # SSLRequest
        struct.pack("!ii", 16, 80877102) + bytes(8),  # CancelRequest
        _POSTGRES_STARTUP + _postgres_message(b"Q", b"SELECT 1\x00") + _postgres_message(b"X"),
        struct.pack("!ii", 0x7FFFFFFF, 196608),
        _postgres_message(b"R", bytes(4)) + _postgres_message(b"Z", b"I"),
    ],
    "smtp": [
        b"EHLO client\r\n",
        b"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\nSubject: x\r\n\r\nbody\r\n.\r\n",
        b"220 ready\r\n",
        b"DATA\r\n" + b"x" * 2000 + b"\r\n",
        b"QUIT\r\n",
    ],
    "http2": _http2_samples(),
}
GENERIC = [b"hello\r\n", b"GET / HTTP/1.0\r\n\r\n", b"\x00\x00\x00\x01\x00"]
PROTOCOLS = Protocol.names()


@st.composite
def mutated(draw, samples: list[bytes]) -> bytes:
    """A sample with a few flipped bits, cuts, insertions and repetitions."""
    data = bytearray(draw(st.sampled_from(samples)))
    for _ in range(draw(st.integers(0, 4))):
        operation = draw(st.sampled_from(["flip", "cut", "insert", "repeat", "splice"]))
        if operation == "flip" and data:
            index = draw(st.integers(0, len(data) - 1))
            data[index] ^= 1 << draw(st.integers(0, 7))
        elif operation == "cut" and data:
            start = draw(st.integers(0, len(data) - 1))
            del data[start : draw(st.integers(start + 1, len(data)))]
        elif operation == "insert":
            index = draw(st.integers(0, len(data)))
            data[index:index] = draw(st.binary(min_size=1, max_size=64))
        elif operation == "repeat":
            data *= draw(st.integers(2, 4))
        elif operation == "splice":
            data += draw(st.sampled_from(samples))
    return bytes(data)


def noise() -> st.SearchStrategy[bytes]:
    """Uniformly random bytes (hypothesis's own binaries lean to small, simple values)."""
    return st.tuples(st.integers(0, 2**32 - 1), st.integers(1, 4096)).map(
        lambda drawn: random.Random(drawn[0]).randbytes(drawn[1])
    )


def traffic(protocol: str) -> st.SearchStrategy[list[bytes]]:
    """What one hostile client sends: a few writes, random bytes or mutated samples."""
    samples = SAMPLES.get(protocol, GENERIC)
    write = st.one_of(st.binary(min_size=1, max_size=4096), noise(), mutated(samples))
    return st.lists(write, min_size=1, max_size=4)


ENDINGS = ("half-close", "close", "reset", "keep-open")


def still_open(sock: socket.socket) -> bool:
    """True when the proxy has not ended this idle connection (checked without waiting)."""
    timeout = sock.gettimeout()
    sock.setblocking(False)
    try:
        return sock.recv(1, socket.MSG_PEEK) != b""
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        sock.settimeout(timeout)


def hostile_session(proxy, writes: list[bytes], ending: str) -> None:
    """Send ``writes`` and end as told; return once the proxy ended the session."""
    sock = proxy.connect(timeout=TIMEOUT + MARGIN)
    try:
        try:
            for data in writes:
                sock.sendall(data)
        except OSError:
            pass  # the proxy may end the session before everything was sent
        if ending == "close":
            sock.close()
        elif ending == "reset":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RESET)
            sock.close()
        else:
            if ending == "half-close":
                try:
                    sock.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
            # Whatever comes back, the proxy must end the session: it must not hang.
            try:
                while sock.recv(65536):
                    pass
            except TimeoutError:
                raise AssertionError(
                    f"session still open {TIMEOUT + MARGIN}s after the client went quiet"
                ) from None
            except OSError:
                pass
    finally:
        sock.close()


def run_hostile(protocol: str, echo_backend, start_proxy, caplog, examples: int) -> None:
    if protocol == "http2":
        pytest.importorskip("h2")
        from h2_support import H2Backend

        echo_backend = H2Backend()  # the backend only ever gets the proxy's own HTTP/2
    caplog.set_level(logging.INFO, logger="vaurien")
    proxy = start_proxy(echo_backend.address, protocol=protocol, timeout=TIMEOUT)

    def live_sessions() -> int:
        return proxy.call(proxy.proxy.stats)["live_sessions"]

    def all_served() -> bool:
        # Every connection made was accepted, and its session is over: a hostile client that
        # closed at once may still wait in the listen queue while no session is live.
        figures = proxy.call(proxy.proxy.stats)
        return figures["live_sessions"] == 0 and figures["total_connections"] >= 2 * sessions

    sessions = 0

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(writes=traffic(protocol), ending=st.sampled_from(ENDINGS))
    def session_ends(writes: list[bytes], ending: str) -> None:
        nonlocal sessions
        logged = len(caplog.records)
        with proxy.connect() as bystander:
            opened = time.monotonic()
            wait_until(lambda: live_sessions() == 1, TIMEOUT + MARGIN)
            hostile_session(proxy, writes, ending)
            sessions += 1
            if time.monotonic() - opened < TIMEOUT * 0.6:
                assert still_open(bystander), "a hostile session ended another session"
        # Both sessions are over on the proxy's side too (the bystander at once, the hostile
        # one within the timeout), so nothing this example caused is logged later.
        wait_until(all_served, TIMEOUT + MARGIN)
        records = caplog.records[logged:]
        tracebacks = [r for r in records if r.exc_info]
        assert not tracebacks, tracebacks[0].getMessage()
        warnings = [r for r in records if r.levelno >= logging.WARNING]
        # One line at most for the hostile session (and none for the bystander).
        assert len(warnings) <= 1, [r.getMessage() for r in warnings]

    session_ends()
    # The proxy is still serving: all sessions gone, and a new one reaches the backend.
    wait_until(lambda: live_sessions() == 0, TIMEOUT + MARGIN)
    connections = echo_backend.connections
    with proxy.connect() as sock:
        wait_until(lambda: echo_backend.connections > connections)
        if protocol == "tcp":
            sock.sendall(b"alive?")
            assert recv_exactly(sock, 6) == b"alive?"
    assert sessions >= examples // 2


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_hostile_input_never_hangs_nor_harms_the_proxy(protocol, echo_backend, start_proxy, caplog):
    run_hostile(protocol, echo_backend, start_proxy, caplog, examples=40)


@pytest.mark.full
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_hostile_input_many_examples(protocol, echo_backend, start_proxy, caplog):
    run_hostile(protocol, echo_backend, start_proxy, caplog, examples=500)
