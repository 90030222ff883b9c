"""The result table: rows, their targets and verdicts, as text or JSON."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

#: Dashboards open in the dashboard group's row.
DASHBOARDS = 20

GROUPS = (
    "bulk",
    "rtt",
    "connect",
    "concurrent",
    "http",
    "protocols",
    "named",
    "tls",
    "rpc",
    "dashboard",
    "growth",
    "reference",
)
#: Connections at once in the growth group's runs (``--growth``).
GROWTH = (1000, 5000, 20000)


@dataclass(frozen=True)
class Target:
    """A goal for one row: on the ratio to direct, or on the proxied value itself."""

    limit: float
    at_least: bool  # True: the number must be >= limit; False: <= limit
    on_ratio: bool  # True: applies to vaurien/direct; False: to the vaurien value

    def describe(self) -> str:
        """``'>=0.60x'``, ``'<=25'``..."""
        return f"{'>=' if self.at_least else '<='}{self.limit:g}{'x' if self.on_ratio else ''}"

    def met(self, value: float) -> bool:
        """Whether ``value`` (a ratio or a vaurien number, see ``on_ratio``) meets the target."""
        return value >= self.limit if self.at_least else value <= self.limit


@dataclass
class Row:
    """One line of the result table and the samples behind it."""

    key: str
    label: str
    unit: str
    target: Target | None = None
    direct: list[float] = field(default_factory=list)
    proxied: list[float] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def note(self, text: str) -> None:
        """Attach ``text`` to the row once."""
        if text not in self.notes:
            self.notes.append(text)

    def medians(self) -> tuple[float | None, float | None]:
        """Median of the direct samples and of the proxied samples (None when there are none)."""
        return (
            statistics.median(self.direct) if self.direct else None,
            statistics.median(self.proxied) if self.proxied else None,
        )

    def spread(self) -> float | None:
        """The wider relative range of the two sides' samples: (max - min) / median."""
        ranges = [
            (max(samples) - min(samples)) / abs(statistics.median(samples))
            for samples in (self.direct, self.proxied)
            if len(samples) > 1 and statistics.median(samples)
        ]
        return max(ranges) if ranges else None

    def ratio(self) -> float | None:
        """Proxied median over direct median."""
        direct, proxied = self.medians()
        return proxied / direct if direct and proxied is not None else None

    def verdict(self) -> str:
        """``'pass'``, ``'FAIL'``, ``'n/a'`` (nothing to judge) or ``''`` (no target)."""
        if self.target is None:
            return ""
        value = self.ratio() if self.target.on_ratio else self.medians()[1]
        if value is None:
            return "n/a"
        return "pass" if self.target.met(value) else "FAIL"


