"""Run every benchmark direct and through Vaurien, and print medians, ratios and targets.

``python -m benchmarks`` (``--quick`` for a short run, ``--help`` for the knobs). Backends, proxies
and load tools all run on 127.0.0.1 as child processes of this one; see ``benchmarks/README.rst``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from benchmarks import postgres
from benchmarks.limits import raise_open_files_limit
from benchmarks.procs import (
    Budget,
    Child,
    Processes,
    TimeUp,
    Unavailable,
    cpu_seconds,
    free_port,
    pss_kib,
    write_line,
)
from benchmarks.table import (
    DASHBOARDS,
    GROUP_ROWS,
    GROUPS,
    GROWTH,
    make_rows,
    render,
    to_json,
)

REPO = Path(__file__).resolve().parent.parent
GIB = 1 << 30
PINNED = frozenset({0})  # the CPU of the pinned round trips, as `taskset -c 0`
HTTP_MIX = "10:error,10:delay"  # the mix of the protocols group's HTTP row (delays of 0 s)
UNREACHED_RATE = "100000000"  # KiB/s: a bandwidth cap far above what loopback moves
#: Ten rules that no request of the HTTP rows matches: what looking at each request costs.
TEN_RULES = tuple(
    arg
    for i in range(10)
    for arg in ("--rule", f"path=/api/{i}/* method=POST,PUT header.x-chaos=on => 100:error")
)
#: Ten rules that no command of redis-benchmark's GET/SET matches.
TEN_REDIS_RULES = tuple(
    arg for i in range(10) for arg in ("--rule", f"command=hset,del key=user:{i}:* => 100:error")
)
REDIS_PIPELINED_SCALE = 8  # pipelined redis runs make this many times --redis-requests
CLIENTS = 32  # connections of redis-benchmark (-c) and of the memcache load
PIPELINE = 16  # requests written at once by pipelined clients (redis-benchmark -P)
VALUE_SIZE = 3  # bytes of a value the memcache load sets, redis-benchmark's default (-d)
# gRPC loads by row: (client processes, calls in flight each), as the rows' labels say
GRPC_LOADS = {"grpc": (2, 32), "grpc_serial": (1, 1)}
GRPC_PAYLOAD = 100  # bytes of each gRPC request (and of its echoed answer)
# connects under way at once in the growth group: below the kernel's cap on listen queues
# (net.core.somaxconn, 4096 by default), which would otherwise turn into SYN retransmits
GROWTH_WINDOW = 1024
# descriptors a process keeps for itself besides its connections' sockets
SPARE_DESCRIPTORS = 100
T = TypeVar("T")


@dataclass(frozen=True)
class Settings:
    """Sizes and bounds of one run."""

    repeats: int
    bulk_seconds: int
    rtt_count: int
    connect_count: int
    concurrent: int
    rounds: int
    http_seconds: int
    http_connections: int
    redis_requests: int
    memcache_seconds: int
    groups: tuple[str, ...]
    time_limit: float
    json_path: Path | None
    fail_on_miss: bool
    vaurien_options: tuple[str, ...] = ()
    pgbench_seconds: int = 3
    grpc_seconds: int = 3
    growth: tuple[int, ...] = GROWTH
    plot_path: Path | None = None


@dataclass
class Comparison:
    """Rows that share one direct measurement, each with its own proxy.

    Each repeat, ``measure(port)`` runs once against the backend, and that sample is the direct
    side of every row; then once through each row's proxy (``through``, when it differs from
    ``measure``). A row whose proxy failed has ``None`` and is skipped.
    """

    measure: Callable[[int], float]
    backend: int
    proxies: dict[str, tuple[Child, int] | None]
    through: Callable[[int], float] | None = None


class Bench:
    """One benchmark run: its settings, its processes and the rows it fills."""

    def __init__(self, settings: Settings, procs: Processes, workdir: Path) -> None:
        self.settings = settings
        self.procs = procs
        self.workdir = workdir
        self.rows = make_rows(settings.concurrent, settings.rounds, settings.growth)
        # the growth group's proxy memory per idle connection (KiB), by connection count
        self.growth_memory: dict[int, list[float]] = {count: [] for count in settings.growth}
        self.env = dict(os.environ)
        self.env["PYTHONPATH"] = os.pathsep.join(
            [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]
        )
        self._proxy_failures: dict[tuple[str, ...], str] = {}
        self._proxy_logs: list[Child] = []  # the proxies of the group being run
        self._non_2xx: list[float] = []  # share of non-2xx answers of each HTTP mix sample

    # -- processes ---------------------------------------------------------------------

    def python(self, module: str, *args: str) -> list[str]:
        """Command line running ``python -m module args`` with this interpreter."""
        return [sys.executable, "-m", module, *args]

    def echo_backend(self, name: str, cpus: frozenset[int] | None = None) -> int:
        """Start an echo backend; return its port."""
        child = self.procs.start(
            self.python("benchmarks.echo"),
            name=name,
            cpus=cpus,
            cwd=REPO,
            env=self.env,
            pipes=True,
        )
        return int(self.procs.read_line(child, 10))

    def proxy(
        self,
        backend_port: int,
        *options: str,
        name: str = "vaurien",
        protocol: str = "tcp",
        behavior: str = "100:dummy",
        cpus: frozenset[int] | None = None,
    ) -> tuple[Child, int]:
        """Start Vaurien in front of ``backend_port``; return it and the port it listens on.

        A configuration that failed once is not tried again: :class:`Unavailable` at once.
        """
        config = (protocol, behavior, *options)
        if config in self._proxy_failures:
            raise Unavailable(self._proxy_failures[config])
        port = free_port()
        argv = self.python(
            "vaurien",
            "--proxy",
            f"127.0.0.1:{port}",
            "--backend",
            f"127.0.0.1:{backend_port}",
            "--protocol",
            protocol,
            "--behavior",
            behavior,
            *options,
            "--log-level",
            "warning",
            *self.settings.vaurien_options,
        )
        child = self.procs.start(argv, name=name, cpus=cpus, cwd=REPO, env=self.env)
        try:
            self.procs.wait_listening(child, port, 15)
        except Unavailable as e:
            self.procs.stop(child)
            self._proxy_failures[config] = f"vaurien did not start: {e}"
            raise Unavailable(self._proxy_failures[config]) from e
        self._proxy_logs.append(child)
        return child, port

    def proxy_via_api(
        self, backend_port: int, name: str, cpus: frozenset[int] | None = None
    ) -> tuple[Child, int]:
        """Start Vaurien with no proxy and its Toxiproxy API, then make the proxy in front of
        ``backend_port`` through that API (``POST /proxies``); return it and its port."""
        api_port = free_port()
        argv = self.python(
            "vaurien",
            "--toxiproxy-api",
            f"127.0.0.1:{api_port}",
            "--log-level",
            "warning",
            *self.settings.vaurien_options,
        )
        child = self.procs.start(argv, name=name, cpus=cpus, cwd=REPO, env=self.env)
        try:
            self.procs.wait_listening(child, api_port, 15)
            body = {
                "name": "bench",
                "listen": "127.0.0.1:0",
                "upstream": f"127.0.0.1:{backend_port}",
            }
            request = urllib.request.Request(
                f"http://127.0.0.1:{api_port}/proxies",
                data=json.dumps(body).encode(),
                headers={"Content-Type": "application/json"},
            )
            with urllib.request.urlopen(request, timeout=10) as response:
                listen = json.loads(response.read())["listen"]
        except (Unavailable, OSError, ValueError, KeyError) as e:
            self.procs.stop(child)
            raise Unavailable(
                f"vaurien did not make its proxy through the Toxiproxy API: {e}"
            ) from e
        self._proxy_logs.append(child)
        return child, int(listen.rpartition(":")[2])

    def haproxy(
        self, backend_port: int, name: str, cpus: frozenset[int] | None = None
    ) -> tuple[Child, int]:
        """Start HAProxy in front of ``backend_port`` as a plain TCP relay (one thread, splice
        where it pays, no logging); return it and the port it listens on."""
        port = free_port()
        config = self.workdir / f"{name}.cfg"
        config.write_text(
            "global\n    maxconn 4000\n    nbthread 1\n"
            "defaults\n    mode tcp\n    option splice-auto\n    timeout connect 5s\n"
            "    timeout client 60s\n    timeout server 60s\n"
            f"listen relay\n    bind 127.0.0.1:{port}\n"
            f"    server backend 127.0.0.1:{backend_port}\n"
        )
        child = self.procs.start(["haproxy", "-db", "-f", str(config)], name=name, cpus=cpus)
        self.procs.wait_listening(child, port, 10)
        return child, port

    def proxy_or_note(
        self, backend_port: int, keys: Sequence[str], *options: str, **kwargs: Any
    ) -> tuple[Child, int] | None:
        """:meth:`proxy`, or None with the reason noted on the rows ``keys``."""
        try:
            return self.proxy(backend_port, *options, **kwargs)
        except Unavailable as e:
            for key in keys:
                self.rows[key].note(str(e))
            return None

    def note_proxy_logs(self, keys: Sequence[str]) -> None:
        """Note on the rows ``keys`` what the group's proxies logged (warnings and errors)."""
        for child in self._proxy_logs:
            lines = [
                line for line in child.log_path.read_text(errors="replace").splitlines() if line
            ]
            if lines:
                self.rows[keys[0]].note(
                    f"{child.name} logged {len(lines)} line(s), the last: {lines[-1][:200]}"
                )
        self._proxy_logs.clear()

    def load(self, *args: str, timeout: float, cpus: frozenset[int] | None = None) -> dict:
        """Run one ``benchmarks.load`` generator; return its JSON result."""
        output = self.procs.run(
            self.python("benchmarks.load", *args),
            timeout=timeout,
            cpus=cpus,
            cwd=REPO,
            env=self.env,
        )
        if not output.strip():
            raise Unavailable(f"load generator {args[0]} printed nothing")
        result = json.loads(output.strip().splitlines()[-1])
        if "error" in result:
            raise Unavailable(f"load generator: {result['error']}")
        return result

    def api_proxy_or_note(
        self, backend_port: int, keys: Sequence[str], name: str, cpus: frozenset[int] | None = None
    ) -> tuple[Child, int] | None:
        """:meth:`proxy_via_api`, or None with the reason noted on the rows ``keys``."""
        try:
            return self.proxy_via_api(backend_port, name, cpus)
        except Unavailable as e:
            for key in keys:
                self.rows[key].note(str(e))
            return None

    def proxied(self, keys: Sequence[str], measure: Callable[[], T]) -> T | None:
        """``measure()`` through Vaurien; on failure note why on the rows ``keys``, return None."""
        try:
            return measure()
        except Unavailable as e:
            text = str(e) if str(e).startswith("vaurien") else f"through vaurien: {e}"
            for key in keys:
                self.rows[key].note(text)
            return None

    def with_cpu(
        self, keys: Sequence[str], proxy: Child, measure: Callable[[], T]
    ) -> tuple[T, float] | None:
        """:meth:`proxied`, and the CPU seconds ``proxy`` spent meanwhile; None on failure."""
        before = cpu_seconds(proxy.pid)
        result = self.proxied(keys, measure)
        if result is None:
            return None
        return result, cpu_seconds(proxy.pid) - before

    def repeats(self) -> Iterator[int]:
        """The repeat indexes, stopping early (with :class:`TimeUp`) when time runs out."""
        for index in range(self.settings.repeats):
            self.procs.budget.bound(1)
            yield index

    def compare(self, comparison: Comparison) -> bool:
        """One repeat of ``comparison``; False when its direct side failed (noted on its rows)."""
        try:
            value = comparison.measure(comparison.backend)
        except Unavailable as e:
            for key in comparison.proxies:
                self.rows[key].note(str(e))
            return False
        through = comparison.through or comparison.measure
        for key, proxy in comparison.proxies.items():
            row = self.rows[key]
            row.direct.append(value)
            if proxy is None:
                continue
            value_through = self.proxied((key,), partial(through, proxy[1]))
            if value_through is None:
                comparison.proxies[key] = None
            else:
                row.proxied.append(value_through)
        return True

    # -- measurements ------------------------------------------------------------------

    def iperf3_server(self) -> int:
        """Start ``iperf3 -s`` on a free port; return the port."""
        port = free_port()
        server = self.procs.start(["iperf3", "-s", "-p", str(port)], name="iperf3-server")
        self.procs.wait_listening(server, port, 10)
        return port

    def iperf3(self, port: int, bidir: bool) -> dict:
        """One iperf3 client run against ``port``; its JSON report (``end`` section)."""
        seconds = self.settings.bulk_seconds
        argv = ["iperf3", "-c", "127.0.0.1", "-p", str(port), "-t", str(seconds), "-J"]
        if bidir:
            argv.append("--bidir")
        for attempt in range(3):
            report = json.loads(self.procs.run(argv, timeout=seconds + 20))
            error = report.get("error", "")
            if "busy" in error and attempt < 2:  # the previous test is still being torn down
                time.sleep(0.5)
                continue
            if error:
                raise Unavailable(f"iperf3: {error}")
            return report["end"]
        raise AssertionError("unreachable")

    def bulk(self) -> None:
        """iperf3 one way and both ways, direct and through Vaurien; the proxy's CPU per GiB."""
        rows = self.rows
        server_port = self.iperf3_server()
        proxies = {
            "bulk": self.proxy_or_note(
                server_port, ("bulk", "bulk_both", "cpu", "cpu_both"), name="vaurien-bulk"
            ),
            "bulk_delay": self.proxy_or_note(
                server_port,
                ("bulk_delay",),
                "--behavior-delay-sleep",
                "0",
                name="vaurien-delay",
                behavior="100:delay",
            ),
        }
        for _ in self.repeats():
            end = self.iperf3(server_port, bidir=False)
            rows["bulk"].direct.append(_gbits(end["sum_received"]))
            rows["bulk_delay"].direct.append(_gbits(end["sum_received"]))
            for key in ("bulk", "bulk_delay"):
                if proxies[key] is None:
                    continue
                proxy, port = proxies[key]
                sample = self.with_cpu((key,), proxy, partial(self.iperf3, port, bidir=False))
                if sample is None:
                    proxies[key] = None
                    continue
                end, used = sample
                rows[key].proxied.append(_gbits(end["sum_received"]))
                if key == "bulk":
                    rows["cpu"].proxied.append(used / (end["sum_received"]["bytes"] / GIB))
            end = self.iperf3(server_port, bidir=True)
            rows["bulk_both"].direct.append(_gbits_both(end))
            if proxies["bulk"] is None:
                continue
            proxy, port = proxies["bulk"]
            sample = self.with_cpu(("bulk_both",), proxy, partial(self.iperf3, port, bidir=True))
            if sample is None:
                proxies["bulk"] = None
                continue
            end, used = sample
            rows["bulk_both"].proxied.append(_gbits_both(end))
            moved = end["sum_received"]["bytes"] + end["sum_received_bidir_reverse"]["bytes"]
            rows["cpu_both"].proxied.append(used / (moved / GIB))

    def rtt(self) -> None:
        """32-byte round trips on one connection: free to use both CPUs, then all on CPU 0."""
        args = ("--count", str(self.settings.rtt_count))
        timeout = 30 + self.settings.rtt_count / 1000
        for suffix, cpus in (("", None), ("_pinned", PINNED)):
            keys = (f"rtt{suffix}_p50", f"rtt{suffix}_p99")
            backend = self.echo_backend(f"echo{suffix}", cpus)
            proxy = self.proxy_or_note(backend, keys, name=f"vaurien-rtt{suffix}", cpus=cpus)
            self.percentiles("rtt", keys, backend, proxy, args, timeout, cpus)

    def named(self) -> None:
        """A proxy made through the Toxiproxy API, and a chain of two behaviors: bulk one way
        through each (and through the chain's two behaviors alone), and pinned round trips
        through the API's proxy."""
        server_port = self.iperf3_server()
        proxies = {
            "bulk_api": self.api_proxy_or_note(server_port, ("bulk_api",), name="vaurien-api"),
            "bulk_bandwidth": self.proxy_or_note(
                server_port,
                ("bulk_bandwidth",),
                "--behavior-bandwidth-rate",
                UNREACHED_RATE,
                name="vaurien-bandwidth",
                behavior="100:bandwidth",
            ),
            "bulk_chain": self.proxy_or_note(
                server_port,
                ("bulk_chain",),
                "--behavior-delay-sleep",
                "0",
                "--behavior-bandwidth-rate",
                UNREACHED_RATE,
                name="vaurien-chain",
                behavior="100:delay+bandwidth",
            ),
        }
        comparison = Comparison(
            lambda port: _gbits(self.iperf3(port, bidir=False)["sum_received"]),
            server_port,
            proxies,
        )
        for _ in self.repeats():
            if not self.compare(comparison):
                break
        keys = ("rtt_api_pinned_p50", "rtt_api_pinned_p99")
        backend = self.echo_backend("echo-api-pinned", PINNED)
        proxy = self.api_proxy_or_note(backend, keys, name="vaurien-rtt-api", cpus=PINNED)
        args = ("--count", str(self.settings.rtt_count))
        timeout = 30 + self.settings.rtt_count / 1000
        self.percentiles("rtt", keys, backend, proxy, args, timeout, PINNED)

    def connect(self) -> None:
        """Connect, one 32-byte round trip, close: latency percentiles."""
        args = ("--count", str(self.settings.connect_count), "--warmup", "20")
        timeout = 30 + self.settings.connect_count / 100
        keys = ("connect_p50", "connect_p99")
        backend = self.echo_backend("echo-connect")
        proxy = self.proxy_or_note(backend, keys, name="vaurien-connect")
        self.percentiles("connect", keys, backend, proxy, args, timeout)

    def percentiles(
        self,
        mode: str,
        keys: tuple[str, str],
        backend: int,
        proxy: tuple[Child, int] | None,
        args: Sequence[str],
        timeout: float,
        cpus: frozenset[int] | None = None,
    ) -> None:
        """Each repeat, one ``benchmarks.load mode`` run direct and one through Vaurien.

        Their p50 and p99 go to the rows ``keys``.
        """
        p50, p99 = self.rows[keys[0]], self.rows[keys[1]]
        for _ in self.repeats():
            result = self.load(mode, f"127.0.0.1:{backend}", *args, timeout=timeout, cpus=cpus)
            p50.direct.append(result["p50_us"])
            p99.direct.append(result["p99_us"])
            if proxy is None:
                continue
            address = f"127.0.0.1:{proxy[1]}"
            measure = partial(self.load, mode, address, *args, timeout=timeout, cpus=cpus)
            result = self.proxied(keys, measure)
            if result is None:
                proxy = None
                continue
            p50.proxied.append(result["p50_us"])
            p99.proxied.append(result["p99_us"])

    def concurrent(self) -> None:
        """Many connections at once, a few round trips each; the proxy's memory per connection.

        Each repeat starts a fresh proxy, so the memory it grows is that of these connections,
        not space left free by an earlier repeat.
        """
        timing, memory = self.rows["concurrent"], self.rows["memory"]
        backend = self.echo_backend("echo-concurrent")
        args = ("--rounds", str(self.settings.rounds), "--timeout", "60")
        count = self.settings.concurrent
        available = True
        for index in self.repeats():
            result, _ = self.concurrent_load([backend], count, args)
            if result["failures"]:
                timing.note(f"direct failures: {result['failures']}")
            else:
                timing.direct.append(result["seconds"])
            if not available:
                continue
            measure = partial(self._concurrent_through_proxies, index, [backend], count, args)
            outcome = self.proxied(("concurrent", "memory"), measure)
            if outcome is None:
                available = False
                continue
            result, grown = outcome
            waited = result["last_connect_seconds"]
            if waited >= 1:
                timing.note(
                    f"through vaurien the last connection took {waited:.1f} s to establish:"
                    " SYN retransmits, the listen queue overflowed"
                )
            if result["failures"]:
                timing.note(f"through vaurien: failures {result['failures']}")
                continue
            timing.proxied.append(result["seconds"])
            memory.proxied.append(grown / result["open"])

    def concurrent_load(
        self, ports: Sequence[int], count: int, args: Sequence[str], proxies: Sequence[Child] = ()
    ) -> tuple[dict, int]:
        """``count`` connections at once, shared among load generators started together, one
        on each of ``ports``, with the ``concurrent`` mode's ``args``.

        Returns the result as one generator's (the slowest one's time, every connection
        counted) and, with ``proxies`` (the processes that relay them), the PSS those grew
        while the connections were open and idle."""
        lanes = len(ports)
        clients = []
        try:
            for index, port in enumerate(ports):
                share = count // lanes + (index < count % lanes)
                argv = self.python(
                    "benchmarks.load",
                    "concurrent",
                    f"127.0.0.1:{port}",
                    "--connections",
                    str(share),
                    *args,
                    "--hold",
                    "--wait",
                )
                clients.append(
                    self.procs.start(
                        argv, name=f"load-concurrent-{index}", cwd=REPO, env=self.env, pipes=True
                    )
                )
            for client in clients:
                self.procs.read_line(client, 30)  # ready
            baseline = sum(pss_kib(proxy.pid) for proxy in proxies)
            for client in clients:
                write_line(client.popen.stdin, "go")
            results = [json.loads(self.procs.read_line(client, 180)) for client in clients]
            grown = sum(pss_kib(proxy.pid) for proxy in proxies) - baseline
            for client in clients:
                write_line(client.popen.stdin, "close")
            for client in clients:
                client.popen.wait(10)
        finally:
            for client in clients:
                self.procs.stop(client)
        errors = [result["error"] for result in results if "error" in result]
        if errors:
            raise Unavailable(f"load generator: {errors[0]}")
        failures: dict[str, int] = {}
        for result in results:
            for reason, times in result["failures"].items():
                failures[reason] = failures.get(reason, 0) + times
        combined = {
            "seconds": max(result["seconds"] for result in results),
            "open": sum(result["open"] for result in results),
            "failures": failures,
            "last_connect_seconds": max(result["last_connect_seconds"] for result in results),
        }
        return combined, grown

    def _concurrent_through_proxies(
        self, index: int | str, backends: Sequence[int], count: int, args: Sequence[str]
    ) -> tuple[dict, int]:
        """One concurrent run through fresh proxies, one in front of each of ``backends``; the
        result and the PSS the proxies grew."""
        proxies: list[Child] = []
        ports = []
        try:
            for lane, backend in enumerate(backends):
                name = f"vaurien-concurrent-{index}" + (f"-{lane}" if len(backends) > 1 else "")
                proxy, port = self.proxy(backend, name=name)
                proxies.append(proxy)
                ports.append(port)
                self.load("rtt", f"127.0.0.1:{port}", "--count", "10", timeout=10)  # warm up
            return self.concurrent_load(ports, count, args, proxies)
        finally:
            for proxy in proxies:
                self.procs.stop(proxy)

    def growth(self) -> None:
        """Time per connection with ``--growth`` connections at once (1,000, 5,000, 20,000),
        each doing ``--rounds`` round trips, direct and through fresh proxies; the proxies'
        memory per connection, all of them open and idle; the plot, with ``--plot``.

        A proxy holds two sockets a connection: where the largest count needs more descriptors
        than a process may hold, the run is split in lanes side by side, each with its own echo
        backend, proxy and load generator, as many at every count so that the counts compare.
        (Lanes, not processes sharing ports: beyond about 14,000 connections to one address,
        the kernel's search for a free source port makes every connect slower.)"""
        counts = self.settings.growth
        rows = [self.rows[f"growth_{i}"] for i in range(len(counts))]
        memory = self.rows["growth_memory"]
        limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        lanes = lanes_for(max(counts), limit)
        if lanes > 1:
            for row in (*rows, memory):
                row.note(
                    f"{lanes} lanes side by side at every count (echo backend, vaurien, load"
                    f" generator each): {max(counts)} connections need {2 * max(counts)}"
                    f" sockets in one proxy, and a process here may hold {limit}"
                )
        backends = [self.echo_backend(f"echo-growth-{lane}") for lane in range(lanes)]
        args = ("--rounds", str(self.settings.rounds), "--timeout", "120")
        args += ("--window", str(max(1, GROWTH_WINDOW // lanes)))
        for index in self.repeats():
            for count, row in zip(counts, rows, strict=True):
                result, _ = self.concurrent_load(backends, count, args)
                if result["failures"]:
                    row.note(f"direct failures: {result['failures']}")
                    continue
                row.direct.append(1e6 * result["seconds"] / count)
                measure = partial(
                    self._concurrent_through_proxies,
                    f"growth-{count}-{index}",
                    backends,
                    count,
                    args,
                )
                outcome = self.proxied((row.key,), measure)
                if outcome is None:
                    continue
                result, grown = outcome
                if result["failures"]:
                    row.note(f"through vaurien: failures {result['failures']}")
                    continue
                row.proxied.append(1e6 * result["seconds"] / count)
                self.growth_memory[count].append(grown / result["open"])
                if count == max(counts):
                    memory.proxied.append(grown / result["open"])
        if self.settings.plot_path is not None:
            try:
                plot_growth(self.settings.plot_path, counts, rows, self.growth_memory)
            except Unavailable as e:
                memory.note(str(e))

    def http(self) -> None:
        """wrk keep-alive requests per second on a small static file served by nginx: through
        the tcp protocol, the http protocol, and the http protocol with ten rules to look at."""
        nginx_port = self.nginx()
        proxies = {
            key: self.proxy_or_note(
                nginx_port, (key,), *options, name=f"vaurien-{key}", protocol=protocol
            )
            for key, protocol, options in (
                ("http_tcp", "tcp", ()),
                ("http_http", "http", ()),
                ("http_rules", "http", TEN_RULES),
            )
        }
        comparison = Comparison(self.wrk_rate, nginx_port, proxies)
        for _ in self.repeats():
            if not self.compare(comparison):
                return

    def dashboard(self) -> None:
        """wrk keep-alive through ``--protocol http`` with its control API, with no dashboard
        open (the direct column) and with :data:`DASHBOARDS` open (the vaurien column), in turn
        on one proxy, the order swapped each repeat."""
        nginx_port = self.nginx()
        api_port = free_port()
        keys = ("dashboard",)
        api = ("--http", "--http-host", "127.0.0.1", "--http-port", str(api_port))
        proxy = self.proxy_or_note(
            nginx_port, keys, *api, name="vaurien-dashboard", protocol="http"
        )
        if proxy is None:
            return
        row = self.rows["dashboard"]
        for index in self.repeats():
            rates = {}
            for watched in (False, True) if index % 2 == 0 else (True, False):
                measure = (
                    partial(self.wrk_watched, proxy[1], api_port)
                    if watched
                    else partial(self.wrk_rate, proxy[1])
                )
                rates[watched] = self.proxied(keys, measure)
            if None in rates.values():
                return
            row.direct.append(rates[False])
            row.proxied.append(rates[True])

    def wrk_watched(self, port: int, api_port: int) -> float:
        """:meth:`wrk_rate` on ``port`` while :data:`DASHBOARDS` dashboards read the samples
        of the control API on ``api_port`` (``benchmarks.load dashboards``)."""
        argv = self.python(
            "benchmarks.load",
            "dashboards",
            f"127.0.0.1:{api_port}",
            "--connections",
            str(DASHBOARDS),
            "--timeout",
            "10",
        )
        client = self.procs.start(argv, name="dashboards", cwd=REPO, env=self.env, pipes=True)
        try:
            ready = json.loads(self.procs.read_line(client, 30))
            if "error" in ready:
                raise Unavailable(f"dashboards: {ready['error']}")
            rate = self.wrk_rate(port)
            write_line(client.popen.stdin, "close")
            done = json.loads(self.procs.read_line(client, 30))
        finally:
            self.procs.stop(client)
        if "error" in done:
            raise Unavailable(f"dashboards: {done['error']}")
        expected = DASHBOARDS * (self.settings.http_seconds - 1)
        if done["samples"] < expected:
            self.rows["dashboard"].note(
                f"the dashboards read {done['samples']} samples during wrk, fewer than "
                f"{expected}: the stream fell behind"
            )
        return rate

    def tls(self) -> None:
        """wrk over HTTPS, keep-alive, on nginx's small static file: directly, and through
        ``--protocol http`` terminating the client's TLS and speaking TLS to nginx."""
        nginx_port = self.nginx(tls=True)
        options = ("--tls-self-signed", "--backend-tls", "--backend-insecure")
        proxy = self.proxy_or_note(
            nginx_port, ("https",), *options, name="vaurien-https", protocol="http"
        )
        comparison = Comparison(
            partial(self.wrk_rate, scheme="https"), nginx_port, {"https": proxy}
        )
        for _ in self.repeats():
            if not self.compare(comparison):
                return

    def protocols(self) -> None:
        """redis, memcached and HTTP through the protocol-aware paths, redis also through tcp.

        A backend or tool that is missing is noted on its rows; the others are still measured.
        The repeats take turns between the three, so a run cut short by the time limit still
        has samples of each.
        """
        comparisons: list[Comparison] = []
        for keys, start in (
            (
                ("redis", "redis_p16", "redis_tcp", "redis_p16_tcp", "redis_p16_rules"),
                self._redis_comparisons,
            ),
            (("memcache", "memcache_tcp"), self._memcache_comparisons),
            (("http_mix",), self._http_mix_comparisons),
        ):
            try:
                comparisons.extend(start())
            except Unavailable as e:
                for key in keys:
                    self.rows[key].note(str(e))
        try:
            for _ in self.repeats():
                comparisons = [each for each in comparisons if self.compare(each)]
        finally:
            if self._non_2xx:
                self.rows["http_mix"].note(
                    f"through vaurien {100 * statistics.median(self._non_2xx):.1f}% of the"
                    " answers were non-2xx (median): the mix's errors"
                )

    def _redis_comparisons(self) -> list[Comparison]:
        """redis-server and its two proxies; redis-benchmark unpipelined and pipelined."""
        if shutil.which("redis-benchmark") is None:
            raise Unavailable("redis-benchmark is not installed (Debian package redis-tools)")
        backend = self.redis_server()
        redis = self.proxy_or_note(
            backend, ("redis", "redis_p16"), name="vaurien-redis", protocol="redis"
        )
        tcp = self.proxy_or_note(backend, ("redis_tcp", "redis_p16_tcp"), name="vaurien-redis-tcp")
        rules = self.proxy_or_note(
            backend,
            ("redis_p16_rules",),
            *TEN_REDIS_RULES,
            name="vaurien-redis-rules",
            protocol="redis",
        )
        return [
            Comparison(
                partial(self.redis_benchmark, pipeline=1),
                backend,
                {"redis": redis, "redis_tcp": tcp},
            ),
            Comparison(
                partial(self.redis_benchmark, pipeline=PIPELINE),
                backend,
                {"redis_p16": redis, "redis_p16_tcp": tcp, "redis_p16_rules": rules},
            ),
        ]

    def _memcache_comparisons(self) -> list[Comparison]:
        """memcached and its two proxies; pipelined set and get batches."""
        backend = self.memcached()
        proxies = {
            "memcache": self.proxy_or_note(
                backend, ("memcache",), name="vaurien-memcache", protocol="memcache"
            ),
            "memcache_tcp": self.proxy_or_note(backend, ("memcache_tcp",), name="vaurien-mc-tcp"),
        }
        return [Comparison(self.memcache_rate, backend, proxies)]

    def _http_mix_comparisons(self) -> list[Comparison]:
        """nginx behind ``--protocol http`` with errors and zero delays in the mix."""
        backend = self.nginx()
        proxy = self.proxy_or_note(
            backend,
            ("http_mix",),
            "--behavior-delay-sleep",
            "0",
            name="vaurien-http-mix",
            protocol="http",
            behavior=HTTP_MIX,
        )
        return [Comparison(self.wrk_rate, backend, {"http_mix": proxy}, self.wrk_rate_with_errors)]

    def redis_server(self) -> int:
        """Start redis-server without persistence on a free port; return the port."""
        if shutil.which("redis-server") is None:
            raise Unavailable("redis-server is not installed")
        port = free_port()
        argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
        argv += ["--appendonly", "no", "--dir", str(self.workdir)]
        server = self.procs.start(argv, name="redis-server")
        self.procs.wait_listening(server, port, 10)
        return port

    def memcached(self) -> int:
        """Start memcached (one worker thread, TCP only) on a free port; return the port."""
        if shutil.which("memcached") is None:
            raise Unavailable("memcached is not installed")
        port = free_port()
        argv = ["memcached", "-l", "127.0.0.1", "-p", str(port), "-U", "0", "-t", "1"]
        if os.geteuid() == 0:
            argv += ["-u", "root"]  # memcached refuses to run as root unless told to
        server = self.procs.start(argv, name="memcached")
        self.procs.wait_listening(server, port, 10)
        return port

    def redis_benchmark(self, port: int, pipeline: int) -> float:
        """Requests per second of ``redis-benchmark -t set,get -c N`` against ``port``.

        SET and GET run one after the other with the same number of requests; the rate is
        their requests over their time together (the harmonic mean of the two rates).
        """
        requests = self.settings.redis_requests * (REDIS_PIPELINED_SCALE if pipeline > 1 else 1)
        argv = ["redis-benchmark", "-h", "127.0.0.1", "-p", str(port), "-t", "set,get"]
        argv += ["-c", str(CLIENTS), "-n", str(requests)]
        argv += ["-P", str(pipeline), "--csv"]
        try:  # redis-benchmark spins without end when its connections are refused
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
        except OSError as e:
            raise Unavailable(f"redis-benchmark: cannot connect to port {port}: {e}") from e
        # allow 5,000 requests a second, far below the slowest path, before giving up
        output = self.procs.run(argv, timeout=30 + 2 * requests / 5000)
        rates = parse_redis_benchmark(output)
        if set(rates) != {"SET", "GET"}:
            raise Unavailable(f"redis-benchmark printed no SET and GET rates: {output[-200:]!r}")
        return 2 / (1 / rates["SET"] + 1 / rates["GET"])

    def memcache_rate(self, port: int) -> float:
        """Requests per second of pipelined memcached set/get batches (``benchmarks.load``)."""
        seconds = self.settings.memcache_seconds
        args = (
            f"127.0.0.1:{port}",
            "--connections",
            str(CLIENTS),
            "--depth",
            str(PIPELINE),
            "--size",
            str(VALUE_SIZE),
            "--seconds",
            str(seconds),
            "--count",
            str(10_000_000 * seconds),  # far above any rate: the time ends the run
        )
        return self.load("memcache", *args, timeout=seconds + 30)["rate"]

    def nginx(self, tls: bool = False) -> int:
        """Start nginx on a free port with a private configuration; return the port. With
        ``tls`` it serves HTTPS only, with a self-signed certificate made by ``openssl``."""
        if shutil.which("nginx") is None:
            raise Unavailable("nginx is not installed")
        root = self.workdir / ("nginx-tls" if tls else "nginx")
        (root / "www").mkdir(parents=True, exist_ok=True)  # the http and protocols groups
        (root / "www" / "index.html").write_bytes(_small_page())
        port = free_port()
        listen = f"127.0.0.1:{port}"
        if tls:
            listen += (
                f" ssl;\n        ssl_certificate {self.certificate(root)};\n"
                f"        ssl_certificate_key {root}/key.pem"
            )
        config = root / "nginx.conf"
        user = "user root;\n" if os.geteuid() == 0 else ""
        temp_paths = "".join(
            f"    {kind}_temp_path {root}/{kind};\n"
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        config.write_text(
            f"{user}worker_processes 1;\ndaemon off;\npid {root}/nginx.pid;\n"
            f"error_log {root}/error.log warn;\nevents {{ worker_connections 1024; }}\n"
            "http {\n    access_log off;\n    keepalive_requests 10000000;\n"
            f"{temp_paths}    server {{\n        listen {listen};\n"
            f"        root {root}/www;\n    }}\n}}\n"
        )
        argv = ["nginx", "-p", str(root), "-e", str(root / "error.log"), "-c", str(config)]
        server = self.procs.start(argv, name="nginx")
        self.procs.wait_listening(server, port, 10)
        return port

    def certificate(self, directory: Path) -> Path:
        """Write a self-signed certificate for 127.0.0.1 (``cert.pem``) and its key
        (``key.pem``) into ``directory`` with ``openssl``; return the certificate's path."""
        if shutil.which("openssl") is None:
            raise Unavailable("openssl is not installed")
        cert = directory / "cert.pem"
        self.procs.run(
            [
                "openssl",
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=127.0.0.1",
                "-addext",
                "subjectAltName=IP:127.0.0.1",
                "-keyout",
                str(directory / "key.pem"),
                "-out",
                str(cert),
            ],
            timeout=30,
        )
        return cert

    def wrk(self, port: int, scheme: str = "http") -> WrkResult:
        """One wrk run against ``port``: ``--http-connections`` connections, one thread."""
        seconds = self.settings.http_seconds
        argv = [
            "wrk",
            "-t",
            "1",
            "-c",
            str(self.settings.http_connections),
            "-d",
            f"{seconds}s",
            f"{scheme}://127.0.0.1:{port}/index.html",
        ]
        return parse_wrk(self.procs.run(argv, timeout=seconds + 20))

    def wrk_rate(self, port: int, scheme: str = "http") -> float:
        """Requests per second from one wrk run; any error or non-2xx makes it unavailable."""
        result = self.wrk(port, scheme)
        if result.non_2xx or result.socket_errors:
            raise Unavailable(f"wrk: {result.problems()}")
        return result.rate

    def wrk_rate_with_errors(self, port: int) -> float:
        """Requests per second from one wrk run, non-2xx answers included (their share is kept
        for a note); socket errors still make it unavailable."""
        result = self.wrk(port)
        if result.socket_errors:
            raise Unavailable(f"wrk: {result.problems()}")
        self._non_2xx.append(result.non_2xx / result.requests)
        return result.rate

    # -- the reference group -----------------------------------------------------------

    def reference(self) -> None:
        """HAProxy in Vaurien's place, for reference: what a plain relay written in C makes of
        this machine, on the measurements whose targets are the hardest to reach (bulk, CPU
        per GiB, round trips on one CPU, connects, redis GET/SET)."""
        rows = self.rows
        version = self.procs.run(["haproxy", "-v"], timeout=10).split()
        note = f"the vaurien column of this row holds HAProxy {version[2]}'s figure"
        for key in GROUP_ROWS["reference"]:
            rows[key].note(note)
        server_port = self.iperf3_server()
        proxy, port = self.haproxy(server_port, "haproxy-bulk")
        for _ in self.repeats():
            end = self.iperf3(server_port, bidir=False)
            rows["ref_bulk"].direct.append(_gbits(end["sum_received"]))
            measure = partial(self.iperf3, port, bidir=False)
            sample = self.with_cpu(("ref_bulk", "ref_cpu"), proxy, measure)
            if sample is None:
                break
            end, used = sample
            rows["ref_bulk"].proxied.append(_gbits(end["sum_received"]))
            rows["ref_cpu"].proxied.append(used / (end["sum_received"]["bytes"] / GIB))
        keys = ("ref_rtt_pinned_p50", "ref_rtt_pinned_p99")
        backend = self.echo_backend("echo-haproxy-pinned", PINNED)
        args = ("--count", str(self.settings.rtt_count))
        timeout = 30 + self.settings.rtt_count / 1000
        relay = self.haproxy(backend, "haproxy-rtt", PINNED)
        self.percentiles("rtt", keys, backend, relay, args, timeout, PINNED)
        keys = ("ref_connect_p50", "ref_connect_p99")
        backend = self.echo_backend("echo-haproxy-connect")
        args = ("--count", str(self.settings.connect_count), "--warmup", "20")
        timeout = 30 + self.settings.connect_count / 100
        relay = self.haproxy(backend, "haproxy-connect")
        self.percentiles("connect", keys, backend, relay, args, timeout)
        backend = self.redis_server()
        relay = self.haproxy(backend, "haproxy-redis")
        comparisons = [
            Comparison(partial(self.redis_benchmark, pipeline=1), backend, {"ref_redis": relay}),
            Comparison(
                partial(self.redis_benchmark, pipeline=PIPELINE), backend, {"ref_redis_p16": relay}
            ),
        ]
        for _ in self.repeats():
            comparisons = [each for each in comparisons if self.compare(each)]

    # -- the rpc group -----------------------------------------------------------------

    def rpc(self) -> None:
        """PostgreSQL through ``--protocol postgres`` (and tcp) and gRPC unary calls through
        ``--protocol http2``, in turns as in :meth:`protocols`; a backend or tool that is
        missing is noted on its rows."""
        comparisons: list[Comparison] = []
        for keys, start in (
            (("pgbench", "pgbench_tcp"), self._postgres_comparisons),
            (("grpc", "grpc_serial"), self._grpc_comparisons),
        ):
            try:
                comparisons.extend(start())
            except Unavailable as e:
                for key in keys:
                    self.rows[key].note(str(e))
        for _ in self.repeats():
            comparisons = [each for each in comparisons if self.compare(each)]

    def _postgres_comparisons(self) -> list[Comparison]:
        """A private PostgreSQL with pgbench's tables, and its two proxies; ``pgbench -S``."""
        server = postgres.start(self.procs, self.workdir)
        server.initialize(self.procs)
        proxies = {
            key: self.proxy_or_note(
                server.port, (key,), "--timeout", "60", name=f"vaurien-{name}", protocol=protocol
            )
            for key, name, protocol in (
                ("pgbench", "postgres", "postgres"),
                ("pgbench_tcp", "postgres-tcp", "tcp"),
            )
        }
        rate = partial(server.select_rate, self.procs, seconds=self.settings.pgbench_seconds)
        return [Comparison(rate, server.port, proxies)]

    def _grpc_comparisons(self) -> list[Comparison]:
        """The gRPC echo server and its proxy; unary calls concurrently and one at a time."""
        backend = self.grpc_server()
        proxy = self.proxy_or_note(
            backend, tuple(GRPC_LOADS), name="vaurien-http2", protocol="http2"
        )
        return [
            Comparison(
                partial(self.grpc_rate, clients=clients, in_flight=in_flight), backend, {key: proxy}
            )
            for key, (clients, in_flight) in GRPC_LOADS.items()
        ]

    def grpc_server(self) -> int:
        """Start the gRPC echo server (``benchmarks.grpc_echo``); return its port."""
        argv = self.python("benchmarks.grpc_echo")
        child = self.procs.start(argv, name="grpc-echo", cwd=REPO, env=self.env, pipes=True)
        return int(self.procs.read_line(child, 30))

    def grpc_rate(self, port: int, clients: int, in_flight: int) -> float:
        """Unary gRPC calls per second to ``port`` (``benchmarks.load grpc``)."""
        seconds = self.settings.grpc_seconds
        args = (f"127.0.0.1:{port}", "--connections", str(clients), "--depth", str(in_flight))
        args += ("--size", str(GRPC_PAYLOAD), "--seconds", str(seconds))
        return self.load("grpc", *args, timeout=seconds + 90)["rate"]


@dataclass(frozen=True)
class WrkResult:
    """What one wrk run reports."""

    requests: int
    rate: float  # requests per second, non-2xx answers included
    non_2xx: int  # answers that were neither 2xx nor 3xx
    socket_errors: str  # wrk's "Socket errors:" line, empty when there were none

    def problems(self) -> str:
        """The non-2xx count and the socket errors, for a note."""
        parts = [f"{self.non_2xx} non-2xx or 3xx answers"] if self.non_2xx else []
        if self.socket_errors:
            parts.append(f"socket errors: {self.socket_errors}")
        return "; ".join(parts)


def parse_wrk(output: str) -> WrkResult:
    """The totals of wrk's report; :class:`Unavailable` when it has none."""
    requests = re.search(r"^\s*(\d+) requests in ", output, re.MULTILINE)
    rate = re.search(r"^Requests/sec:\s+([\d.]+)", output, re.MULTILINE)
    if requests is None or rate is None:
        raise Unavailable(f"wrk printed no rate: {output.strip()[-200:]}")
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    errors = re.search(r"Socket errors: (.*)", output)
    return WrkResult(
        requests=int(requests.group(1)),
        rate=float(rate.group(1)),
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=errors.group(1).strip() if errors else "",
    )


def parse_redis_benchmark(output: str) -> dict[str, float]:
    """Requests per second by test name from ``redis-benchmark --csv`` output."""
    rates = {}
    for line in output.splitlines():
        cells = [cell.strip('"') for cell in line.strip().split(",")]
        if len(cells) >= 2 and cells[0] != "test" and re.fullmatch(r"[\d.]+(e\+?\d+)?", cells[1]):
            rates[cells[0]] = float(cells[1])
    return rates


def lanes_for(connections: int, limit: int) -> int:
    """How many proxies side by side hold ``connections`` (two sockets each) when a process
    may hold ``limit`` descriptors."""
    room = max(1, limit - SPARE_DESCRIPTORS)
    return max(1, -(-2 * connections // room))


def plot_growth(
    path: Path, counts: Sequence[int], rows: Sequence[Any], memory: dict[int, list[float]]
) -> None:
    """Plot the growth group's medians to ``path`` (PNG): the time per connection direct and
    through Vaurien, and Vaurien's memory per idle connection, against the connections open
    at once; the bars span the samples."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise Unavailable("no plot: matplotlib is not installed (pip install matplotlib)") from e

    def series(samples: Sequence[list[float]]) -> tuple[list, list, list]:
        kept = [(count, s) for count, s in zip(counts, samples, strict=True) if s]
        xs = [count for count, _ in kept]
        mid = [statistics.median(s) for _, s in kept]
        span = [
            [m - min(s) for m, (_, s) in zip(mid, kept, strict=True)],
            [max(s) - m for m, (_, s) in zip(mid, kept, strict=True)],
        ]
        return xs, mid, span

    figure, (left, right) = plt.subplots(1, 2, figsize=(9, 3.6), layout="constrained")
    for label, samples, style in (
        ("direct", [row.direct for row in rows], "o--"),
        ("through vaurien", [row.proxied for row in rows], "s-"),
    ):
        xs, mid, span = series(samples)
        if xs:
            left.errorbar(xs, mid, yerr=span, fmt=style, capsize=3, label=label)
    left.set(
        xscale="log",
        xlabel="connections open at once",
        ylabel="time per connection (us)",
        title="Time per connection (connect + round trips)",
        ylim=(0, None),
    )
    left.set_xticks(list(counts), [f"{count:,}" for count in counts])
    left.set_xticks([], minor=True)  # a log axis under a decade labels its minor ticks
    left.legend()
    xs, mid, span = series([memory[count] for count in counts])
    if xs:
        right.errorbar(xs, mid, yerr=span, fmt="s-", capsize=3, color="C1")
    right.set(
        xscale="log",
        xlabel="connections open at once, idle",
        ylabel="proxy memory per connection (KiB)",
        title="Vaurien's memory per open connection",
        ylim=(0, None),
    )
    right.set_xticks(list(counts), [f"{count:,}" for count in counts])
    right.set_xticks([], minor=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)


def _gbits(summary: dict) -> float:
    return summary["bits_per_second"] / 1e9


def _gbits_both(end: dict) -> float:
    return _gbits(end["sum_received"]) + _gbits(end["sum_received_bidir_reverse"])


def _small_page() -> bytes:
    """A 1 KiB HTML page."""
    head = b"<!DOCTYPE html>\n<html><head><title>Vaurien benchmark</title></head><body>\n<p>"
    tail = b"</p>\n</body></html>\n"
    return head + b"x" * (1024 - len(head) - len(tail)) + tail


def describe_machine() -> str:
    """One line on what ran the benchmark."""
    try:
        commit = subprocess.run(
            ["git", "-C", str(REPO), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        commit = "?"
    return (
        f"vaurien benchmark: commit {commit or '?'}, Python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs, Linux {platform.release()}, "
        f"load average {os.getloadavg()[0]:.2f} at the start"
    )


# -- command line -----------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> Settings:
    """Settings from the command line; ``--quick`` changes the defaults, explicit flags win."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Measure Vaurien against direct connections on 127.0.0.1.",
    )
    parser.add_argument("--quick", action="store_true", help="short run: fewer, smaller repeats")
    parser.add_argument("--repeats", type=_positive, help="repeats per measurement (5; quick 3)")
    parser.add_argument(
        "--bulk-seconds", type=_positive, help="seconds per iperf3 run (3; quick 1)"
    )
    parser.add_argument("--rtt-count", type=_positive, help="timed round trips (20000; quick 3000)")
    parser.add_argument(
        "--connect-count", type=_positive, help="timed connections (2000; quick 300)"
    )
    parser.add_argument(
        "--concurrent", type=_positive, help="concurrent connections (5000; quick 2000)"
    )
    parser.add_argument("--rounds", type=_positive, default=5, help="round trips each (5)")
    parser.add_argument("--http-seconds", type=_positive, help="seconds per wrk run (3; quick 1)")
    parser.add_argument("--http-connections", type=_positive, default=32, help="wrk connections")
    parser.add_argument(
        "--redis-requests",
        type=_positive,
        help=f"redis-benchmark requests per test (25000; quick 5000; {REDIS_PIPELINED_SCALE}x"
        f" with -P {PIPELINE})",
    )
    parser.add_argument(
        "--memcache-seconds", type=_positive, help="seconds per memcache load (3; quick 1)"
    )
    parser.add_argument(
        "--pgbench-seconds", type=_positive, help="seconds per pgbench run (3; quick 1)"
    )
    parser.add_argument(
        "--grpc-seconds", type=_positive, help="seconds per gRPC calls run (3; quick 1)"
    )
    parser.add_argument(
        "--only",
        default=",".join(GROUPS),
        help=f"comma-separated groups to run (default all: {','.join(GROUPS)})",
    )
    parser.add_argument(
        "--time-limit", type=_positive, default=570, help="stop measuring after this many seconds"
    )
    parser.add_argument(
        "--vaurien-option",
        action="append",
        default=[],
        metavar="ARG",
        help="extra argument for every Vaurien command line, e.g. "
        "--vaurien-option=--protocol-tcp-buffer=262144 (repeatable)",
    )
    parser.add_argument(
        "--growth",
        help="the growth group's three connection counts "
        f"({','.join(map(str, GROWTH))}; quick 500,1000,2000)",
    )
    parser.add_argument(
        "--plot", type=Path, help="write the growth group's plot to this file (PNG, matplotlib)"
    )
    parser.add_argument("--json", type=Path, help="also write every sample to this file")
    parser.add_argument(
        "--fail-on-miss", action="store_true", help="exit 1 when a measured target is missed"
    )
    args = parser.parse_args(argv)
    groups = tuple(name.strip() for name in args.only.split(",") if name.strip())
    unknown = [name for name in groups if name not in GROUPS]
    if unknown or not groups:
        parser.error(f"--only: unknown group {unknown} (known: {', '.join(GROUPS)})")
    quick = args.quick
    growth = GROWTH if not quick else (500, 1000, 2000)
    if args.growth is not None:
        try:
            growth = tuple(int(count) for count in args.growth.split(","))
        except ValueError:
            growth = ()
        if len(growth) != len(GROWTH) or min(growth) <= 0:
            parser.error(f"--growth: expected {len(GROWTH)} positive counts, got {args.growth!r}")

    def pick(value: int | None, normal: int, short: int) -> int:
        return value if value is not None else (short if quick else normal)

    return Settings(
        repeats=pick(args.repeats, 5, 3),
        bulk_seconds=pick(args.bulk_seconds, 3, 1),
        rtt_count=pick(args.rtt_count, 20000, 3000),
        connect_count=pick(args.connect_count, 2000, 300),
        concurrent=pick(args.concurrent, 5000, 2000),
        rounds=args.rounds,
        http_seconds=pick(args.http_seconds, 3, 1),
        http_connections=args.http_connections,
        redis_requests=pick(args.redis_requests, 25000, 5000),
        memcache_seconds=pick(args.memcache_seconds, 3, 1),
        groups=groups,
        time_limit=args.time_limit,
        json_path=args.json,
        fail_on_miss=args.fail_on_miss,
        vaurien_options=tuple(args.vaurien_option),
        pgbench_seconds=pick(args.pgbench_seconds, 3, 1),
        grpc_seconds=pick(args.grpc_seconds, 3, 1),
        growth=growth,
        plot_path=args.plot,
    )


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}")
    return value


def _terminate(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the selected benchmarks, print the table; 0 unless ``--fail-on-miss`` and a miss."""
    settings = parse_args(argv)
    raise_open_files_limit()  # inherited by every child: the 5,000-connection run needs it
    signal.signal(signal.SIGTERM, _terminate)
    print(describe_machine(), flush=True)
    if settings.vaurien_options:
        print(f"vaurien options: {' '.join(settings.vaurien_options)}", flush=True)
    budget = Budget(settings.time_limit)
    with (
        tempfile.TemporaryDirectory(prefix="vaurien-bench-") as tmp,
        Processes(Path(tmp), budget) as procs,
    ):
        bench = Bench(settings, procs, Path(tmp))
        steps: dict[str, Callable[[], None]] = {
            "bulk": bench.bulk,
            "rtt": bench.rtt,
            "connect": bench.connect,
            "concurrent": bench.concurrent,
            "http": bench.http,
            "protocols": bench.protocols,
            "named": bench.named,
            "tls": bench.tls,
            "rpc": bench.rpc,
            "dashboard": bench.dashboard,
            "growth": bench.growth,
            "reference": bench.reference,
        }
        for group in settings.groups:
            started = time.monotonic()
            try:
                steps[group]()
            except TimeUp:
                for key in GROUP_ROWS[group]:
                    bench.rows[key].note("time limit reached: fewer repeats")
            except Unavailable as e:
                for key in GROUP_ROWS[group]:
                    bench.rows[key].note(str(e))
            finally:
                procs.stop_all()
                bench.note_proxy_logs(GROUP_ROWS[group])
            print(f"{group}: {time.monotonic() - started:.1f} s", file=sys.stderr, flush=True)
    rows = list(bench.rows.values())
    print(render(rows, settings.groups, settings.repeats))
    if settings.json_path is not None:
        recorded = {
            key: value
            for key, value in vars(settings).items()
            if key not in ("json_path", "plot_path")
        }
        settings.json_path.write_text(json.dumps(to_json(rows, recorded), indent=2) + "\n")
    missed = [row.label for row in rows if row.verdict() == "FAIL"]
    return 1 if settings.fail_on_miss and missed else 0
