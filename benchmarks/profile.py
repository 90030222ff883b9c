"""Where Vaurien's time goes: py-spy samples of the proxy under one benchmark's load.

``python -m benchmarks.profile bulk`` (or ``rtt``, ``connect``, ``http``, ``redis``) starts the
backend and Vaurien as the benchmark does, records the proxy with ``py-spy`` while the load runs,
and prints the functions with the most samples: on their own (self) and with what they call
(total).
``--output DIR`` keeps the raw collapsed stacks, which flame graph tools read.
"""

from __future__ import annotations

import argparse
import collections
import re
import shutil
import tempfile
import time
from pathlib import Path

from benchmarks.limits import raise_open_files_limit
from benchmarks.procs import Budget, Processes, Unavailable, cpu_seconds
from benchmarks.run import PIPELINE, Bench, parse_args

LOADS = ("bulk", "rtt", "connect", "http", "redis")
FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^()]*?)(?::\d+)?\)$")


def summarize(collapsed: str, top: int) -> str:
    """The ``top`` functions by self and by total samples in py-spy's collapsed output."""
    own: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    samples = 0
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [_function(frame) for frame in stack.split(";")]
        frames = [frame for frame in frames if frame]
        if not frames:
            continue
        samples += int(count)
        own[frames[-1]] += int(count)
        for frame in set(frames):
            total[frame] += int(count)
    if not samples:
        return "no samples: was the proxy busy?"
    lines = [f"{samples} samples while busy"]
    for title, counter in (("self", own), ("total", total)):
        lines.append(f"-- {title} --")
        for name, count in counter.most_common(top):
            lines.append(f"{100 * count / samples:5.1f}%  {name}")
    return "\n".join(lines)


def _function(frame: str) -> str:
    """``'recv_into (gevent/_socketcommon.py:123)'`` -> ``'recv_into (_socketcommon.py)'``."""
    match = FRAME.match(frame.strip())
    if match is None:
        return ""  # the process and thread entries py-spy puts first
    return f"{match['function']} ({Path(match['file']).name})"


def profile(
    load: str, seconds: int, protocol: str, behavior: str, output: Path, native: bool = False
) -> str:
    """Run ``load`` through a fresh proxy for ``seconds`` under py-spy; the summary text."""
    raise_open_files_limit()
    settings = parse_args(["--quick"])
    with Processes(output, Budget(seconds + 120)) as procs:
        bench = Bench(settings, procs, output)
        if load == "bulk":
            backend = bench.iperf3_server()
        elif load == "http":
            backend = bench.nginx()
        elif load == "redis":
            backend = bench.redis_server()
        else:
            backend = bench.echo_backend("echo")
        proxy, port = bench.proxy(backend, protocol=protocol, behavior=behavior)
        stacks = output / f"{load}.txt"
        spy = procs.start(
            [
                "py-spy",
                "record",
                "--pid",
                str(proxy.pid),
                "--duration",
                str(seconds),
                "--rate",
                "250",
                *(["--native"] if native else ["--nonblocking"]),
                "--format",
                "raw",
                "--output",
                str(stacks),
            ],
            name="py-spy",
        )
        cpu_before, started = cpu_seconds(proxy.pid), time.monotonic()
        address = f"127.0.0.1:{port}"
        if load == "bulk":
            argv = ["iperf3", "-c", "127.0.0.1", "-p", str(port), "-t", str(seconds)]
            procs.run(argv, timeout=seconds + 20)
        elif load == "http":
            wrk = [
                "wrk",
                "-t",
                "1",
                "-c",
                "32",
                "-d",
                f"{seconds}s",
                f"http://{address}/index.html",
            ]
            procs.run(wrk, timeout=seconds + 20)
        elif load == "redis":  # pipelined GET/SET, as the protocols group's -P 16 row
            while time.monotonic() - started < seconds:
                bench.redis_benchmark(port, pipeline=PIPELINE)
        else:
            while time.monotonic() - started < seconds:
                bench.load(load, address, "--count", "2000", timeout=60)
        busy = (cpu_seconds(proxy.pid) - cpu_before) / (time.monotonic() - started)
        spy.popen.wait(30)
        if not stacks.exists():
            raise Unavailable(f"py-spy wrote nothing: {spy.log_tail()}")
        return f"proxy CPU use: {100 * busy:.0f}%\n" + summarize(stacks.read_text(), 15)


def main(argv: list[str] | None = None) -> int:
    """Profile the proxy under one load; print the hottest functions."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile", description=__doc__)
    parser.add_argument("load", choices=LOADS)
    parser.add_argument("--seconds", type=int, default=8, help="how long to sample (8)")
    parser.add_argument("--protocol", default="tcp", help="Vaurien's --protocol (tcp)")
    parser.add_argument("--behavior", default="100:dummy", help="Vaurien's --behavior")
    parser.add_argument(
        "--native", action="store_true", help="include C frames (pauses the proxy to sample)"
    )
    parser.add_argument("--output", type=Path, help="keep the collapsed stacks in this folder")
    args = parser.parse_args(argv)
    if shutil.which("py-spy") is None:
        parser.exit(2, "benchmarks.profile: error: py-spy is not installed (pip install py-spy)\n")
    common = (args.load, args.seconds, args.protocol, args.behavior)
    try:
        if args.output is not None:
            args.output.mkdir(parents=True, exist_ok=True)
            print(profile(*common, args.output, args.native))
        else:
            with tempfile.TemporaryDirectory(prefix="vaurien-profile-") as tmp:
                print(profile(*common, Path(tmp), args.native))
    except Unavailable as e:
        parser.exit(1, f"benchmarks.profile: error: {e}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
