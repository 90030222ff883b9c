"""Chains: a mix entry of several behaviors (``30:delay+bandwidth``) acts on the same event, each
behavior in turn, the bytes one moves feeding the next; over real sockets, tcp and redis."""

from __future__ import annotations

import os
import random
import socket
import threading
import time

import pytest
import redis

from support import recv_exactly, wait_until
from vaurien.behaviors import Behavior
from vaurien.chain import Chain
from vaurien.mix import Mix, read_spec

RATE_KIB = 64


def make(spec, options=None, duplex=True):
    behaviors = Behavior.copy()
    return Mix.create(
        read_spec(spec, behaviors),
        behaviors,
        options or {},
        duplex=duplex,
        random=random.Random(0).random,
    )


def options(**by_behavior):
    return {("behavior", name): values for name, values in by_behavior.items()}


def read_all(sock):
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


# -- the chain as the mix builds it ------------------------------------------------------------


def test_an_entry_of_several_names_is_picked_as_one_chain_of_their_instances():
    mix = make("30:delay+bandwidth,10:delay", {"delay": {"sleep": 0.5}})
    chains = {id(choice): choice for choice in mix._choices if isinstance(choice, Chain)}
    [chain] = chains.values()
    assert chain.name == "delay+bandwidth"
    assert chain.members == (mix.behaviors["delay"], mix.behaviors["bandwidth"])
    assert chain.members[0].settings["sleep"] == 0.5  # each member keeps its own options
    assert str(mix.spec) == "30:delay+bandwidth,10:delay,60:dummy"


@pytest.mark.parametrize(
    "delay, bandwidth, sits_out, both_ways, to_backend, to_client",
    [
        ("both", "both", None, True, ["delay", "bandwidth"], ["delay", "bandwidth"]),
        ("to_backend", "to_client", None, True, ["delay"], ["bandwidth"]),
        ("to_backend", "upstream", False, False, ["delay", "bandwidth"], []),
        ("to_client", "downstream", True, False, [], ["delay", "bandwidth"]),
    ],
)
def test_a_chain_sits_out_a_direction_only_when_every_member_does(
    delay, bandwidth, sits_out, both_ways, to_backend, to_client
):
    mix = make(
        "100:delay+bandwidth",
        {"delay": {"direction": delay}, "bandwidth": {"direction": bandwidth}},
    )
    [chain] = mix._choices
    assert (chain.sits_out, chain.both_ways) == (sits_out, both_ways)
    assert [member.name for member in chain.acting(True)] == to_backend
    assert [member.name for member in chain.acting(False)] == to_client


def test_a_chain_is_duplex_only_when_every_member_is():
    assert make("100:delay+bandwidth").exclusive is False
    assert make("100:delay+bandwidth")._choices[0].duplex is True


# -- tcp ----------------------------------------------------------------------------------------


def test_a_gate_then_a_mover_delay_then_bandwidth(echo_backend, start_proxy):
    sleep = 0.3
    proxy = start_proxy(
        echo_backend.address,
        behavior="100:delay+bandwidth",
        plugin_options=options(
            delay={"sleep": sleep, "direction": "to_client"},
            bandwidth={"rate": RATE_KIB, "direction": "to_client"},
        ),
    )
    payload = os.urandom(RATE_KIB * 1024)  # one second's worth
    with proxy.connect(timeout=30) as client:
        start = time.monotonic()
        client.sendall(payload)
        first = client.recv(65536)
        first_at = time.monotonic() - start
        received = first + recv_exactly(client, len(payload) - len(first))
        elapsed = time.monotonic() - start
    assert received == payload
    assert first_at >= sleep - 0.02  # the delay came first
    assert elapsed >= sleep + 0.85  # then the rate: about a second for a second's worth
    assert elapsed < sleep + 3
    stats = proxy.call(proxy.proxy.stats)
    assert stats["behaviors"]["delay+bandwidth"] >= 1  # the answer; the request got dummy


def test_two_movers_the_first_ones_bytes_feed_the_second(echo_backend, start_proxy):
    # slicer cuts the data into small slices; limit then lets exactly 1000 bytes through.
    proxy = start_proxy(
        echo_backend.address,
        behavior="100:slicer+limit",
        plugin_options=options(
            slicer={
                "average_size": 100,
                "size_variation": 50,
                "delay": 0,
                "direction": "to_client",
            },
            limit={"bytes": 1000, "direction": "to_client"},
        ),
    )
    payload = os.urandom(5000)
    with proxy.connect() as client:
        client.sendall(payload)
        assert read_all(client) == payload[:1000]


def test_a_mover_reading_in_pieces_gets_all_it_was_handed(echo_backend, start_proxy):
    # bandwidth reads a second's worth per call; what slicer wrote is far more: all of it must
    # still arrive, in order, paced.
    rate = 16
    proxy = start_proxy(
        echo_backend.address,
        behavior="100:slicer+bandwidth",
        plugin_options=options(
            slicer={
                "average_size": 4096,
                "size_variation": 0,
                "delay": 0,
                "direction": "to_client",
            },
            bandwidth={"rate": rate, "direction": "to_client"},
        ),
    )
    payload = os.urandom(int(2.5 * rate * 1024))
    with proxy.connect(timeout=30) as client:
        start = time.monotonic()
        sender = threading.Thread(target=client.sendall, args=(payload,))
        sender.start()
        received = recv_exactly(client, len(payload))
        elapsed = time.monotonic() - start
        sender.join()
    assert received == payload
    assert elapsed >= 2.0


