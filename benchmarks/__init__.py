"""Benchmark harness for Vaurien: each measurement direct and through the proxy, in one run.

Run it with ``python -m benchmarks`` (see ``benchmarks/README.rst``).
"""
