"""transient: the first calls fail, then everything passes."""

from support import recv_exactly, wait_until


def test_first_calls_fail_then_pass(echo_backend, start_proxy):
    proxy = start_proxy(echo_backend.address)
    proxy.call(proxy.proxy.set_behavior, "100:transient", {"transient": {"agitate": 2}})
    with proxy.connect() as client:
        for _ in range(2):
            client.sendall(b"early exchange")
            assert recv_exactly(client, 14) != b"early exchange"
        for _ in range(5):
            client.sendall(b"later exchange")
            assert recv_exactly(client, 14) == b"later exchange"


def test_counter_belongs_to_the_proxy_and_restarts_when_set_again(echo_backend, start_proxy):
    proxy = start_proxy(echo_backend.address, behavior="100:transient")
    for _ in range(2):
        with proxy.connect() as client:
            client.sendall(b"x" * 10)
            assert recv_exactly(client, 10) != b"x" * 10
            client.sendall(b"y" * 10)
            assert recv_exactly(client, 10) == b"y" * 10
        # The closing session's last events count as calls too: let it end first.
        wait_until(lambda: not proxy.call(lambda: proxy.proxy.sessions))
        proxy.call(proxy.proxy.set_behavior, "100:transient")
