"""Vaurien, the chaos TCP proxy."""

__version__ = "2.0.0.dev0"
