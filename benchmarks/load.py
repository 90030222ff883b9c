"""Load generators for the benchmarks, each a subprocess that prints one JSON line.

``python -m benchmarks.load rtt HOST:PORT --count N``
    N request/response round trips of ``--size`` bytes on one connection; latency percentiles.
``python -m benchmarks.load connect HOST:PORT --count N``
    N times: connect, one round trip, close; latency percentiles.
``python -m benchmarks.load concurrent HOST:PORT --connections N --rounds R``
    N connections opened at once, R round trips each, all driven by one epoll loop; the total
    time. ``--window W`` keeps at most W connects under way (the others start as those end),
    so that a listen queue shorter than N does not overflow into SYN retransmits; every
    connection still stays open to the end. With ``--hold`` the connections stay open after
    the JSON line until a line (or EOF) arrives on standard input, so the caller can measure
    the proxy with all of them open.
``python -m benchmarks.load memcache HOST:PORT --connections N --depth D --seconds T``
    Pipelined memcached text commands on N connections from one epoll loop: each connection
    writes D commands at once and waits for their D answers before it writes the next batch,
    alternating a batch of ``set`` and a batch of ``get`` on a key of its own (as
    ``redis-benchmark -P D`` does). Runs for T seconds or ``--count`` requests, whichever ends
    first; the requests answered per second.
``python -m benchmarks.load grpc HOST:PORT --connections N --depth D --size S --seconds T``
    Unary gRPC calls of S bytes to ``python -m benchmarks.grpc_echo`` from N client processes,
    each with one channel and D calls in flight (D = 1: one blocking call after the other),
    for T seconds; the calls answered per second (``benchmarks/grpc_echo.py``, needs grpcio).
``python -m benchmarks.load dashboards HOST:PORT --connections N``
    N open dashboards: N streams of ``GET /dashboard/events`` from the control API on HOST:PORT,
    read from one epoll loop as browser tabs read them. Prints a JSON line once every stream
    has had a sample, reads on until a line (or EOF) arrives on standard input, then prints the
    samples read.

Plain blocking sockets (or one epoll loop) and preallocated buffers keep the Python cost per
round trip to a few microseconds; the direct numbers in each run show the floor this sets.
"""

from __future__ import annotations

import argparse
import errno
import json
import select
import socket
import sys
import time
from typing import Any

from benchmarks.limits import raise_open_files_limit


def parse_address(text: str) -> tuple[str, int]:
    """``'127.0.0.1:8000'`` -> ``('127.0.0.1', 8000)``."""
    host, _, port = text.rpartition(":")
    return host, int(port)


def percentiles(samples_ns: list[int]) -> dict[str, float]:
    """p50, p99 and max of ``samples_ns``, in microseconds."""
    ordered = sorted(samples_ns)
    last = len(ordered) - 1
    return {
        "p50_us": ordered[round(0.50 * last)] / 1000,
        "p99_us": ordered[round(0.99 * last)] / 1000,
        "max_us": ordered[last] / 1000,
        "count": len(ordered),
    }


def _exchange(sock: socket.socket, payload: bytes, buffer: bytearray) -> None:
    """Send ``payload`` and read the same number of bytes back into ``buffer``; check them."""
    sock.sendall(payload)
    view = memoryview(buffer)
    got = 0
    size = len(payload)
    while got < size:
        n = sock.recv_into(view[got:])
        if n == 0:
            raise ConnectionError(f"connection closed after {got} of {size} bytes")
        got += n
    if buffer != payload:
        raise ConnectionError("the echo differs from what was sent")


def round_trips(address: tuple[str, int], count: int, size: int, warmup: int) -> dict[str, float]:
    """Time ``count`` round trips of ``size`` bytes on one connection."""
    payload = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
    buffer = bytearray(size)
    samples = [0] * count
    clock = time.perf_counter_ns
    with socket.create_connection(address, timeout=10) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for _ in range(warmup):
            _exchange(sock, payload, buffer)
        for i in range(count):
            start = clock()
            _exchange(sock, payload, buffer)
            samples[i] = clock() - start
    return percentiles(samples)


