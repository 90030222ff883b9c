"""tcp: the 1.x options keep a meaning in a full-duplex proxy; keep-alive probes are global."""

import socket

import pytest

from support import ProxyThread, recv_exactly, wait_until


def set_protocol_options(**options):
    return {"plugin_options": {("protocol", "tcp"): options}}


def test_buffer_bounds_the_data_of_one_event(echo_backend, start_proxy):
    from vaurien.proxy_config import ProxyConfig

    config = ProxyConfig(
        backend=echo_backend.address, proxy="127.0.0.1:0", **set_protocol_options(buffer=1000)
    )
    proxy = start_proxy(config=config)
    payload = b"z" * 100_000
    with proxy.connect() as client:
        client.sendall(payload)
        assert recv_exactly(client, len(payload)) == payload
    # 100 kB in reads of at most 1000 bytes: at least 100 events each way.
    assert proxy.call(proxy.proxy.stats)["behaviors"]["dummy"] >= 200


@pytest.mark.parametrize("keepalive", [True, False])
def test_tcp_keepalive_sets_keepalive_probes_on_both_sockets(echo_backend, keepalive):
    from vaurien.proxy_config import ProxyConfig

    config = ProxyConfig(backend=echo_backend.address, proxy="127.0.0.1:0", tcp_keepalive=keepalive)
    with ProxyThread(config) as proxy, proxy.connect() as client:
        client.sendall(b"x")
        assert recv_exactly(client, 1) == b"x"

        def keepalive_flags():
            session = next(iter(proxy.proxy.sessions))
            return [
                bool(endpoint.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE))
                for endpoint in (session.client, session.backend)
            ]

        assert proxy.call(keepalive_flags) == [keepalive, keepalive]


def test_reuse_socket_lets_two_proxies_share_a_port(echo_backend):
    from vaurien.proxy_config import ProxyConfig

    def config(port):
        return ProxyConfig(
            backend=echo_backend.address,
            proxy=f"127.0.0.1:{port}",
            **set_protocol_options(reuse_socket=True),
        )

    with ProxyThread(config(0)) as first:
        port = first.address[1]
        with ProxyThread(config(port)) as second:
            assert second.address[1] == port
            for _ in range(20):
                with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
                    client.sendall(b"shared")
                    assert recv_exactly(client, 6) == b"shared"
            wait_until(lambda: first.call(first.proxy.stats)["total_connections"] > 0)
            wait_until(lambda: second.call(second.proxy.stats)["total_connections"] > 0)


def test_a_direction_goes_back_to_the_callbacks_after_a_quiet_event(echo_backend, start_proxy):
    proxy = start_proxy(
        echo_backend.address,
        behavior="100:delay",
        plugin_options={("behavior", "delay"): {"sleep": 0.01}},
    )

    def greenlets():
        return proxy.call(lambda: [len(s.greenlets()) for s in proxy.proxy.sessions])

    with proxy.connect() as client:
        client.sendall(b"ping")
        assert recv_exactly(client, 4) == b"ping"
        assert greenlets() == [2]  # each direction had a delay: two pumps
        proxy.call(proxy.proxy.set_behavior, "100:dummy")
        for _ in range(3):  # a quiet event in each direction hands it back
            client.sendall(b"pong")
            assert recv_exactly(client, 4) == b"pong"
        wait_until(lambda: greenlets() == [0])
        client.sendall(b"more")
        assert recv_exactly(client, 4) == b"more"
