"""What the proxy tells about its resources: live sessions and open descriptors."""

from __future__ import annotations

import logging
import os
import re

from support import recv_exactly, wait_until


def test_stats_count_live_sessions_and_open_fds(echo_backend, start_proxy):
    proxy = start_proxy(echo_backend.address)
    before = proxy.call(proxy.proxy.stats)
    assert before["live_sessions"] == 0
    # The proxy shares this process: its count is this process's count of descriptors.
    assert before["open_fds"] == len(os.listdir("/proc/self/fd")) - 1
    clients = [proxy.connect() for _ in range(3)]
    for client in clients:
        client.sendall(b"x")
        assert recv_exactly(client, 1) == b"x"
    during = proxy.call(proxy.proxy.stats)
    assert during["live_sessions"] == 3
    # Each session holds a client and a backend socket; the test holds the other ends and
    # the echo server one per connection: at least 6 more descriptors.
    assert during["open_fds"] >= before["open_fds"] + 6
    for client in clients:
        client.close()
    wait_until(lambda: proxy.call(proxy.proxy.stats)["live_sessions"] == 0)
    wait_until(lambda: echo_backend.connections == 3)


def test_a_debug_line_gives_live_sessions_and_open_fds(echo_backend, start_proxy, caplog):
    caplog.set_level(logging.DEBUG, logger="vaurien")
    proxy = start_proxy(echo_backend.address)
    with proxy.connect() as client:
        client.sendall(b"ping")
        assert recv_exactly(client, 4) == b"ping"
    pattern = re.compile(r"closed; 0 live sessions, \d+ open fds")
    wait_until(lambda: any(pattern.search(r.getMessage()) for r in caplog.records))


def test_get_stats_of_the_control_api_gives_them_too(echo_backend, start_proxy):
    import requests

    from control import ControlledProxy

    controlled = ControlledProxy(start_proxy(echo_backend.address))
    try:
        with controlled.connect() as client:
            client.sendall(b"x")
            assert recv_exactly(client, 1) == b"x"
            stats = requests.get(controlled.url + "/stats", timeout=10).json()
            assert stats["live_sessions"] == 1
            assert stats["open_fds"] > 0
    finally:
        controlled.stop()
