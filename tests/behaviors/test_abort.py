"""abort: the request reaches the backend, the answer never reaches the client."""

from support import wait_until


def test_request_forwarded_answer_dropped(echo_backend, start_proxy):
    proxy = start_proxy(echo_backend.address, behavior="100:abort")
    with proxy.connect() as client:
        client.sendall(b"do the work")
        assert client.recv(100) == b""
    wait_until(lambda: echo_backend.received == 11, timeout=10)
