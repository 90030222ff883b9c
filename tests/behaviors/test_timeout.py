"""timeout: the data stops; with a timeout the connection is then closed, with 0 it is held."""

import time

import pytest

from support import recv_exactly, wait_until


def _proxy(start_proxy, backend, timeout):
    return start_proxy(
        backend,
        behavior="100:timeout",
        plugin_options={("behavior", "timeout"): {"timeout": timeout}},
    )


def test_timeout_drops_the_data_then_closes(recording_backend, start_proxy):
    proxy = _proxy(start_proxy, recording_backend.address, 0.5)
    with proxy.connect() as client:
        client.sendall(b"lost")
        start = time.monotonic()
        client.sendall(b"also lost")
        assert client.recv(10) == b""
        assert 0.45 <= time.monotonic() - start < 10
    wait_until(lambda: recording_backend.connections and recording_backend.connections[0].ended)
    assert recording_backend.connections[0].data == b""


def test_zero_drops_the_data_and_holds_the_connection(recording_backend, start_proxy):
    proxy = _proxy(start_proxy, recording_backend.address, 0)
    with proxy.connect() as client:
        client.sendall(b"lost")
        client.settimeout(0.5)
        with pytest.raises(TimeoutError):
            client.recv(10)  # nothing comes back, and the connection stays open
        proxy.call(proxy.proxy.set_behavior, "100:dummy")
        client.settimeout(10)
        client.sendall(b"flows again")
        assert recv_exactly(client, 11) == b"flows again"
    assert recording_backend.connections[0].data.startswith(b"flows again")
