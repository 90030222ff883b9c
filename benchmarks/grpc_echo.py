"""A gRPC echo service for the benchmarks, and unary calls to load it (grpcio).

``python -m benchmarks.grpc_echo`` serves one unary method, ``/bench.Echo/Echo``, which answers
each request with its own bytes, on 127.0.0.1 (a free port unless ``--port`` is given), prints
the port on one line and serves until it is killed. The method is declared with a generic
handler on raw bytes, so there is no code generation step and no message class.

:func:`unary_calls` is the client side, run by ``python -m benchmarks.load grpc``: client
processes, each with one channel and a number of calls in flight, for a number of seconds.
"""

from __future__ import annotations

import argparse
import multiprocessing
import queue
import sys
import threading
import time
from concurrent import futures
from typing import Any

SERVICE = "bench.Echo"
METHOD = f"/{SERVICE}/Echo"
CALL_TIMEOUT = 10.0  # seconds a call may take before it counts as failed
WORKERS = 8  # threads of the server's pool
# What a client says when another failed before they could start together (not the cause)
OTHER_FAILED = "gRPC client: another client failed before the start"


def serve(port: int) -> None:
    """Serve the echo method on 127.0.0.1:``port`` (0: a free one), print the port, serve."""
    import grpc

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=WORKERS))
    echo = grpc.unary_unary_rpc_method_handler(lambda request, context: request)
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(SERVICE, {"Echo": echo}),)
    )
    port = server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    print(port, flush=True)
    server.wait_for_termination()


def unary_calls(
    address: tuple[str, int], clients: int, in_flight: int, size: int, seconds: float
) -> dict[str, float]:
    """Unary echo calls of ``size`` bytes to ``address`` from ``clients`` processes, each
    keeping ``in_flight`` calls going on one channel for ``seconds``.

    The clients connect and make one untimed call, then start together. Every answer is
    compared with its request. Returns the calls answered and their rate (the sum of the
    clients' rates); raises ``ConnectionError`` when a call failed or an answer was wrong.
    """
    host, port = address
    context = multiprocessing.get_context()
    start = context.Barrier(clients)
    results = context.Queue()
    workers = [
        context.Process(
            target=_client,
            args=(f"{host}:{port}", in_flight, size, seconds, start, results),
            daemon=True,
        )
        for _ in range(clients)
    ]
    for worker in workers:
        worker.start()
    outcomes = []
    try:
        for _ in workers:
            outcomes.append(results.get(timeout=seconds + 3 * CALL_TIMEOUT + 30))
    except queue.Empty:
        raise ConnectionError(f"{clients - len(outcomes)} gRPC client(s) gave no result") from None
    finally:
        for worker in workers:
            worker.join(5)
            if worker.is_alive():
                worker.kill()
    errors = sorted(
        (outcome["error"] for outcome in outcomes if "error" in outcome),
        key=lambda error: error == OTHER_FAILED,  # the cause first
    )
    if errors:
        raise ConnectionError(errors[0])
    return {
        "calls": sum(outcome["calls"] for outcome in outcomes),
        "seconds": max(outcome["seconds"] for outcome in outcomes),
        "rate": sum(outcome["calls"] / outcome["seconds"] for outcome in outcomes),
    }


def _client(
    target: str,
    in_flight: int,
    size: int,
    seconds: float,
    start: threading.Barrier,
    results: multiprocessing.Queue,
) -> None:
    """One client process of :func:`unary_calls`: puts its outcome on ``results``."""
    try:
        import grpc
    except ImportError:
        start.abort()
        results.put({"error": "grpcio is not installed (the test extra has it)"})
        return
    payload = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
    try:
        with grpc.insecure_channel(target) as channel:
            echo = channel.unary_unary(METHOD)
            if echo(payload, timeout=CALL_TIMEOUT) != payload:
                raise ValueError("the answer differs from the request")
            start.wait(CALL_TIMEOUT)
            began = time.perf_counter()
            deadline = began + seconds
            if in_flight == 1:
                calls = _one_at_a_time(echo, payload, deadline)
            else:
                calls = _concurrently(echo, payload, deadline, in_flight)
            results.put({"calls": calls, "seconds": time.perf_counter() - began})
    except grpc.RpcError as e:
        start.abort()  # the other clients stop waiting for this one
        results.put({"error": f"gRPC call failed: {_status(e)}"})
    except threading.BrokenBarrierError:
        results.put({"error": OTHER_FAILED})
    except ValueError as e:
        start.abort()
        results.put({"error": f"gRPC client: {e}"})


def _one_at_a_time(echo: Any, payload: bytes, deadline: float) -> int:
    """Blocking calls one after the other until ``deadline``; the number made."""
    calls = 0
    while time.perf_counter() < deadline:
        if echo(payload, timeout=CALL_TIMEOUT) != payload:
            raise ValueError("the answer differs from the request")
        calls += 1
    return calls


def _concurrently(echo: Any, payload: bytes, deadline: float, in_flight: int) -> int:
    """Calls as futures, ``in_flight`` at a time, started until ``deadline``; each finished
    call makes room for the next. Returns the number made, once all of them are answered."""
    import grpc

    slots = threading.Semaphore(in_flight)
    failures: list[str] = []  # appended to by grpcio's threads

    def finished(call: Any) -> None:
        try:
            if call.result() != payload:
                failures.append("the answer differs from the request")
        except grpc.RpcError as e:
            failures.append(f"gRPC call failed: {_status(e)}")
        except grpc.FutureCancelledError:
            failures.append("gRPC call cancelled")
        slots.release()

    calls = 0
    while time.perf_counter() < deadline:
        if not slots.acquire(timeout=2 * CALL_TIMEOUT):
            raise ValueError(f"no call finished in {2 * CALL_TIMEOUT:.0f} s")
        echo.future(payload, timeout=CALL_TIMEOUT).add_done_callback(finished)
        calls += 1
    for _ in range(in_flight):  # wait for the calls still in flight
        if not slots.acquire(timeout=2 * CALL_TIMEOUT):
            raise ValueError(f"calls still in flight after {2 * CALL_TIMEOUT:.0f} s")
    if failures:
        raise ValueError(f"{len(failures)} of {calls} calls failed, the first: {failures[0]}")
    return calls


def _status(error: Any) -> str:
    """``'UNAVAILABLE: details'`` for a failed call (a ``grpc.RpcError``, also a ``grpc.Call``)."""
    return f"{error.code().name}: {error.details()}"


def main(argv: list[str] | None = None) -> int:
    """Serve the echo method; exit 1 with one line when grpcio is missing."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.grpc_echo", description=__doc__)
    parser.add_argument(
        "--port", type=int, default=0, help="port on 127.0.0.1 (default: a free one)"
    )
    args = parser.parse_args(argv)
    try:
        import grpc  # noqa: F401
    except ImportError:
        print("grpcio is not installed (the test extra has it)", file=sys.stderr)
        return 1
    try:
        serve(args.port)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
