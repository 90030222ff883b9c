"""Base class for Vaurien 1.x-style handlers."""

from __future__ import annotations

from typing import Any


class BaseHandler:
    """A handler that forwards one chunk of data; subclass it and override ``__call__``.

    Besides ``name`` and ``options``, a handler gets two attributes when it is used:
    ``settings`` (its option values) and ``proxy`` (the proxy instance).
    """

    name: str = ""
    options: dict[str, tuple[Any, ...]] = {}

    def __init__(self) -> None:
        self.settings: dict[str, Any] = {}
        self.proxy: Any = None

    def option(self, name: str) -> Any:
        """The value of option ``name``."""
        return self.settings[name]

    def _get_data(self, client_sock: Any, backend_sock: Any, to_backend: bool) -> bytes:
        """Read what is available on the side the data comes from (``b''`` at end of stream)."""
        source = client_sock if to_backend else backend_sock
        return source.read()

    def __call__(self, client_sock: Any, backend_sock: Any, to_backend: bool) -> bool:
        """Forward one chunk of data to the other side; false once the source is exhausted."""
        data = self._get_data(client_sock, backend_sock, to_backend)
        if data:
            (backend_sock if to_backend else client_sock).sendall(data)
        return bool(data)