def make_rows(concurrent: int, rounds: int, growth: Sequence[int] = GROWTH) -> dict[str, Row]:
    """The rows of the table, in order, with the targets of issue 18 (issue 6 for the delay
    row's, issue 11 for the protocols group's, issue 12 for the chain's; the tls
    and rpc groups have none); ``growth`` are the connection counts of the growth
    group."""

    def at_least(x: float) -> Target:
        return Target(x, at_least=True, on_ratio=True)

    def at_most(x: float) -> Target:
        return Target(x, at_least=False, on_ratio=True)

    rows = [
        Row("bulk", "bulk, one way", "Gbit/s", at_least(0.80)),
        Row("bulk_both", "bulk, both ways (sum)", "Gbit/s", at_least(0.90)),
        Row("cpu", "proxy CPU per GiB, one way", "s/GiB", Target(0.25, False, False)),
        Row("cpu_both", "proxy CPU per GiB, both ways", "s/GiB"),
        Row("rtt_p50", "32 B round trip p50", "us"),
        Row("rtt_p99", "32 B round trip p99", "us"),
        Row("rtt_pinned_p50", "32 B round trip p50, one CPU", "us", at_most(2.2)),
        Row("rtt_pinned_p99", "32 B round trip p99, one CPU", "us", at_most(3.5)),
        Row("connect_p50", "connect+round trip+close p50", "us", at_most(3.0)),
        Row("connect_p99", "connect+round trip+close p99", "us", at_most(3.5)),
        Row("concurrent", f"{concurrent} conns x {rounds} round trips", "s", at_most(3.0)),
        Row("memory", "proxy memory per open connection", "KiB", Target(16, False, False)),
        Row("http_tcp", "HTTP keep-alive, --protocol tcp", "req/s", at_least(0.55)),
        Row("http_http", "HTTP keep-alive, --protocol http", "req/s", at_least(0.45)),
        Row("http_rules", "HTTP keep-alive, http, 10 rules none matching", "req/s"),
        Row("bulk_delay", "bulk, one way, delay 0 s", "Gbit/s", at_least(0.45)),
        Row("redis", "redis GET/SET, --protocol redis", "req/s", at_least(0.50)),
        Row("redis_p16", "redis GET/SET -P 16, --protocol redis", "req/s", at_least(0.40)),
        Row("redis_tcp", "redis GET/SET, --protocol tcp", "req/s"),
        Row("redis_p16_tcp", "redis GET/SET -P 16, --protocol tcp", "req/s"),
        Row("redis_p16_rules", "redis GET/SET -P 16, redis, 10 rules none matching", "req/s"),
        Row("memcache", "memcache set/get -P 16, --protocol memcache", "req/s", at_least(0.45)),
        Row("memcache_tcp", "memcache set/get -P 16, --protocol tcp", "req/s"),
        Row("http_mix", "HTTP 10:error,10:delay, --protocol http", "req/s", at_least(0.40)),
        Row("bulk_api", "bulk, one way, Toxiproxy API proxy", "Gbit/s", at_least(0.80)),
        Row("bulk_bandwidth", "bulk, one way, bandwidth (cap not reached)", "Gbit/s"),
        Row("bulk_chain", "bulk, one way, delay 0 s+bandwidth chained", "Gbit/s"),
        Row(
            "rtt_api_pinned_p50",
            "32 B round trip p50, one CPU, Toxiproxy API proxy",
            "us",
            at_most(2.2),
        ),
        Row(
            "rtt_api_pinned_p99",
            "32 B round trip p99, one CPU, Toxiproxy API proxy",
            "us",
            at_most(3.5),
        ),
        Row("https", "HTTPS keep-alive, --protocol http, TLS both sides", "req/s"),
        Row("pgbench", "PostgreSQL pgbench -S, --protocol postgres", "req/s"),
        Row("pgbench_tcp", "PostgreSQL pgbench -S, --protocol tcp", "req/s"),
        Row("grpc", "gRPC unary, 2 x 32 calls in flight, --protocol http2", "req/s"),
        Row("grpc_serial", "gRPC unary, one call at a time, --protocol http2", "req/s"),
        Row(
            "dashboard",
            f"HTTP keep-alive, --protocol http, {DASHBOARDS} dashboards open (direct: none)",
            "req/s",
            at_least(0.95),
        ),
        *(
            Row(f"growth_{i}", f"{count} conns x {rounds} round trips, per connection", "us")
            for i, count in enumerate(growth)
        ),
        Row(
            "growth_memory",
            f"proxy memory per idle connection, {max(growth)} open",
            "KiB",
            Target(16, False, False),
        ),
        Row("ref_bulk", "bulk, one way, HAProxy", "Gbit/s"),
        Row("ref_cpu", "HAProxy CPU per GiB, one way", "s/GiB"),
        Row("ref_rtt_pinned_p50", "32 B round trip p50, one CPU, HAProxy", "us"),
        Row("ref_rtt_pinned_p99", "32 B round trip p99, one CPU, HAProxy", "us"),
        Row("ref_connect_p50", "connect+round trip+close p50, HAProxy", "us"),
        Row("ref_connect_p99", "connect+round trip+close p99, HAProxy", "us"),
        Row("ref_redis", "redis GET/SET, HAProxy", "req/s"),
        Row("ref_redis_p16", "redis GET/SET -P 16, HAProxy", "req/s"),
    ]
    return {row.key: row for row in rows}


