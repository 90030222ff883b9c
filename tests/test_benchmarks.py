"""The benchmark harness keeps working: its quickest run, with tiny sizes, fills every row."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # benchmarks/ is not installed: plain `pytest` needs the checkout
    sys.path.insert(0, str(REPO))
TOOLS = ("iperf3", "wrk", "nginx", "redis-server", "redis-benchmark", "memcached", "haproxy")
MISSING = [tool for tool in TOOLS if shutil.which(tool) is None]
if not any(Path("/usr/lib/postgresql").glob("*/bin/pgbench")):
    MISSING.append("postgresql")
MISSING += [name for name in ("grpc", "h2") if importlib.util.find_spec(name) is None]

pytestmark = pytest.mark.skipif(
    bool(MISSING) and not os.environ.get("CI"),
    reason=f"not installed: {', '.join(MISSING)} (.ci/install-deps and the test extra do it)",
)

TINY = [
    "--quick",
    "--repeats=1",
    "--bulk-seconds=1",
    "--rtt-count=200",
    "--connect-count=50",
    "--concurrent=50",
    "--http-seconds=1",
    "--redis-requests=2000",
    "--memcache-seconds=1",
    "--growth=20,40,60",
    "--time-limit=150",
]


def vaurien_starts() -> bool:
    """Whether this checkout's proxy accepts the command line the harness gives it."""
    done = subprocess.run(
        [sys.executable, "-m", "vaurien", "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return done.returncode == 0 and "--protocol" in done.stdout


def test_quickest_run_fills_every_row(tmp_path: Path) -> None:
    results = tmp_path / "results.json"
    plot = tmp_path / "growth.png"
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", *TINY, f"--json={results}", f"--plot={plot}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    rows = {row["key"]: row for row in json.loads(results.read_text())["rows"]}
    for row in rows.values():
        assert row["label"] in done.stdout
    assert plot.read_bytes().startswith(b"\x89PNG"), rows["growth_memory"]["notes"]
    proxy_only = {"cpu", "cpu_both", "memory", "growth_memory", "ref_cpu"}
    for key, row in rows.items():
        if key not in proxy_only:
            assert row["direct"], (key, row["notes"])
            assert all(value > 0 for value in row["direct"]), (key, row["direct"])
    if not vaurien_starts():
        assert any("vaurien did not start" in note for note in rows["bulk"]["notes"])
        return
    optional = {"http_http"}  # the http protocol may not exist yet: then it is noted, not measured
    for key, row in rows.items():
        if key in optional and not row["vaurien"]:
            assert row["notes"], key
            continue
        assert row["vaurien"], (key, row["notes"])
        if key not in ("memory", "growth_memory"):  # PSS growth of a few connections may be
            # lost in the noise
            assert all(value > 0 for value in row["vaurien"]), (key, row["vaurien"])
        assert row["result"] in {"", "pass", "FAIL"}, key
    # the mix's errors were counted as requests, and their share reported
    share = [note for note in rows["http_mix"]["notes"] if "non-2xx" in note]
    assert share, rows["http_mix"]["notes"]
    assert 0 < float(share[0].split("%")[0].split()[-1]) < 50, share
    assert "check: memcache set/get -P 16, --protocol memcache" in done.stdout
    assert "check: proxy CPU per GiB, one way: vaurien " in done.stdout  # beside HAProxy's


def test_growth_runs_in_lanes_where_one_proxy_could_not_hold_the_sockets(tmp_path: Path) -> None:
    """With at most 1,000 descriptors a process, 600 connections (1,200 sockets in one proxy)
    run as two lanes side by side, at every count, and every row is filled."""
    import resource

    from benchmarks.run import lanes_for

    assert [lanes_for(count, 20000) for count in (1000, 9950, 9951, 20000)] == [1, 1, 2, 3]
    results = tmp_path / "results.json"
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--repeats=1", "--only=growth"]
        + ["--growth=100,200,600", f"--json={results}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (1000, 1000)),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    rows = {row["key"]: row for row in json.loads(results.read_text())["rows"]}
    for key in ("growth_0", "growth_1", "growth_2", "growth_memory"):
        assert any("2 lanes side by side" in note for note in rows[key]["notes"]), rows[key]
        assert rows[key]["vaurien"], rows[key]
        if key != "growth_memory":
            assert rows[key]["direct"], rows[key]


def test_verdicts_follow_the_targets() -> None:
    from benchmarks.table import Row, Target, render

    rate = Row("http_tcp", "rate", "req/s", Target(0.5, True, True), [100.0], [60.0])
    time = Row("rtt_pinned_p50", "time", "us", Target(2.0, False, True), [10.0], [30.0])
    memory = Row("memory", "memory", "KiB", Target(25, False, False), [], [24.0, 30.0, 1.0])
    missing = Row("rtt_pinned_p99", "missing", "us", Target(2.0, False, True), [1.0], [])
    assert [row.verdict() for row in (rate, time, memory, missing)] == [
        "pass",
        "FAIL",
        "pass",
        "n/a",
    ]
    assert time.ratio() == 3.0
    assert memory.spread() == 29.0 / 24.0
    table = render([rate, time, memory, missing], ["rtt", "concurrent"], repeats=1)
    assert "FAIL" in table
    assert "rate" not in table  # the http group was not chosen


def test_memcache_ratio_is_checked_against_redis() -> None:
    from benchmarks.table import Row, render

    redis = Row("redis_p16", "redis", "req/s", None, [100.0], [50.0])
    close = Row("memcache", "memcache", "req/s", None, [100.0], [41.0])
    behind = Row("memcache", "memcache", "req/s", None, [100.0], [39.0])
    assert "0.82 times redis 0.50x (at least 0.8: ok)" in render([redis, close], ["protocols"], 1)
    assert "0.78 times redis 0.50x (at least 0.8: behind)" in render(
        [redis, behind], ["protocols"], 1
    )
    assert "times" not in render([close], ["protocols"], 1)  # no redis row: nothing to compare


# -- the protocols group's tools, run briefly against real servers ---------------------------


@pytest.fixture
def bench() -> Iterator[Any]:
    """A :class:`Bench` with the quick settings, its processes stopped after the test. Its
    work directory is made as the harness makes its own (PostgreSQL's user must reach it)."""
    from benchmarks.procs import Budget, Processes
    from benchmarks.run import Bench, parse_args

    settings = parse_args(["--quick", "--redis-requests=500"])
    with (
        tempfile.TemporaryDirectory(prefix="vaurien-bench-") as workdir,
        Processes(Path(workdir), Budget(120)) as procs,
    ):
        yield Bench(settings, procs, Path(workdir))


def test_redis_benchmark_rates_are_read_from_its_output(redis_server, bench) -> None:
    from benchmarks.run import parse_redis_benchmark

    argv = ["redis-benchmark", "-h", redis_server.host, "-p", str(redis_server.port)]
    # enough requests that neither test ends within one clock tick (its rate would not be a number)
    argv += ["-t", "set,get", "-c", "4", "-n", "20000", "-P", "16", "--csv"]
    output = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=True).stdout
    rates = parse_redis_benchmark(output)
    assert set(rates) == {"SET", "GET"}, output
    assert all(rate > 0 for rate in rates.values()), output
    for pipeline in (1, 16):
        assert bench.redis_benchmark(redis_server.port, pipeline=pipeline) > 0


def test_redis_benchmark_without_a_server_is_unavailable(bench) -> None:
    from benchmarks.procs import Unavailable, free_port

    with pytest.raises(Unavailable, match="redis-benchmark"):
        bench.redis_benchmark(free_port(), pipeline=1)


def test_wrk_counts_error_answers_that_close_their_connection(bench) -> None:
    from benchmarks.procs import Unavailable

    if not vaurien_starts():
        pytest.skip("this checkout's proxy does not start")
    backend = bench.nginx()
    direct = bench.wrk(backend)
    assert direct.requests > 0 and direct.rate > 0
    assert (direct.non_2xx, direct.socket_errors) == (0, "")
    # every request answered by the proxy with a 5xx and Connection: close; wrk reconnects
    _, port = bench.proxy(backend, protocol="http", behavior="100:error")
    failing = bench.wrk(port)
    assert failing.requests > 0 and failing.rate > 0
    assert (failing.non_2xx, failing.socket_errors) == (failing.requests, "")
    with pytest.raises(Unavailable, match="non-2xx"):
        bench.wrk_rate(port)
    assert bench.wrk_rate_with_errors(port) > 0
    assert bench._non_2xx == [1.0]


def run_load(mode: str, address: str, *args: str) -> tuple[int, dict]:
    """Run ``python -m benchmarks.load mode address args``; its exit status and JSON line."""
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.load", mode, address, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    return done.returncode, json.loads(done.stdout.strip().splitlines()[-1])


def memcached_stats(server) -> dict[str, int]:
    with socket.create_connection((server.host, server.port), timeout=10) as sock:
        sock.sendall(b"stats\r\n")
        data = b""
        while not data.endswith(b"END\r\n"):
            chunk = sock.recv(65536)
            assert chunk, data
            data += chunk
    stats = {}
    for line in data.decode().splitlines():
        words = line.split()
        if len(words) == 3 and words[2].isdigit():
            stats[words[1]] = int(words[2])
    return stats


def test_memcache_load_pipelines_sets_and_gets(memcached_server) -> None:
    address = f"{memcached_server.host}:{memcached_server.port}"
    before = memcached_stats(memcached_server)
    # bounded by count: 8 batches of 8 on 4 connections, each starting with a batch of sets
    code, result = run_load(
        "memcache", address, "--connections=4", "--depth=8", "--count=64", "--seconds=30"
    )
    assert code == 0, result
    assert result["requests"] == 64 and result["rate"] > 0
    after = memcached_stats(memcached_server)
    sets, gets = (after[name] - before[name] for name in ("cmd_set", "cmd_get"))
    assert sets + gets == 64 and sets >= 32 and gets >= 8, (sets, gets)
    assert after["get_hits"] - before["get_hits"] == gets  # each get finds the value set before
    # bounded by time
    code, result = run_load(
        "memcache", address, "--connections=4", "--depth=8", "--count=100000000", "--seconds=0.3"
    )
    assert code == 0, result
    assert result["requests"] > 0 and result["requests"] % 8 == 0
    assert 0.3 <= result["seconds"] < 10


def test_memcache_load_rejects_answers_it_did_not_ask_for(bench) -> None:
    port = bench.echo_backend("echo")
    code, result = run_load("memcache", f"127.0.0.1:{port}", "--seconds=1")
    assert code == 1
    assert "unexpected answer: b'set bench:" in result["error"]


def test_close_ratios_of_times_are_checked_the_other_way() -> None:
    from benchmarks.table import Row, render

    cli = Row("rtt_pinned_p50", "cli", "us", None, [10.0], [25.0])
    close = Row("rtt_api_pinned_p50", "api", "us", None, [10.0], [27.0])
    far = Row("rtt_api_pinned_p50", "api", "us", None, [10.0], [28.0])
    assert "1.08 times cli 2.50x (at most 1.1: ok)" in render([cli, close], ["rtt", "named"], 1)
    assert "1.12 times cli 2.50x (at most 1.1: behind)" in render([cli, far], ["rtt", "named"], 1)


def test_rows_are_set_beside_haproxys_the_right_way_round() -> None:
    from benchmarks.table import Row, render

    rows = [
        Row("bulk", "bulk", "Gbit/s", None, [20.0], [9.0]),
        Row("cpu", "cpu", "s/GiB", None, [], [0.5]),
        Row("rtt_pinned_p50", "rtt", "us", None, [10.0], [25.0]),
        Row("ref_bulk", "bulk, HAProxy", "Gbit/s", None, [20.0], [8.0]),
        Row("ref_cpu", "cpu, HAProxy", "s/GiB", None, [], [0.9]),
        Row("ref_rtt_pinned_p50", "rtt, HAProxy", "us", None, [10.0], [22.0]),
    ]
    text = render(rows, ["bulk", "rtt", "reference"], 1)
    assert "check: bulk: vaurien 0.45x, HAProxy 0.40x (vaurien ahead)" in text
    assert "check: cpu: vaurien 0.50 s/GiB, HAProxy 0.90 s/GiB (vaurien ahead)" in text
    assert "check: rtt: vaurien 2.50x, HAProxy 2.20x (HAProxy ahead)" in text
    assert "check: bulk, HAProxy: direct is 2.5x HAProxy (ok)" in text
    assert "HAProxy" not in render(rows, ["bulk", "rtt"], 1)  # the group not run: no checks


def test_a_chain_is_checked_against_its_members_alone() -> None:
    from benchmarks.table import Row, render

    def rows(chain_rate: float) -> list[Row]:
        return [
            Row("bulk", "plain", "Gbit/s", None, [20.0], [10.0]),  # 100 ms/Gbit
            Row("bulk_delay", "delay", "Gbit/s", None, [20.0], [8.0]),  # +25
            Row("bulk_bandwidth", "bandwidth", "Gbit/s", None, [20.0], [5.0]),  # +100
            Row("bulk_chain", "chain", "Gbit/s", None, [20.0], [chain_rate]),
        ]

    # Alone they add 25 and 100 ms/Gbit to the plain 100: the chain may cost 225 (+10%).
    assert "chain costs 222 ms/Gbit, its members alone 225 (0.99 times; at most 1.1: ok)" in (
        render(rows(4.5), ["bulk", "named"], 1)
    )
    assert "(1.19 times; at most 1.1: costlier)" in render(rows(3.75), ["bulk", "named"], 1)
    # No chain row: nothing to compare.
    assert "costs" not in render(rows(4.5)[:3], ["bulk", "named"], 1)


# -- the rpc group's tools, run briefly against real servers ---------------------------------


def test_pgbench_rates_direct_and_through_the_proxy(bench) -> None:
    from benchmarks import postgres
    from benchmarks.procs import Unavailable, free_port

    server = postgres.start(bench.procs, bench.workdir)
    server.initialize(bench.procs)
    assert server.select_rate(bench.procs, server.port, seconds=1) > 0
    with pytest.raises(Unavailable, match="pgbench printed no rate: connection to server"):
        server.select_rate(bench.procs, free_port(), seconds=1)
    if not vaurien_starts():
        pytest.skip("this checkout's proxy does not start")
    _, port = bench.proxy(server.port, "--timeout", "60", protocol="postgres")
    assert server.select_rate(bench.procs, port, seconds=1) > 0
    # Clients that lose their connection make the run no sample. (pgbench's setup query may be
    # the one cut: then it stops before its clients start.)
    _, port = bench.proxy(server.port, protocol="postgres", behavior="1:abort", name="abort")
    with pytest.raises(Unavailable, match=r"run was aborted: client \d+|could not count"):
        server.select_rate(bench.procs, port, seconds=1)


def test_grpc_calls_concurrently_and_one_at_a_time(bench) -> None:
    from benchmarks.procs import Unavailable
    from benchmarks.run import GRPC_LOADS

    port = bench.grpc_server()
    code, result = run_load(
        "grpc", f"127.0.0.1:{port}", "--size=100", "--connections=2", "--depth=4", "--seconds=0.5"
    )
    assert code == 0, result
    assert result["calls"] > 0 and 0.5 <= result["seconds"] < 10, result
    # the sum of two clients' rates, each over its own time, which was at least 0.5 s
    assert result["calls"] / result["seconds"] <= result["rate"] <= result["calls"] / 0.5, result
    for clients, in_flight in GRPC_LOADS.values():
        assert bench.grpc_rate(port, clients, in_flight) > 0
    if not vaurien_starts():
        pytest.skip("this checkout's proxy does not start")
    _, proxy = bench.proxy(port, protocol="http2")
    assert bench.grpc_rate(proxy, clients=2, in_flight=8) > 0
    # A failed call makes the run no sample, and says why.
    _, failing = bench.proxy(port, protocol="http2", behavior="20:error", name="failing")
    with pytest.raises(Unavailable, match="gRPC call failed: UNAVAILABLE"):
        bench.grpc_rate(failing, clients=2, in_flight=8)


def test_grpc_load_rejects_a_server_that_is_not_grpc(bench) -> None:
    port = bench.echo_backend("echo")
    code, result = run_load(
        "grpc", f"127.0.0.1:{port}", "--size=100", "--connections=1", "--depth=1"
    )
    assert code == 1
    assert result["error"].startswith("ConnectionError: gRPC call failed: "), result


def test_rpc_group_notes_what_is_missing(bench, monkeypatch, tmp_path: Path) -> None:
    from benchmarks import postgres

    monkeypatch.setattr(postgres, "POSTGRES_LIB", tmp_path / "no-postgresql")
    # The children of the run import this first: grpcio is missing for them.
    hidden = tmp_path / "without-grpc"
    hidden.mkdir()
    (hidden / "sitecustomize.py").write_text("import sys\nsys.modules['grpc'] = None\n")
    bench.env["PYTHONPATH"] = os.pathsep.join([str(hidden), bench.env["PYTHONPATH"]])
    bench.rpc()
    for key, missing in (
        ("pgbench", "PostgreSQL is not installed in"),
        ("pgbench_tcp", "PostgreSQL is not installed in"),
        ("grpc", "grpc-echo exited: grpcio is not installed"),
        ("grpc_serial", "grpc-echo exited: grpcio is not installed"),
    ):
        row = bench.rows[key]
        assert (row.direct, row.proxied) == ([], []), key
        assert any(note.startswith(missing) for note in row.notes), (key, row.notes)
