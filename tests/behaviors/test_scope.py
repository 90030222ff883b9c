"""--scope connection: one pick per connection, shared by both directions and kept."""

import time

import pytest

from support import recv_exactly, wait_until


def _outcomes(proxy, connections=30, exchanges=4):
    """For each connection, how many exchanges succeeded before it was closed."""
    outcomes = []
    for _ in range(connections):
        succeeded = 0
        with proxy.connect() as client:
            for index in range(exchanges):
                message = b"message %d" % index
                try:
                    client.sendall(message)
                    if recv_exactly(client, len(message)) != message:
                        break
                except OSError:
                    break
                succeeded += 1
        outcomes.append(succeeded)
    return outcomes


def test_connection_scope_is_wholly_fine_or_closed_at_once(echo_backend, start_proxy):
    proxy = start_proxy(echo_backend.address, behavior="50:blackout", scope="connection", seed=11)
    outcomes = _outcomes(proxy)
    assert set(outcomes) == {0, 4}, outcomes  # never closed midway after succeeding
    assert 5 <= outcomes.count(0) <= 25


def test_event_scope_closes_midway(echo_backend, start_proxy):
    # The contrast that makes the test above meaningful: per event, connections die midway.
    proxy = start_proxy(echo_backend.address, behavior="50:blackout", seed=11)
    outcomes = _outcomes(proxy)
    assert set(outcomes) - {0, 4}, outcomes


def test_a_new_mix_is_picked_from_on_open_connections(echo_backend, start_proxy):
    proxy = start_proxy(echo_backend.address, behavior="100:dummy", scope="connection")
    with proxy.connect() as client:
        client.sendall(b"one")
        assert recv_exactly(client, 3) == b"one"
        proxy.call(proxy.proxy.set_behavior, "100:blackout")
        client.sendall(b"two")
        assert client.recv(3) == b""
    wait_until(lambda: proxy.call(proxy.proxy.stats)["active_connections"] == 0)
    assert proxy.call(proxy.proxy.stats)["behaviors"]["blackout"] == 1


def test_both_directions_share_the_pick(recording_backend, start_proxy):
    # delay acts on the requests only, blackout on the answers only. Sharing one pick, a
    # connection has slow requests and whole answers, or fast requests and no answer; a pick
    # per direction would also give slow-and-closed and fast-and-fine connections.
    proxy = start_proxy(
        recording_backend.address,
        behavior="50:delay,50:blackout",
        scope="connection",
        seed=3,
        plugin_options={
            ("behavior", "delay"): {"sleep": 0.3, "direction": "to_backend"},
            ("behavior", "blackout"): {"direction": "to_client"},
        },
    )
    kinds = set()
    for index in range(16):
        with proxy.connect() as client:
            start = time.monotonic()
            client.sendall(b"request")
            answered = recv_exactly(client, 7) == b"request"
        recording = wait_until(
            lambda i=index: (
                len(recording_backend.connections) > i and recording_backend.connections[i].chunks
            )
        )
        slow = recording[0][0] - start >= 0.25
        kinds.add((slow, answered))
    assert kinds == {(True, True), (False, False)}, kinds


def test_scope_from_the_command_line_and_the_config_file(tmp_path, capsys):
    from vaurien.cli import main, parse_config
    from vaurien.errors import ConfigError

    assert parse_config(["--backend", "127.0.0.1:1"])[0].scope == "event"
    assert parse_config(["--backend", "127.0.0.1:1", "--scope", "connection"])[0].scope == (
        "connection"
    )
    ini = tmp_path / "vaurien.ini"
    ini.write_text("[vaurien]\nbackend = 127.0.0.1:1\nscope = connection\n")
    assert parse_config(["--config", str(ini)])[0].scope == "connection"
    ini.write_text("[vaurien]\nbackend = 127.0.0.1:1\nscope = session\n")
    with pytest.raises(ConfigError, match="scope: expected event or connection"):
        parse_config(["--config", str(ini)])
    assert main(["--backend", "127.0.0.1:1", "--scope", "sometimes"]) == 2
    assert "expected event or connection" in capsys.readouterr().err