GROUP_ROWS = {
    "bulk": ("bulk", "bulk_both", "cpu", "cpu_both", "bulk_delay"),
    "rtt": ("rtt_p50", "rtt_p99", "rtt_pinned_p50", "rtt_pinned_p99"),
    "connect": ("connect_p50", "connect_p99"),
    "concurrent": ("concurrent", "memory"),
    "http": ("http_tcp", "http_http", "http_rules"),
    "protocols": (
        "redis",
        "redis_p16",
        "redis_tcp",
        "redis_p16_tcp",
        "redis_p16_rules",
        "memcache",
        "memcache_tcp",
        "http_mix",
    ),
    "named": (
        "bulk_api",
        "bulk_bandwidth",
        "bulk_chain",
        "rtt_api_pinned_p50",
        "rtt_api_pinned_p99",
    ),
    "tls": ("https",),
    "rpc": ("pgbench", "pgbench_tcp", "grpc", "grpc_serial"),
    "dashboard": ("dashboard",),
    "growth": (*(f"growth_{i}" for i in range(len(GROWTH))), "growth_memory"),
    "reference": (
        "ref_bulk",
        "ref_cpu",
        "ref_rtt_pinned_p50",
        "ref_rtt_pinned_p99",
        "ref_connect_p50",
        "ref_connect_p99",
        "ref_redis",
        "ref_redis_p16",
    ),
}
#: Rows whose direct side runs through Vaurien too (another setting of the same proxy): the
#: load tool's headroom says nothing there.
THROUGH_BOTH = frozenset({"dashboard"})
#: Rows whose ratios should stay close: (row, reference row, the most it may fall behind).
CLOSE_RATIOS = (
    ("memcache", "redis_p16", 0.20),
    ("bulk_api", "bulk", 0.10),  # a proxy made through the Toxiproxy API runs the same path
    ("rtt_api_pinned_p50", "rtt_pinned_p50", 0.10),
    ("http_rules", "http_http", 0.05),  # matching costs little: issue 14
    ("redis_p16_rules", "redis_p16", 0.05),
)
#: Units of times, for which lower is better (for the others, rates, higher is).
TIMES = frozenset({"us", "s"})
#: Vaurien's rows and the same measurements through HAProxy (the reference group): what a
#: plain relay written in C makes of the same machine.
REFERENCE_ROWS = (
    ("bulk", "ref_bulk"),
    ("cpu", "ref_cpu"),
    ("rtt_pinned_p50", "ref_rtt_pinned_p50"),
    ("rtt_pinned_p99", "ref_rtt_pinned_p99"),
    ("connect_p50", "ref_connect_p50"),
    ("connect_p99", "ref_connect_p99"),
    ("redis", "ref_redis"),
    ("redis_p16", "ref_redis_p16"),
)
REFERENCE_KEYS = frozenset(reference for _, reference in REFERENCE_ROWS)
#: (chain row, the rows of its members alone, the row without behavior): a chain must cost no
#: more than its members alone, cost being the time per bit moved.
CHAIN_COSTS = (("bulk_chain", ("bulk_delay", "bulk_bandwidth"), "bulk"),)


def _number(value: float | None) -> str:
    if value is None:
        return "-"
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def render(rows: Sequence[Row], groups: Sequence[str], repeats: int) -> str:
    """The result table, its notes and the load-tool checks, as text."""
    header = ("measurement", "unit", "direct", "vaurien", "ratio", "spread", "target", "result")
    lines = []
    notes: list[str] = []
    chosen = {key for group in groups for key in GROUP_ROWS[group]}
    shown = [row for row in rows if row.key in chosen]
    for row in shown:
        direct, proxied = row.medians()
        ratio, spread = row.ratio(), row.spread()
        marks = ""
        for text in row.notes:
            if text not in notes:
                notes.append(text)
            marks += f" [{notes.index(text) + 1}]"
        lines.append(
            (
                row.label,
                row.unit,
                _number(direct),
                _number(proxied),
                "-" if ratio is None else f"{ratio:.2f}x",
                "-" if spread is None else f"{100 * spread:.0f}%",
                row.target.describe() if row.target else "",
                row.verdict() + marks,
            )
        )
    widths = [max(len(line[i]) for line in [header, *lines]) for i in range(len(header))]
    out = []
    for i, line in enumerate([header, *lines]):
        cells = [
            cell.ljust(width) if col < 2 or col > 5 else cell.rjust(width)
            for col, (cell, width) in enumerate(zip(line, widths, strict=True))
        ]
        out.append("  ".join(cells).rstrip())
        if i == 0:
            out.append("  ".join("-" * width for width in widths))
    out.append(
        f"medians of {repeats} repeat(s); ratio = vaurien / direct; round-trip targets apply to"
        " the one-CPU rows\nspread = (max - min) / median of the samples, of the noisier side"
    )
    out.extend(f"[{i}] {text}" for i, text in enumerate(notes, 1))
    out.extend(tool_checks(shown))
    out.extend(ratio_checks(shown))
    out.extend(chain_checks(shown))
    out.extend(growth_checks(shown))
    out.extend(reference_checks(shown))
    return "\n".join(out)


def tool_checks(rows: Sequence[Row]) -> list[str]:
    """Warnings when a direct number is too close to the proxied one to trust the load tool."""
    checks = []
    for row in rows:
        ratio = row.ratio()
        if ratio is None or row.unit not in {"Gbit/s", "req/s"} or row.key in THROUGH_BOTH:
            continue
        headroom = 1 / ratio if ratio else float("inf")
        state = "ok" if headroom >= 1.25 else "the load tool may be the limit"
        proxy = "HAProxy" if row.key in REFERENCE_KEYS else "vaurien"
        checks.append(f"check: {row.label}: direct is {headroom:.1f}x {proxy} ({state})")
    return checks