def connect_round_trips(
    address: tuple[str, int], count: int, size: int, warmup: int
) -> dict[str, float]:
    """Time ``count`` times: open a connection, one round trip of ``size`` bytes, close."""
    payload = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
    buffer = bytearray(size)
    samples = [0] * count
    clock = time.perf_counter_ns
    for i in range(-warmup, count):
        start = clock()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.settimeout(10)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.connect(address)
            _exchange(sock, payload, buffer)
        finally:
            sock.close()
        if i >= 0:
            samples[i] = clock() - start
    return percentiles(samples)


def concurrent(
    address: tuple[str, int],
    connections: int,
    rounds: int,
    size: int,
    timeout: float,
    window: int = 0,
) -> tuple[dict[str, float], list[socket.socket]]:
    """Open ``connections`` at once and do ``rounds`` round trips on each, from one epoll loop;
    with ``window``, at most that many connects are under way at a time.

    Returns the result and the sockets still open (those that finished every round).
    """
    payload = b"x" * size
    poller = select.epoll()
    sockets: dict[int, socket.socket] = {}
    connecting: set[int] = set()
    slowest_connect = 0.0  # seconds from the start to the last connection established
    left: dict[int, int] = {}  # fd -> answers still awaited
    received: dict[int, int] = {}  # fd -> bytes of the current answer received so far
    finished: list[socket.socket] = []
    failures: dict[str, int] = {}
    start = time.perf_counter()
    deadline = start + timeout

    def fail(fd: int, code: int) -> None:
        if fd in sockets:
            poller.unregister(fd)
            sockets.pop(fd).close()
        reason = errno.errorcode.get(code, "closed")
        failures[reason] = failures.get(reason, 0) + 1

    to_open = connections

    def open_more() -> None:
        nonlocal to_open
        while to_open and (not window or len(connecting) < window):
            to_open -= 1
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            code = sock.connect_ex(address)
            if code not in (0, errno.EINPROGRESS):
                sock.close()
                fail(-1, code)
                continue
            fd = sock.fileno()
            sockets[fd] = sock
            connecting.add(fd)
            left[fd] = rounds
            received[fd] = 0
            poller.register(fd, select.EPOLLOUT)

    open_more()
    while sockets and time.perf_counter() < deadline:
        for fd, _events in poller.poll(max(0.0, deadline - time.perf_counter())):
            sock = sockets[fd]
            if fd in connecting:
                connecting.discard(fd)
                if to_open:
                    open_more()
                slowest_connect = time.perf_counter() - start
                code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if code:
                    fail(fd, code)
                    continue
                sock.send(payload)
                poller.modify(fd, select.EPOLLIN)
                continue
            try:
                data = sock.recv(65536)
            except OSError as e:
                fail(fd, e.errno or 0)
                continue
            if not data:
                fail(fd, 0)
                continue
            received[fd] += len(data)
            if received[fd] < size:
                continue
            received[fd] = 0
            left[fd] -= 1
            if left[fd]:
                sock.send(payload)
            else:
                poller.unregister(fd)
                finished.append(sockets.pop(fd))
    elapsed = time.perf_counter() - start
    if sockets:
        failures["timeout"] = len(sockets)
        for sock in sockets.values():
            sock.close()
    poller.close()
    result = {
        "seconds": elapsed,
        "open": len(finished),
        "failures": failures,
        "last_connect_seconds": slowest_connect,
    }
    return result, finished


