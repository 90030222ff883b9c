"""Turns a Vaurien 1.x handler class into a behavior class.

The behavior registry adapts a class with a ``__call__`` and no hook on its own (see
:mod:`vaurien.behaviors`), and ``vaurien.handlers.Handler.register`` through it.
"""

from __future__ import annotations

from vaurien.behaviors.base import BaseBehavior
from vaurien.contract import EndpointLike, ProtocolLike

_ADAPTED = "__vaurien_behavior__"


def adapt_handler(handler_class: type) -> type:
    """The behavior class that runs ``handler_class``'s ``__call__`` for each event it is picked.

    The adapter is made once per handler class, so registering a handler twice is harmless.
    """
    adapted = vars(handler_class).get(_ADAPTED)
    if adapted is not None:
        return adapted

    class HandlerBehavior(BaseBehavior):
        # Handlers read the other side themselves, so their events run one at a time.
        duplex = False

        def __init__(self) -> None:
            super().__init__()
            self.handler = handler_class()

        def on_before_handle(
            self, protocol: ProtocolLike, source: EndpointLike, dest: EndpointLike, to_backend: bool
        ) -> bool:
            handler = self.handler
            handler.settings = self.settings
            handler.proxy = self.proxy
            client, backend = (source, dest) if to_backend else (dest, source)
            if not handler(client, backend, to_backend):
                source.session.close()
            return False

    HandlerBehavior.name = getattr(handler_class, "name", "")
    HandlerBehavior.options = getattr(handler_class, "options", {})
    HandlerBehavior.__doc__ = handler_class.__doc__
    HandlerBehavior.__qualname__ = HandlerBehavior.__name__ = f"{handler_class.__name__}Behavior"
    HandlerBehavior.__module__ = handler_class.__module__
    HandlerBehavior.handler_class = handler_class
    setattr(handler_class, _ADAPTED, HandlerBehavior)
    return HandlerBehavior
