"""limit: exactly ``bytes`` bytes pass in a direction, then the connection is closed."""

import os
import threading

from support import wait_until


def _read_all(sock):
    chunks = []
    try:
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    except ConnectionResetError:
        pass
    return b"".join(chunks)


def test_the_client_gets_exactly_the_limit_then_the_close(echo_backend, start_proxy):
    proxy = start_proxy(
        echo_backend.address,
        behavior="100:limit",
        plugin_options={("behavior", "limit"): {"bytes": 1000, "direction": "to_client"}},
    )
    payload = os.urandom(300)
    with proxy.connect() as client:
        received = b""
        for _ in range(10):  # 3000 bytes asked for, in steps of 300
            client.sendall(payload)
            chunk = _read_all(client) if len(received) >= 900 else client.recv(300)
            received += chunk
            if len(received) >= 1000 or not chunk:
                break
        received += _read_all(client)
    assert len(received) == 1000
    assert received == (payload * 4)[:1000]


def test_the_backend_gets_exactly_the_limit(recording_backend, start_proxy):
    proxy = start_proxy(
        recording_backend.address,
        behavior="100:limit",
        plugin_options={("behavior", "limit"): {"bytes": 777, "direction": "to_backend"}},
    )
    payload = os.urandom(5000)
    with proxy.connect() as client:
        client.sendall(payload)
        _read_all(client)
    wait_until(lambda: recording_backend.connections and recording_backend.connections[0].ended)
    assert recording_backend.connections[0].data == payload[:777]


def test_the_count_belongs_to_each_connection(echo_backend, start_proxy):
    proxy = start_proxy(
        echo_backend.address,
        behavior="100:limit",
        plugin_options={("behavior", "limit"): {"bytes": 5000, "direction": "to_client"}},
    )
    results = []

    def run():
        with proxy.connect() as client:
            received = b""
            while len(received) < 5000:
                client.sendall(b"x" * 1000)
                chunk = client.recv(1000)
                if not chunk:
                    break
                received += chunk
            results.append(len(received + _read_all(client)))

    threads = [threading.Thread(target=run) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert results == [5000, 5000, 5000]
