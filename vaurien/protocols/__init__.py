"""Protocols: how the proxy reads and forwards one event of a session.

``Protocol`` is the global registry of protocol classes. Register your own with
``Protocol.register(MyProtocol)`` (also a class decorator), name it by dotted path with
``--protocol``, or publish it under the ``vaurien.protocols`` entry-point group. Every module of
this package registers one built-in protocol.
"""

from __future__ import annotations

import importlib
import pkgutil

from vaurien.errors import PluginError
from vaurien.protocols.base import BaseProtocol
from vaurien.registry import Registry


def _check_protocol(cls: type) -> None:
    if not callable(getattr(cls, "handle", None)):
        raise PluginError(
            f"{cls.__module__}.{cls.__qualname__} is not a protocol: "
            f"subclass vaurien.protocols.base.BaseProtocol"
        )


Protocol = Registry("protocol", check=_check_protocol, entry_point_group="vaurien.protocols")

__all__ = ["BaseProtocol", "Protocol"]

for _module in pkgutil.iter_modules(__path__):
    if _module.name != "base":
        importlib.import_module(f"{__name__}.{_module.name}")