def dashboards(address: tuple[str, int], connections: int, timeout: float) -> dict[str, Any]:
    """Hold ``connections`` dashboard streams open and read them until standard input says
    stop; print a line when all have had their first sample. Returns the samples read."""
    sample = b"event: sample\n"
    request = f"GET /dashboard/events HTTP/1.0\r\nHost: {address[0]}:{address[1]}\r\n\r\n"
    poller = select.epoll()
    streams: dict[int, socket.socket] = {}
    counts: dict[int, int] = {}
    tails: dict[int, bytes] = {}  # the end of the last read: a mark may be split between two
    for _ in range(connections):
        sock = socket.create_connection(address, timeout=timeout)
        sock.sendall(request.encode())
        sock.setblocking(False)
        streams[sock.fileno()] = sock
        counts[sock.fileno()] = 0
        tails[sock.fileno()] = b""
        poller.register(sock.fileno(), select.EPOLLIN)
    stdin = sys.stdin.fileno()
    poller.register(stdin, select.EPOLLIN)
    start = time.perf_counter()
    ready = False
    try:
        while True:
            events = poller.poll(timeout)
            if not events:
                raise OSError(errno.ETIMEDOUT, f"no sample for {timeout:g} s")
            for fd, _events in events:
                if fd == stdin:
                    return {"streams": len(streams), "samples": sum(counts.values())}
                data = streams[fd].recv(65536)
                if not data:
                    raise OSError(errno.ECONNRESET, "the control API closed a stream")
                seen = tails[fd] + data
                counts[fd] += seen.count(sample)
                tails[fd] = seen[-(len(sample) - 1) :]
            if not ready and all(counts.values()):
                ready = True
                seconds = time.perf_counter() - start
                print(json.dumps({"ready": len(streams), "seconds": seconds}), flush=True)
    finally:
        poller.close()
        for sock in streams.values():
            sock.close()


class _Pipeline:
    """One memcache connection of :func:`memcache`: its two batches and the answer in progress."""

    __slots__ = ("sock", "batches", "turn", "buffer", "view", "got")

    def __init__(self, sock: socket.socket, key: bytes, depth: int, value: bytes) -> None:
        self.sock = sock
        size = len(value)
        store = b"set %s 0 0 %d\r\n%s\r\n" % (key, size, value)
        found = b"VALUE %s 0 %d\r\n%s\r\nEND\r\n" % (key, size, value)
        # (requests, the answers they must get); the set comes first, so every get finds the key
        self.batches = (
            (store * depth, b"STORED\r\n" * depth),
            (b"get %s\r\n" % key * depth, found * depth),
        )
        self.turn = 0
        # one byte more than the longest answer, so an answer too long shows instead of filling it
        self.buffer = bytearray(max(len(answer) for _, answer in self.batches) + 1)
        self.view = memoryview(self.buffer)
        self.got = 0

    def send(self) -> None:
        """Write the next batch (on a fresh turn the socket's send buffer is empty)."""
        batch = self.batches[self.turn][0]
        try:
            sent = self.sock.send(batch)
        except BlockingIOError:
            sent = 0
        if sent < len(batch):  # only with batches larger than a send buffer
            self.sock.setblocking(True)
            self.sock.sendall(batch[sent:])
            self.sock.setblocking(False)

    def receive(self) -> bool:
        """Read what arrived; True once the whole batch is answered (as expected, or it raises)."""
        n = self.sock.recv_into(self.view[self.got :])
        if n == 0:
            raise ConnectionError(f"connection closed after {self.got} bytes of an answer")
        self.got += n
        expected = self.batches[self.turn][1]
        if self.got < len(expected) and expected.startswith(self.view[: self.got]):
            return False
        if self.view[: self.got] != expected:
            raise ConnectionError(f"unexpected answer: {bytes(self.view[: min(self.got, 80)])!r}")
        self.got = 0
        self.turn ^= 1
        return True


