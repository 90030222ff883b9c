"""Test helpers: the control API of an in-process proxy, and a backend that says who it is."""

from __future__ import annotations

import socket
import threading
from typing import Any

from support import ProxyThread
from vaurien.api import ControlServer


def option_values(behavior: str, **given: Any) -> dict[str, Any]:
    """Every option value of a registered behavior: its defaults, ``given`` replacing some."""
    from vaurien.behaviors import Behavior

    return {name: option.default for name, option in Behavior.options(behavior).items()} | given


def known_options(behavior: str) -> str:
    """How the API lists a behavior's options in an error: ``before, direction, ...``."""
    from vaurien.behaviors import Behavior

    return ", ".join(sorted(Behavior.options(behavior))) or "none"


class ControlledProxy:
    """A :class:`ProxyThread` with its control API on a free loopback port, in its hub."""

    def __init__(self, thread: ProxyThread, token: str | None = None) -> None:
        self.thread = thread
        self.token = token
        self.server = thread.call(
            lambda: ControlServer(thread.proxy, "127.0.0.1", 0, token=token).start()
        )
        self.port = self.server.address[1]
        self.url = f"http://127.0.0.1:{self.port}"

    @property
    def proxy(self) -> Any:
        return self.thread.proxy

    def client(self) -> Any:
        from vaurien.client import Client

        return Client("127.0.0.1", self.port, token=self.token)

    def connect(self, timeout: float = 10.0) -> socket.socket:
        return self.thread.connect(timeout)

    def stop(self) -> None:
        self.thread.call(self.server.stop)


class GreetingServer:
    """A threaded TCP server that sends ``greeting`` to each client, then closes."""

    def __init__(self, greeting: bytes) -> None:
        self.greeting = greeting
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address = self.listener.getsockname()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with conn:
                try:
                    conn.sendall(self.greeting)
                except OSError:
                    pass

    def close(self) -> None:
        try:
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the accepting thread
        except OSError:
            pass
        self.listener.close()