def test_a_gate_after_a_mover_holds_what_the_mover_passed(echo_backend, start_proxy):
    sleep = 0.3
    proxy = start_proxy(
        echo_backend.address,
        behavior="100:corrupt+delay",
        plugin_options=options(
            corrupt={"probability": 0, "direction": "to_client"},
            delay={"sleep": sleep, "direction": "to_client"},
        ),
    )
    with proxy.connect() as client:
        start = time.monotonic()
        client.sendall(b"hello")
        assert recv_exactly(client, 5) == b"hello"
        assert time.monotonic() - start >= sleep - 0.02


def test_a_dropping_member_ends_the_chain(echo_backend, start_proxy):
    # timeout 0 drops the data: delay, after it, has nothing to hold and nothing arrives.
    proxy = start_proxy(
        echo_backend.address,
        behavior="100:timeout+delay",
        plugin_options=options(
            timeout={"timeout": 0, "direction": "to_client"},
            delay={"sleep": 5, "direction": "to_client"},
        ),
    )
    with proxy.connect(timeout=1) as client:
        client.sendall(b"hello")
        with pytest.raises(TimeoutError):
            client.recv(10)
    wait_until(lambda: echo_backend.received == 5)


def test_the_end_of_stream_goes_through_every_member(recording_backend, start_proxy):
    # bandwidth reads the client's end of stream; slow_close after it still holds the close.
    delay = 0.4
    proxy = start_proxy(
        recording_backend.address,
        behavior="100:bandwidth+slow_close",
        plugin_options=options(
            bandwidth={"rate": 1024, "direction": "to_backend"},
            slow_close={"delay": delay, "direction": "to_backend"},
        ),
    )
    with proxy.connect() as client:
        client.sendall(b"ping")
        assert recv_exactly(client, 4) == b"ping"
        closed_at = time.monotonic()
        client.shutdown(socket.SHUT_WR)
        assert client.recv(10) == b""  # half-closed both ways, the backend's close came back
    recording = recording_backend.connections[0]
    wait_until(lambda: recording.eof_at)
    assert recording.data == b"ping"
    assert recording.eof_at - closed_at >= delay - 0.05


def test_each_member_keeps_its_direction(recording_backend, start_proxy):
    # delay holds what the client sends, corrupt garbles every byte the backend sends back.
    sleep = 0.3
    proxy = start_proxy(
        recording_backend.address,
        behavior="100:delay+corrupt",
        plugin_options=options(
            delay={"sleep": sleep, "direction": "to_backend"},
            corrupt={"probability": 1, "direction": "to_client"},
        ),
    )
    with proxy.connect() as client:
        sent_at = time.monotonic()
        client.sendall(b"A" * 64)
        echoed = recv_exactly(client, 64)
    recording = recording_backend.connections[0]
    assert recording.data == b"A" * 64  # untouched on its way in
    assert recording.chunks[0][0] - sent_at >= sleep - 0.02
    assert all(byte != ord("A") for byte in echoed)  # one bit flipped in each, on its way back


# -- a protocol that follows requests and answers -------------------------------------------------


def test_redis_a_chain_acts_on_the_request_and_on_its_answer(redis_server, start_proxy):
    sleep, rate = 0.3, 256
    proxy = start_proxy(
        redis_server.address,
        protocol="redis",
        behavior="100:delay+bandwidth",
        plugin_options=options(
            delay={"sleep": sleep, "direction": "to_backend"},
            bandwidth={"rate": rate, "direction": "to_client"},
        ),
    )
    host, port = proxy.address
    client = redis.Redis(host, port, protocol=2, socket_timeout=30, retry=None)
    value = os.urandom(rate * 1024)
    try:
        assert client.set("chained", value)
        start = time.monotonic()
        assert client.get("chained") == value
        elapsed = time.monotonic() - start
    finally:
        client.delete("chained")
        client.close()
    # The GET waited the delay on its way in, and its answer came at the rate on its way back.
    assert sleep + 0.85 <= elapsed < sleep + 5


def test_redis_movers_in_a_chain_pass_one_whole_request(redis_server, start_proxy):
    proxy = start_proxy(
        redis_server.address,
        protocol="redis",
        behavior="100:slicer+bandwidth",
        plugin_options=options(
            slicer={"average_size": 10, "size_variation": 5, "delay": 0, "direction": "to_backend"},
            bandwidth={"rate": 1024, "direction": "to_backend"},
        ),
    )
    host, port = proxy.address
    client = redis.Redis(host, port, protocol=2, socket_timeout=30, retry=None)
    value = os.urandom(50_000)
    try:
        assert client.set("sliced", value)
        assert client.get("sliced") == value
        pipe = client.pipeline(transaction=False)
        for i in range(20):
            pipe.set(f"sliced:{i}", i)
        assert all(pipe.execute())
    finally:
        client.delete("sliced", *(f"sliced:{i}" for i in range(20)))
        client.close()


def test_redis_an_error_first_answers_in_the_protocols_form(redis_server, start_proxy):
    proxy = start_proxy(
        redis_server.address,
        protocol="redis",
        behavior="100:error+bandwidth",
        plugin_options=options(bandwidth={"rate": 1024}),
    )
    host, port = proxy.address
    client = redis.Redis(host, port, protocol=2, socket_timeout=10, retry=None)
    try:
        with pytest.raises(redis.exceptions.ResponseError):
            client.get("anything")
        assert client.connection_pool  # the connection is still usable after the error
    finally:
        client.close()
