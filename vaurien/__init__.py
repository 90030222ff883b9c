"""Vaurien, the chaos TCP proxy."""

from typing import Any

__version__ = "2.0.0.dev0"

# The 1.x shortcuts, imported on first use: importing vaurien does not import requests.
_LAZY = {
    "Client": "vaurien.client",
    "start_proxy": "vaurien.util",
    "stop_proxy": "vaurien.util",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'vaurien' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
