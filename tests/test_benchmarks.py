"""The benchmark harness keeps working: its quickest run, with tiny sizes, fills every row."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # benchmarks/ is not installed: plain `pytest` needs the checkout
    sys.path.insert(0, str(REPO))
TOOLS = ("iperf3", "wrk", "nginx")
MISSING = [tool for tool in TOOLS if shutil.which(tool) is None]

pytestmark = pytest.mark.skipif(
    bool(MISSING) and not os.environ.get("CI"),
    reason=f"not installed: {', '.join(MISSING)} (apt-get install iperf3 wrk nginx)",
)

TINY = [
    "--quick",
    "--repeats=1",
    "--bulk-seconds=1",
    "--rtt-count=200",
    "--connect-count=50",
    "--concurrent=50",
    "--http-seconds=1",
    "--time-limit=100",
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
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", *TINY, f"--json={results}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    rows = {row["key"]: row for row in json.loads(results.read_text())["rows"]}
    for row in rows.values():
        assert row["label"] in done.stdout
    proxy_only = {"cpu", "cpu_both", "memory"}
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
        if key != "memory":  # PSS growth of 50 connections may be lost in the noise
            assert all(value > 0 for value in row["vaurien"]), (key, row["vaurien"])
        assert row["result"] in {"", "pass", "FAIL"}, key


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
