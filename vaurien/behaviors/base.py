"""The convenience base class of behaviors."""

from __future__ import annotations

from typing import Any


class BaseBehavior:
    """A behavior that changes nothing; subclasses override the hooks they need.

    Every hook gets ``(protocol, source, dest, to_backend)``: the proxy's protocol instance, the
    :class:`~vaurien.endpoint.Endpoint` data is read from and the one it goes to, and the
    direction (true when the data goes from the client to the backend).

    * ``on_before_handle`` runs before the protocol handles the event; returning false means
      the behavior handled the event itself (read, dropped or answered the data) and the
      protocol's own handling is skipped.
    * ``on_between_handle`` runs once the request has reached the backend, before its answer is
      read (for a plain stream: once the chunk has been forwarded).
    * ``on_after_handle`` runs when the protocol is done with the event.

    Set ``duplex = False`` when a hook reads from ``dest``: the proxy then runs the events of a
    session one at a time, as Vaurien 1.x did, so that the other direction does not read the
    same bytes.
    """

    name: str = ""
    options: dict[str, tuple[Any, ...]] = {}
    duplex: bool = True

    def __init__(self) -> None:
        self.settings: dict[str, Any] = {}
        self.proxy: Any = None

    def option(self, name: str) -> Any:
        """The value of option ``name`` for this proxy (converted once, when it was set)."""
        return self.settings[name]

    def on_before_handle(self, protocol: Any, source: Any, dest: Any, to_backend: bool) -> bool:
        """Called before the protocol handles the event; false skips the protocol's handling."""
        return True

    def on_between_handle(self, protocol: Any, source: Any, dest: Any, to_backend: bool) -> bool:
        """Called after the request went to the backend, before the answer is read."""
        return True

    def on_after_handle(self, protocol: Any, source: Any, dest: Any, to_backend: bool) -> bool:
        """Called after the protocol handled the event."""
        return True