def ratio_checks(rows: Sequence[Row]) -> list[str]:
    """Lines comparing the ratios of :data:`CLOSE_RATIOS`, for the pairs both measured."""
    by_key = {row.key: row for row in rows}
    checks = []
    for key, reference_key, most in CLOSE_RATIOS:
        if key not in by_key or reference_key not in by_key:
            continue
        row, reference = by_key[key], by_key[reference_key]
        ratio, reference_ratio = row.ratio(), reference.ratio()
        if ratio is None or not reference_ratio:
            continue
        if row.unit in TIMES:
            state = "ok" if ratio <= (1 + most) * reference_ratio else "behind"
            bound = f"at most {1 + most:g}"
        else:
            state = "ok" if ratio >= (1 - most) * reference_ratio else "behind"
            bound = f"at least {1 - most:g}"
        checks.append(
            f"check: {row.label} {ratio:.2f}x is {ratio / reference_ratio:.2f} times"
            f" {reference.label} {reference_ratio:.2f}x ({bound}: {state})"
        )
    return checks


def chain_checks(rows: Sequence[Row]) -> list[str]:
    """Lines comparing the cost of each chain of :data:`CHAIN_COSTS` with its members'.

    Cost is the proxy's time per Gbit moved, ``1 / rate``; what a member adds is its cost less
    the plain proxy's, so the chain may cost at most the plain cost plus what each adds, with
    10% for noise.
    """
    by_key = {row.key: row for row in rows}
    checks = []
    for key, member_keys, plain_key in CHAIN_COSTS:
        keys = (key, *member_keys, plain_key)
        if not all(k in by_key and by_key[k].medians()[1] for k in keys):
            continue
        chain, *members, plain = (1 / by_key[k].medians()[1] for k in keys)
        allowed = plain + sum(member - plain for member in members)
        state = "ok" if chain <= 1.10 * allowed else "costlier"
        checks.append(
            f"check: {by_key[key].label} costs {1000 * chain:.0f} ms/Gbit, its members alone"
            f" {1000 * allowed:.0f} ({chain / allowed:.2f} times; at most 1.1: {state})"
        )
    return checks


#: How much more a connection may cost at the growth group's largest count than at its
#: smallest, for the cost to count as flat.
FLAT = 1.5


def growth_checks(rows: Sequence[Row]) -> list[str]:
    """A line comparing the proxied time per connection at the largest and the smallest
    connection count of the growth group: it should stay flat."""
    times = [row for row in rows if row.key.startswith("growth_") and row.unit == "us"]
    measured = [row for row in times if row.medians()[1]]
    if len(measured) < 2:
        return []
    first, last = measured[0], measured[-1]
    growth = last.medians()[1] / first.medians()[1]
    state = "ok" if growth <= FLAT else "grows"
    return [
        f"check: time per connection through vaurien, {last.label.split()[0]} connections vs"
        f" {first.label.split()[0]}: {growth:.2f} times (flat: at most {FLAT:g}: {state})"
    ]


def reference_checks(rows: Sequence[Row]) -> list[str]:
    """Lines setting each row of :data:`REFERENCE_ROWS` beside HAProxy's: their ratios to
    direct (for CPU per GiB, their values), and which is ahead."""
    by_key = {row.key: row for row in rows}
    checks = []
    for key, reference_key in REFERENCE_ROWS:
        if key not in by_key or reference_key not in by_key:
            continue
        row, reference = by_key[key], by_key[reference_key]
        on_ratio = row.unit != "s/GiB"
        ours, theirs = (
            (row.ratio(), reference.ratio())
            if on_ratio
            else (row.medians()[1], reference.medians()[1])
        )
        if ours is None or theirs is None:
            continue
        lower_is_better = not on_ratio or row.unit in TIMES
        ahead = ours <= theirs if lower_is_better else ours >= theirs
        unit = "x" if on_ratio else f" {row.unit}"
        checks.append(
            f"check: {row.label}: vaurien {ours:.2f}{unit}, HAProxy {theirs:.2f}{unit}"
            f" ({'vaurien' if ahead else 'HAProxy'} ahead)"
        )
    return checks


def to_json(rows: Sequence[Row], settings: dict[str, Any]) -> dict[str, Any]:
    """Every sample, median, ratio and verdict, for other tools."""
    return {
        "settings": settings,
        "rows": [
            {
                "key": row.key,
                "label": row.label,
                "unit": row.unit,
                "direct": row.direct,
                "vaurien": row.proxied,
                "direct_median": row.medians()[0],
                "vaurien_median": row.medians()[1],
                "ratio": row.ratio(),
                "spread": row.spread(),
                "target": row.target.describe() if row.target else None,
                "result": row.verdict(),
                "notes": row.notes,
            }
            for row in rows
        ],
    }
