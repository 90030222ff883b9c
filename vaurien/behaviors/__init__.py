"""Behaviors: what happens to the traffic of one event.

``Behavior`` is the global registry of behavior classes. Register your own with
``Behavior.register(MyBehavior)`` (also a class decorator), name it by dotted path in a
``--behavior`` spec, or publish it under the ``vaurien.behaviors`` entry-point group.
Every module of this package but ``base`` and ``adapter`` (1.x handlers) registers one
built-in behavior. Every behavior, built-in or not, also gets the ``direction`` option (see
:data:`vaurien.mix.DIRECTION_OPTION`).
"""

from __future__ import annotations

import importlib
import pkgutil

from vaurien.behaviors.adapter import adapt_handler
from vaurien.behaviors.base import BaseBehavior
from vaurien.errors import PluginError
from vaurien.mix import DIRECTION_OPTION
from vaurien.registry import Registry

HOOKS = ("on_before_handle", "on_between_handle", "on_after_handle", "on_close")


def _check_behavior(cls: type) -> None:
    if not any(callable(getattr(cls, hook, None)) for hook in HOOKS):
        raise PluginError(
            f"{cls.__module__}.{cls.__qualname__} is not a behavior: it has none of "
            f"on_before_handle, on_between_handle, on_after_handle"
        )


def _adapt(cls: type) -> type:
    """A class with no hook but a ``__call__`` is a Vaurien 1.x handler: wrap it."""
    if any(callable(getattr(cls, hook, None)) for hook in HOOKS):
        return cls
    if any("__call__" in vars(base) for base in cls.__mro__ if base is not object):
        return adapt_handler(cls)
    return cls


Behavior = Registry(
    "behavior",
    adapt=_adapt,
    check=_check_behavior,
    entry_point_group="vaurien.behaviors",
    common_options=DIRECTION_OPTION,
)

__all__ = ["Behavior", "BaseBehavior"]

for _module in pkgutil.iter_modules(__path__):
    if _module.name not in ("adapter", "base"):
        importlib.import_module(f"{__name__}.{_module.name}")
