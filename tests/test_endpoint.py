"""Endpoint, one side of a session, over real TCP connections on 127.0.0.1.

Each test runs in this thread's gevent hub: the endpoint waits on its own watchers, and the
peer is a gevent socket, so both sides can wait without blocking each other.
"""

import socket

import gevent
import gevent.socket
import pytest

from support import recv_exactly
from vaurien.endpoint import EOF, Endpoint, PipePool
from vaurien.memory_endpoint import MemoryEndpoint


class Session:
    """What an endpoint asks of its session: to be closed or reset."""

    def __init__(self):
        self.ended = None

    def close(self):
        self.ended = "closed"

    def reset(self):
        self.ended = "reset"


def tcp_pair():
    """Two connected gevent sockets on 127.0.0.1."""
    with gevent.socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        near = gevent.socket.create_connection(listener.getsockname())
        far, _ = listener.accept()
    return near, far


@pytest.fixture
def pairs():
    made = []

    def make(role="client"):
        near, far = tcp_pair()
        made.extend((near, far))
        return Endpoint(near, role, Session()), far

    yield make
    for sock in made:
        sock.close()


def test_unread_bytes_come_first_and_are_not_counted_as_consumed(pairs):
    endpoint, peer = pairs()
    peer.sendall(b"hello world")
    assert recv_exactly_from(endpoint, 11) == b"hello world"
    assert (endpoint.bytes_received, endpoint.bytes_consumed) == (11, 11)
    endpoint.unread(b"world")
    assert endpoint.has_pending and endpoint.bytes_consumed == 6
    peer.sendall(b"!")
    assert endpoint.recv(3) == b"wor"
    buffer = bytearray(10)
    assert endpoint.recv_into(buffer) == 2 and buffer[:2] == b"ld"
    assert not endpoint.has_pending
    assert endpoint.read() == b"!"
    assert endpoint.bytes_consumed == endpoint.bytes_received == 12


def recv_exactly_from(endpoint, size):
    data = b""
    while len(data) < size:
        data += endpoint.recv(size - len(data))
    return data


def test_read_returns_what_is_there_up_to_size(pairs):
    endpoint, peer = pairs()
    peer.sendall(b"a" * 300)
    data = recv_exactly_from(endpoint, 1)
    while len(data) < 300:
        chunk = endpoint.read(100)
        assert 1 <= len(chunk) <= 100
        data += chunk
    assert data == b"a" * 300
    peer.shutdown(socket.SHUT_WR)
    assert endpoint.read(100) == b""


def test_end_of_stream_is_a_value_equal_to_both_empty_strings(pairs):
    endpoint, peer = pairs()
    peer.shutdown(socket.SHUT_WR)
    data = endpoint.recv()
    assert data is EOF and endpoint.eof
    assert data == b"" and data == "" and not data
    assert not (data != "") and not (data != b"")
    assert hash(data) == hash(b"") and data != b"x"
    assert endpoint.read() == "" and endpoint.recv_into(bytearray(4)) == 0


def test_sendall_copies_only_what_the_peer_cannot_take_yet(pairs):
    endpoint, peer = pairs()
    size = 8 << 20  # far more than the kernel buffers hold: the first send is partial
    buffer = bytearray(b"x" * size)
    sender = gevent.spawn(endpoint.sendall, memoryview(buffer))
    gevent.sleep(0)  # sendall has sent what it could, copied the rest, and waits
    assert not sender.ready()
    buffer[:] = b"y" * size  # the caller reuses its buffer at once
    received = recv_exactly(peer, size)
    sender.get(timeout=10)
    assert received == b"x" * size


def test_a_second_sendall_waits_its_turn_behind_the_first(pairs):
    endpoint, peer = pairs()
    size = 8 << 20
    first = gevent.spawn(endpoint.sendall, b"1" * size)
    gevent.sleep(0)
    second = gevent.spawn(endpoint.sendall, b"2" * 10)
    received = recv_exactly(peer, size + 10)
    gevent.joinall([first, second], timeout=10, raise_error=True)
    assert received == b"1" * size + b"2" * 10


@pytest.mark.skipif(not PipePool.available, reason="os.splice is Linux only")
def test_splice_moves_the_bytes_in_the_kernel(pairs):
    source, client = pairs()
    dest, backend = pairs("backend")
    pipes = PipePool(size=65536, keep=1)
    payload = bytes(range(256)) * 4096
    sender = gevent.spawn(client.sendall, payload)
    receiver = gevent.spawn(recv_exactly, backend, len(payload))
    moved = 0
    while moved < len(payload):
        moved += source.splice_to(dest, pipes, 65536)
    assert receiver.get(timeout=10) == payload
    sender.get(timeout=10)
    assert source.bytes_received == len(payload) and source.last_read > 0
    client.shutdown(socket.SHUT_WR)
    assert source.splice_to(dest, pipes, 65536) == 0 and source.eof
    pipes.close()


def test_shutdown_half_closes_and_is_quiet_on_a_closed_socket(pairs):
    endpoint, peer = pairs()
    endpoint.shutdown(socket.SHUT_WR)
    assert peer.recv(10) == b""
    peer.sendall(b"still flowing the other way")
    assert recv_exactly_from(endpoint, 27) == b"still flowing the other way"
    endpoint.really_close()
    endpoint.shutdown(socket.SHUT_RDWR)  # no error: the socket is gone
    assert endpoint.closed


def test_close_and_reset_end_the_session(pairs):
    endpoint, _ = pairs()
    endpoint.close()
    assert endpoint.closed and endpoint.session.ended == "closed"
    other, _ = pairs()
    other.reset()
    assert other.closed and other.session.ended == "reset"


def test_really_close_with_reset_sends_a_tcp_rst(pairs):
    endpoint, peer = pairs()
    endpoint.really_close(reset=True)  # nothing unread: only SO_LINGER 0 makes it a reset
    with pytest.raises(ConnectionResetError):
        while peer.recv(10):
            pass


def test_plugins_may_set_only_the_attributes_there_are(pairs):
    endpoint, _ = pairs()
    endpoint._closed = True  # as the seed handlers do
    assert endpoint.closed
    with pytest.raises(AttributeError):
        endpoint.anything_else = 1


def test_a_memory_endpoint_stands_in_for_its_origin_with_what_was_written(pairs):
    endpoint, peer = pairs("backend")
    endpoint.states["x"] = 1
    held = MemoryEndpoint(endpoint)
    assert (held.role, held.session, held.states) == ("backend", endpoint.session, {"x": 1})
    assert held.fileno() == endpoint.fileno()  # public attributes come from origin
    with pytest.raises(AttributeError):
        assert held._fd is None  # never: not its socket internals, nothing may splice there
    held.sendall(b"hello ")
    held.write(memoryview(b"world"))
    assert held.send(b"!") == 1 and held.holds == 12
    assert held.recv(5) == b"hello"
    held.unread(b"HELLO")
    buffer = bytearray(6)
    assert held.recv_into(buffer) == 6 and buffer == b"HELLO "
    assert held.take() == b"world!" and not held.has_pending
    assert held.read() == EOF == ""
    assert held.last_read == 0 and not held.eof
    peer.close()
    assert endpoint.read() == EOF and held.eof
    held.close()
    assert endpoint.session.ended == "closed"
