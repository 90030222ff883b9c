"""hang: the data is swallowed, nothing is answered, the idle timeout ends it."""

import time

import pytest


def test_nothing_forwarded_and_no_answer(echo_backend, start_proxy):
    proxy = start_proxy(echo_backend.address, behavior="100:hang", timeout=1.5)
    with proxy.connect() as client:
        client.sendall(b"hello?")
        client.settimeout(0.5)
        with pytest.raises(TimeoutError):
            client.recv(10)
        assert echo_backend.received == 0
        # The idle timeout closes the session.
        client.settimeout(10)
        start = time.monotonic()
        assert client.recv(10) == b""
        assert time.monotonic() - start < 8
