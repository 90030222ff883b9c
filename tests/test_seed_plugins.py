"""The plugin API of the "Extending Vaurien" pages keeps working."""

import socket

from support import recv_exactly
from vaurien.cli import parse_config


def http10_get(address):
    """One HTTP/1.0 exchange: the server answers and closes."""
    with socket.create_connection(address, timeout=10) as sock:
        sock.sendall(b"GET /bytes/3000 HTTP/1.0\r\nHost: x\r\n\r\n")
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_registered_handler_used_by_name(echo_backend, start_proxy):
    import seed_plugins  # noqa: F401 - registers MySuperHandler, as a user's module would

    config, _ = parse_config(["--backend", echo_backend.address, "--behavior", "100:super"])
    proxy = start_proxy(config=config, proxy="127.0.0.1:0")
    with proxy.connect() as client:
        client.sendall(b"shout")
        # Upper-cased on the way in; the echo is upper-cased again on the way back.
        assert recv_exactly(client, 5) == b"SHOUT"


def test_full_handler_example_by_dotted_path_with_handler_flag(echo_backend, start_proxy):
    config, _ = parse_config(
        [
            "--backend",
            echo_backend.address,
            "--behavior",
            "100:seed_plugins.Dummy",
            "--handler-legacy-dummy-keep-alive",
        ]
    )
    assert config.plugin_options[("behavior", "legacy_dummy")] == {"keep_alive": True}
    proxy = start_proxy(config=config)
    with proxy.connect() as client:
        for word in (b"one", b"two", b"three"):
            client.sendall(word)
            assert recv_exactly(client, len(word)) == word


def test_full_handler_example_from_a_config_section(http_server, start_proxy, tmp_path):
    ini = tmp_path / "vaurien.ini"
    ini.write_text(
        f"[vaurien]\nbackend = {http_server.address}\nbehavior = 100:foobar\n\n"
        "[handler:foobar]\ncallable = seed_plugins.Dummy\nreuse_socket = false\n"
    )
    config, _ = parse_config(["--config", str(ini)])
    proxy = start_proxy(config=config)
    answer = http10_get(proxy.address)
    assert b" 200 " in answer[:20] and answer.endswith(http_server.pattern(3000))


def test_seed_protocol_by_dotted_path(http_server, start_proxy):
    config, _ = parse_config(
        [
            "--backend",
            http_server.address,
            "--protocol",
            "seed_plugins:TCP",
            "--protocol-seed-tcp-buffer",
            "1024",
        ]
    )
    assert config.protocol == "seed_tcp"
    proxy = start_proxy(config=config)
    answer = http10_get(proxy.address)
    assert b" 200 " in answer[:20] and answer.endswith(http_server.pattern(3000))
