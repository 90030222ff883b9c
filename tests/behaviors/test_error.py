"""error on a plain stream: the backend's answer is garbled, after the warmup calls."""

import os

from support import recv_exactly


def test_answer_replaced_by_random_bytes(echo_backend, start_proxy):
    proxy = start_proxy(echo_backend.address, behavior="100:error")
    payload = os.urandom(1000)
    with proxy.connect() as client:
        client.sendall(payload)
        answer = recv_exactly(client, len(payload))
    assert len(answer) == len(payload)
    assert answer != payload
    assert echo_backend.received == len(payload)  # the request itself went through


def test_inject_inserts_garbage_in_the_real_answer(echo_backend, start_proxy):
    proxy = start_proxy(echo_backend.address)
    proxy.call(proxy.proxy.set_behavior, "100:error", {"error": {"inject": True}})
    payload = b"A" * 500 + b"B" * 500
    with proxy.connect() as client:
        client.sendall(payload)
        answer = recv_exactly(client, len(payload) + 1)
        client.settimeout(0.3)
        try:
            answer += client.recv(4096)
        except TimeoutError:
            pass
    assert len(answer) > len(payload)
    assert answer.startswith(b"A" * 500) and answer.endswith(b"B" * 500)


def test_warmup_calls_pass_then_errors_start(echo_backend, start_proxy):
    proxy = start_proxy(echo_backend.address)
    # On a plain stream each chunk of the answer is a call.
    proxy.call(proxy.proxy.set_behavior, "100:error", {"error": {"warmup": 2}})
    with proxy.connect() as client:
        for _ in range(2):
            client.sendall(b"passing exchange")
            assert recv_exactly(client, 16) == b"passing exchange"
        client.sendall(b"failing exchange")
        assert recv_exactly(client, 16) != b"failing exchange"
