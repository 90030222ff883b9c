"""blackout: the client's connection is closed at once."""

import time

from support import recv_exactly


def test_connection_closed_at_once_and_nothing_forwarded(echo_backend, start_proxy):
    proxy = start_proxy(echo_backend.address, behavior="100:blackout")
    with proxy.connect() as client:
        start = time.monotonic()
        client.sendall(b"anyone there?")
        assert client.recv(10) == b""
        assert time.monotonic() - start < 2
    assert echo_backend.received == 0


def test_partial_blackout_leaves_other_connections_working(echo_backend, start_proxy):
    proxy = start_proxy(echo_backend.address, behavior="50:blackout", seed=3)
    outcomes = []
    for _ in range(40):
        with proxy.connect() as client:
            client.sendall(b"ping")
            outcomes.append(recv_exactly(client, 4))
    assert outcomes.count(b"ping") >= 5
    assert outcomes.count(b"") >= 5
