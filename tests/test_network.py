"""network.py: addresses, listening, and connecting to a backend, on real sockets."""

import contextlib
import errno
import os
import socket

import gevent
import gevent.socket
import pytest

from vaurien.errors import ConfigError, VaurienError
from vaurien.network import (
    Address,
    BackendConnector,
    PeerName,
    describe_failure,
    listen,
    open_fds,
)


@pytest.mark.parametrize(
    "text, address",
    [
        ("localhost:8000", Address("localhost", 8000)),
        (" 10.0.0.1:0 ", Address("10.0.0.1", 0)),
        ("[::1]:65535", Address("::1", 65535)),
    ],
)
def test_addresses_parse_and_print_back(text, address):
    assert Address.parse(text) == address
    assert Address.parse(str(address)) == address


@pytest.mark.parametrize(
    "text, message",
    [
        ("8000", "'8000': expected HOST:PORT"),
        ("[::1]8000", "'[::1]8000': expected [IPV6]:PORT"),
        ("::1:80", "'::1:80': write IPv6 addresses in brackets, as [::1]:8000"),
        (":80", "':80': missing host before the port"),
        ("host:65536", "'host:65536': port must be a number from 0 to 65535"),
        ("host:http", "'host:http': port must be a number from 0 to 65535"),
    ],
)
def test_each_bad_address_has_its_message(text, message):
    with pytest.raises(ConfigError) as info:
        Address.parse(text)
    assert str(info.value) == message


def test_a_peer_name_is_formatted_when_printed():
    assert str(PeerName(("127.0.0.1", 5000))) == "127.0.0.1:5000"
    assert str(PeerName(("::1", 5000, 0, 0))) == "[::1]:5000"
    assert str(PeerName("/run/socket")) == "/run/socket"


def test_listen_prepares_binds_and_names_the_address_it_cannot_take():
    prepared = []
    with listen(Address("127.0.0.1", 0), 16, prepared.append) as first:
        assert prepared == [first]
        port = first.getsockname()[1]
        with pytest.raises(VaurienError) as info:
            listen(Address("127.0.0.1", port), 16, what="control API")
    assert str(info.value).startswith(f"control API: cannot listen on 127.0.0.1:{port}: ")
    with pytest.raises(VaurienError, match="cannot listen on no-such-host.invalid:1: "):
        listen(Address("no-such-host.invalid", 1), 16)


def test_the_connector_connects_with_nodelay_and_reports_refusals():
    connector = BackendConnector(timeout=5)
    with socket.create_server(("127.0.0.1", 0)) as server:
        address = Address(*server.getsockname()[:2])
        with connector.connect(address) as sock:
            accepted, _ = server.accept()
            with accepted:
                sock.sendall(b"ping")
                assert accepted.recv(4) == b"ping"
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
            assert not sock.getblocking()
    with pytest.raises(ConnectionRefusedError):
        connector.connect(address)  # nothing listens there any more


@contextlib.contextmanager
def blackhole():
    """An address where connecting hangs: the accept queue is full, further SYNs are dropped."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        with socket.create_connection(listener.getsockname(), timeout=5):
            yield Address(*listener.getsockname())


def test_the_connector_gives_up_after_its_timeout():
    connector = BackendConnector(timeout=0.3)
    with blackhole() as address:
        started = gevent.get_hub().loop.now()
        with pytest.raises(TimeoutError):
            for _ in range(3):  # the queue of a listen(0) may take one or two first
                connector.connect(address).close()
        assert gevent.get_hub().loop.now() - started < 5


def test_the_backend_name_lookup_is_reused_for_the_next_connections(monkeypatch):
    lookups = []
    real = gevent.socket.getaddrinfo

    def counting(*args, **kwargs):
        lookups.append(args[:2])
        return real(*args, **kwargs)

    monkeypatch.setattr(gevent.socket, "getaddrinfo", counting)
    connector = BackendConnector(timeout=5)
    with socket.create_server(("127.0.0.1", 0)) as server:
        address = Address("localhost", server.getsockname()[1])
        for _ in range(3):
            connector.connect(address).close()
        assert lookups == [("localhost", address.port)]
        other = Address("127.0.0.1", address.port)
        connector.connect(other).close()  # another backend: looked up at once
        assert len(lookups) == 2


def test_a_failure_says_when_resources_ran_out():
    assert describe_failure(OSError(errno.EMFILE, "Too many open files")) == (
        "out of resources (Too many open files)"
    )
    assert describe_failure(ConnectionRefusedError(errno.ECONNREFUSED, "refused")) == "refused"
    assert describe_failure(TimeoutError("timed out")) == "timed out"


def test_open_fds_counts_this_process_descriptors():
    before = open_fds()
    assert before == len(os.listdir("/proc/self/fd")) - 1
    with socket.socket():
        assert open_fds() == before + 1
