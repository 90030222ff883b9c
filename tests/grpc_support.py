"""A gRPC service for the tests, without code generation: grpcio's generic handlers with
bytes in and out."""

from __future__ import annotations

import threading
from concurrent import futures

import grpc

SERVICE = "vaurien.test.Echo"


class GrpcBackend:
    """A grpcio server on a free port with a small service: ``Reverse`` (unary) and
    ``Count`` (server streaming: ``b"n,pause"`` asks for ``n`` messages, ``pause`` seconds
    apart). ``calls`` counts the calls that reached it, ``cancelled`` is set when a client
    cancelled a ``Count`` in the middle."""

    def __init__(self):
        self.calls = 0
        self.cancelled = threading.Event()
        handlers = {
            "Reverse": grpc.unary_unary_rpc_method_handler(self.reverse),
            "Count": grpc.unary_stream_rpc_method_handler(self.count),
        }
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
        self.server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(SERVICE, handlers),)
        )
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.address = f"127.0.0.1:{self.port}"
        self.server.start()

    def reverse(self, request, context):
        self.calls += 1
        return request[::-1]

    def count(self, request, context):
        self.calls += 1
        n, pause = request.split(b",")
        for i in range(int(n)):
            threading.Event().wait(float(pause))
            if not context.is_active():
                self.cancelled.set()
                return
            yield b"%d" % i

    def close(self) -> None:
        self.server.stop(0)


class Calls:
    """The service's methods on a channel."""

    def __init__(self, channel):
        self.reverse = channel.unary_unary(f"/{SERVICE}/Reverse")
        self.count = channel.unary_stream(f"/{SERVICE}/Count")

    def outcome(self, payload: bytes, timeout: float = 10):
        """The status of a ``Reverse`` call (its answer checked when it succeeds)."""
        try:
            answer = self.reverse(payload, timeout=timeout)
        except grpc.RpcError as e:
            return e.code()
        assert answer == payload[::-1]
        return grpc.StatusCode.OK


class ShopBackend:
    """A grpcio server on a free port with the two services of the rules page's example:
    ``shop.Inventory/Get`` (the stock of an item, bytes in and out) and the standard health
    check's ``grpc.health.v1.Health/Check`` (an empty request; the answer is the serialized
    ``HealthCheckResponse`` SERVING). ``calls`` counts the calls that reached it, by method."""

    SERVING = b"\x08\x01"  # HealthCheckResponse{status: SERVING}

    def __init__(self):
        self.calls = {"Get": 0, "Check": 0}
        self._lock = threading.Lock()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        self.server.add_generic_rpc_handlers(
            (
                grpc.method_handlers_generic_handler(
                    "shop.Inventory", {"Get": grpc.unary_unary_rpc_method_handler(self.get)}
                ),
                grpc.method_handlers_generic_handler(
                    "grpc.health.v1.Health",
                    {"Check": grpc.unary_unary_rpc_method_handler(self.check)},
                ),
            )
        )
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.address = f"127.0.0.1:{self.port}"
        self.server.start()

    def _count(self, method: str) -> None:
        with self._lock:
            self.calls[method] += 1

    def get(self, request, context):
        self._count("Get")
        return b"42 x " + request

    def check(self, request, context):
        self._count("Check")
        return self.SERVING

    def close(self) -> None:
        self.server.stop(0)
