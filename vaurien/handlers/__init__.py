"""The handler API of early Vaurien releases, kept working.

A handler is a class with ``name``, ``options`` and
``__call__(client_sock, backend_sock, to_backend)`` that moves the data itself and returns false
to end the connection. ``Handler.register(cls)`` makes it a behavior of the same name, so it can
be used in ``--behavior`` specs, configured with ``--handler-NAME-OPTION`` (or
``--behavior-NAME-OPTION``) flags and ``[handler:NAME]`` sections.
"""

from __future__ import annotations

from typing import Any

from vaurien.behaviors import Behavior
from vaurien.behaviors.adapter import adapt_handler


class _HandlerRegistry:
    """Registers handler classes as behaviors (``Handler.register``)."""

    def register(self, cls: Any = None, *, name: str | None = None) -> Any:
        """Register handler ``cls`` as a behavior; returns ``cls`` (usable as a decorator)."""
        if cls is None:
            return lambda c: self.register(c, name=name)
        Behavior.register(adapt_handler(cls), name=name or getattr(cls, "name", None))
        return cls


Handler = _HandlerRegistry()

__all__ = ["Handler"]