def memcache(
    address: tuple[str, int], connections: int, depth: int, size: int, seconds: float, count: int
) -> dict[str, float]:
    """Pipelined memcached ``set`` and ``get`` batches of ``depth`` on ``connections``.

    Runs for ``seconds`` or until ``count`` requests have been sent, then waits for the answers
    still due; the rate is the requests answered over the time until the last answer.
    """
    value = b"x" * size
    poller = select.epoll()
    pipelines: dict[int, _Pipeline] = {}
    try:
        for index in range(connections):
            sock = socket.create_connection(address, timeout=10)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setblocking(False)
            pipelines[sock.fileno()] = _Pipeline(sock, b"bench:%d" % index, depth, value)
            poller.register(sock.fileno(), select.EPOLLIN)
        start = time.perf_counter()
        deadline = start + seconds
        drained = deadline + 10  # answers still due after the deadline must come by then
        last = start
        sent = answered = 0
        for pipeline in pipelines.values():
            pipeline.send()
            sent += depth
        busy = len(pipelines)
        while busy:
            ready = poller.poll(max(0.0, drained - time.perf_counter()))
            if not ready:
                raise TimeoutError(f"{busy} connection(s) still waiting for answers")
            for fd, _events in ready:
                pipeline = pipelines[fd]
                if not pipeline.receive():
                    continue
                answered += depth
                last = time.perf_counter()
                if last < deadline and sent < count:
                    pipeline.send()
                    sent += depth
                else:
                    poller.unregister(fd)
                    busy -= 1
    finally:
        poller.close()
        for pipeline in pipelines.values():
            pipeline.sock.close()
    elapsed = last - start
    return {"requests": answered, "seconds": elapsed, "rate": answered / elapsed}


def main(argv: list[str] | None = None) -> int:
    """Run one load generator and print its result as one JSON line."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.load", description=__doc__)
    parser.add_argument(
        "mode", choices=["rtt", "connect", "concurrent", "memcache", "grpc", "dashboards"]
    )
    parser.add_argument("address", type=parse_address, help="HOST:PORT to load")
    parser.add_argument(
        "--count",
        type=int,
        default=10000,
        help="round trips (rtt, connect); most requests (memcache)",
    )
    parser.add_argument("--size", type=int, default=32, help="bytes per request (memcache: value)")
    parser.add_argument("--warmup", type=int, default=100, help="untimed round trips first")
    parser.add_argument(
        "--connections",
        type=int,
        default=5000,
        help="(concurrent, dashboards); client processes (grpc)",
    )
    parser.add_argument("--rounds", type=int, default=5, help="round trips each (concurrent)")
    parser.add_argument(
        "--timeout", type=float, default=60.0, help="seconds (concurrent, dashboards)"
    )
    parser.add_argument("--hold", action="store_true", help="keep connections open (concurrent)")
    parser.add_argument(
        "--wait",
        action="store_true",
        help="print a line, then start when standard input gives one (several generators start"
        " together)",
    )
    parser.add_argument(
        "--window", type=int, default=0, help="most connects under way, 0: all (concurrent)"
    )
    parser.add_argument(
        "--depth",
        type=int,
        default=16,
        help="commands per batch (memcache); calls in flight (grpc)",
    )
    parser.add_argument("--seconds", type=float, default=3.0, help="run time (memcache, grpc)")
    args = parser.parse_args(argv)
    raise_open_files_limit()
    held: list[socket.socket] = []
    if args.wait:
        print(json.dumps({"ready": True}), flush=True)
        sys.stdin.readline()
    try:
        if args.mode == "rtt":
            result = round_trips(args.address, args.count, args.size, args.warmup)
        elif args.mode == "connect":
            result = connect_round_trips(args.address, args.count, args.size, args.warmup)
        elif args.mode == "grpc":
            from benchmarks.grpc_echo import unary_calls  # grpcio is imported by its clients

            result = unary_calls(
                args.address, args.connections, args.depth, args.size, args.seconds
            )
        elif args.mode == "dashboards":
            result = dashboards(args.address, args.connections, args.timeout)
        elif args.mode == "memcache":
            result = memcache(
                args.address, args.connections, args.depth, args.size, args.seconds, args.count
            )
        else:
            result, held = concurrent(
                args.address, args.connections, args.rounds, args.size, args.timeout, args.window
            )
    except OSError as e:
        print(json.dumps({"error": f"{type(e).__name__}: {e}"}), flush=True)
        return 1
    print(json.dumps(result), flush=True)
    if args.hold:
        sys.stdin.readline()
    for sock in held:
        sock.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
