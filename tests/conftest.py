"""Shared fixtures: the real backend servers of tests/servers.py."""

pytest_plugins = ["servers"]
