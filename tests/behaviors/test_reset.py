"""reset: the client sees a TCP RST, after the timeout."""

import time

import pytest


def _reset_proxy(start_proxy, backend, timeout):
    return start_proxy(
        backend,
        behavior="100:reset",
        plugin_options={("behavior", "reset"): {"timeout": timeout}},
    )


def test_reset_at_once_is_econnreset(echo_backend, start_proxy):
    proxy = _reset_proxy(start_proxy, echo_backend.address, 0)
    with proxy.connect() as client:
        client.sendall(b"hello")
        with pytest.raises(ConnectionResetError):
            client.recv(10)


def test_reset_after_the_timeout(recording_backend, start_proxy):
    proxy = _reset_proxy(start_proxy, recording_backend.address, 0.5)
    with proxy.connect() as client:
        client.sendall(b"hello")
        start = time.monotonic()
        with pytest.raises(ConnectionResetError):
            client.recv(10)
        assert 0.45 <= time.monotonic() - start < 10
    # The data was dropped, never forwarded.
    assert recording_backend.connections[0].data == b""
