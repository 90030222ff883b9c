"""The live dashboard: a page the control API serves at ``/``, and the stream that feeds it.

The page is three files of this package (``static/``: HTML, CSS and a small script; no build
step, and nothing fetched from anywhere but the API). It reads every figure from one stream of
Server-Sent Events, ``GET /dashboard/events``, and changes the proxies through the control
API's own routes (``PUT /proxies/NAME/behavior``, ``PUT /proxies/NAME/enabled``), as
:class:`vaurien.Client` does, so the same checks apply and a refusal shows the API's message.

:class:`Watch` samples every proxy's counters once a :data:`INTERVAL` while at least one stream
is open, and not at all when none is: nothing of it runs on the proxies' path, and with no
dashboard open nothing of it runs at all. Each sample is encoded once and written to every open
stream; a stream that cannot keep up skips to the latest sample instead of queueing them. It
keeps the last :data:`HISTORY` samples' rates, for the charts of a page opened later, and a
bounded feed of the faults injected: the picks of every behavior but ``dummy`` since the
previous sample, per proxy.

A stream's first event, ``history``, holds what was kept; then one ``sample`` event a second::

    event: sample
    data: {"time": 1712345678.1, "watchers": 1, "proxies": [PROXY, ...], "faults": [FAULT, ...]}

A PROXY is what ``GET /proxies/NAME`` shows (name, addresses, protocol, behavior, enabled),
plus ``mix`` (``[[percent, "delay"], ...]``, chains as ``"delay+bandwidth"``), ``options`` (the
option values of each behavior of the mix), ``stats`` (``GET /proxies/NAME/stats``), ``rules``
(``GET /proxies/NAME/rules``, each rule with its ``picks``), ``scenario``
(``GET /proxies/NAME/scenario``) and ``rates`` (bytes and events per second each way since the
previous sample, None for the first).

A FAULT is ``{"id", "time", "proxy", "behavior", "count", "request", "session"}``. While a
stream is open, each proxy notes its picks of every behavior but ``dummy``
(``proxy.fault_log``): a FAULT is one of them, ``count`` 1, with the number of its session and
the request it hit as its protocol names it (``"GET /api/x"``; None where the protocol names
none). At most :data:`NAMED` of them are kept per proxy and sample; the picks beyond are one
FAULT per behavior, with their ``count`` and no ``request`` nor ``session``. The counts add up
to the picks since the previous sample.
"""

from __future__ import annotations

import collections
import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from importlib import resources
from typing import Any

import gevent
import gevent.event

log = logging.getLogger(__name__)

#: Seconds between two samples.
INTERVAL = 1.0
#: Samples whose rates are kept for the charts: five minutes.
HISTORY = 300
#: Faults kept for the feed.
FAULTS = 200
#: Faults noted one by one, per proxy and sample; the others are counted.
NAMED = 20
#: The most characters of a field a fault shows of its request.
FIELD_TEXT = 60
#: Streams open at once; more are refused with a 503.
MAX_WATCHERS = 256
#: The counters whose rates are charted, in the order of a history point.
RATES = ("bytes_to_backend", "bytes_to_client", "events_to_backend", "events_to_client")

#: What the page's files are served as.
_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
}
#: The page loads nothing from elsewhere, and runs no script of another origin.
_PAGE_HEADERS = [
    (
        "Content-Security-Policy",
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    ),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("Cache-Control", "no-cache"),
]
_STREAM_HEADERS = [
    ("Content-Type", "text/event-stream"),
    ("Cache-Control", "no-store"),
    ("X-Accel-Buffering", "no"),  # a reverse proxy in front must not hold the events back
]


class Watch:
    """Samples the proxies of ``server`` while someone watches, and hands each sample to every
    open stream (see the module's documentation). ``describe(proxy)`` is what the API shows of
    a proxy."""

    def __init__(
        self,
        server: Any,
        describe: Callable[[Any], dict[str, Any]],
        interval: float = INTERVAL,
    ) -> None:
        self.server = server
        self.describe = describe
        self.interval = interval
        #: Open streams.
        self.watchers = 0
        self.history: collections.deque[tuple[float, dict[str, list[float]]]] = collections.deque(
            maxlen=HISTORY
        )
        self.faults: collections.deque[dict[str, Any]] = collections.deque(maxlen=FAULTS)
        self._fault_id = 0
        self._sampler: gevent.Greenlet | None = None
        self._previous: dict[str, tuple[float, dict[str, Any]]] = {}  # name -> (when, stats)
        self._latest = b""
        self._published = gevent.event.Event()

    @property
    def running(self) -> bool:
        """Whether the sampler runs (a stream is open)."""
        return self._sampler is not None

    def stream(self) -> Iterator[bytes]:
        """The events of one stream: ``history``, then each sample until the client leaves.

        The stream counts as a watcher from its first event until the server closes it, which
        it does when a write fails (the tab was closed) or the API stops.
        """
        self.watchers += 1
        try:
            if self._sampler is None:
                self._previous.clear()  # rates across a time nobody watched mean nothing
                self._sampler = gevent.spawn(self._sample_while_watched)
            history = {
                "interval": self.interval,
                "rates": list(RATES),
                "history": list(self.history),
                "faults": list(self.faults),
            }
            yield b"retry: 2000\nevent: history\ndata: " + _encode(history) + b"\n\n"
            while True:
                self._published.wait()
                yield self._latest
        finally:
            self.watchers -= 1

    def _sample_while_watched(self) -> None:
        due = time.monotonic()
        try:
            while self.watchers:
                try:
                    self.publish(self.sample())
                except Exception:  # a proxy that cannot be read must not end the dashboard
                    log.exception("dashboard: cannot sample the proxies")
                due = max(due + self.interval, time.monotonic())
                gevent.sleep(due - time.monotonic())
        finally:
            self._sampler = None
            for proxy in list(self.server.proxies.values()):
                proxy.fault_log = None  # nobody watches: nothing is noted

    def sample(self) -> dict[str, Any]:
        """Read every proxy's counters now: the ``data`` of one ``sample`` event. Keeps its
        rates in :attr:`history` and its faults in :attr:`faults`."""
        now, wall = time.monotonic(), time.time()
        proxies, points, faults = [], {}, []
        previous, self._previous = self._previous, {}
        for proxy in list(self.server.proxies.values()):
            # The picks noted since the last sample, read with the counters, in one step.
            noted, proxy.fault_log = proxy.fault_log, collections.deque(maxlen=NAMED)
            stats = proxy.stats()
            mix = proxy.mix
            chaos = proxy.chaos
            shown = self.describe(proxy)
            shown["mix"] = [[percent, "+".join(names)] for percent, names in mix.spec.entries]
            shown["options"] = {name: dict(mix.behaviors[name].settings) for name in mix.spec.names}
            shown["stats"] = stats
            shown["rules"] = [
                {**rule, "picks": stats["rules"].get(rule["name"], 0)} for rule in chaos.rules()
            ]
            shown["scenario"] = chaos.scenario()
            shown["rates"] = None
            before = previous.get(proxy.name)
            if before is not None and now > before[0]:
                elapsed = now - before[0]
                rates = [max(0.0, (stats[key] - before[1][key]) / elapsed) for key in RATES]
                shown["rates"] = dict(zip(RATES, rates, strict=True))
                points[proxy.name] = rates
                faults += self._faults(
                    wall, proxy, before[1]["behaviors"], stats["behaviors"], noted or ()
                )
            self._previous[proxy.name] = (now, stats)
            proxies.append(shown)
        self.history.append((wall, points))
        return {"time": wall, "watchers": self.watchers, "proxies": proxies, "faults": faults}

    def _faults(
        self,
        wall: float,
        proxy: Any,
        before: dict[str, int],
        now: dict[str, int],
        noted: Iterable[tuple[float, str, int, Any]],
    ) -> list[dict[str, Any]]:
        added = {
            behavior: count - before.get(behavior, 0)
            for behavior, count in now.items()
            if count > before.get(behavior, 0) and behavior != proxy.mix.dummy.name
        }
        named = [each for each in noted if each[1] in added]
        unnamed = dict(added)
        for _, behavior, _, _ in named:
            unnamed[behavior] -= 1
        found = [
            self._fault(wall, proxy.name, behavior, count, None, None)
            for behavior, count in unnamed.items()
            if count > 0
        ]
        for when, behavior, session, fields in named:
            request = request_text(proxy.protocol.request_name, fields)
            found.append(self._fault(when, proxy.name, behavior, 1, request, session))
        return found

    def _fault(
        self,
        when: float,
        proxy: str,
        behavior: str,
        count: int,
        request: str | None,
        session: int | None,
    ) -> dict[str, Any]:
        self._fault_id += 1
        fault = {
            "id": self._fault_id,
            "time": when,
            "proxy": proxy,
            "behavior": behavior,
            "count": count,
            "request": request,
            "session": session,
        }
        self.faults.append(fault)
        return fault

    def publish(self, sample: dict[str, Any]) -> None:
        """Hand ``sample`` to every open stream."""
        self._latest = b"event: sample\ndata: " + _encode(sample) + b"\n\n"
        published, self._published = self._published, gevent.event.Event()
        published.set()


def request_text(names: Iterable[str], fields: Mapping[str, str] | None) -> str | None:
    """What a fault shows of its request: the values of the fields ``names`` (a protocol's
    ``request_name``) that ``fields`` holds, each cut to :data:`FIELD_TEXT` characters; None
    when it holds none of them."""
    if fields is None:
        return None
    shown = []
    for name in names:
        value = fields.get(name)
        if value:
            shown.append(value if len(value) <= FIELD_TEXT else value[: FIELD_TEXT - 1] + "…")
    return " ".join(shown) or None


def _encode(value: Any) -> bytes:
    return json.dumps(value, default=str, separators=(",", ":")).encode()


def _asset(name: str) -> bytes:
    return (resources.files(__name__) / "static" / name).read_bytes()


class Dashboard:
    """The dashboard of ``server``: the routes of the page's files (``/`` and
    ``/dashboard/NAME``), and its streams (the control API serves them at
    ``/dashboard/events``)."""

    def __init__(self, server: Any, describe: Callable[[Any], dict[str, Any]]) -> None:
        self.watch = Watch(server, describe)
        self.routes: dict[str, dict[str, Callable[[Any, dict[str, Any]], Any]]] = {
            "/": {"GET": self._file("index.html")},
            "/dashboard/dashboard.js": {"GET": self._file("dashboard.js")},
            "/dashboard/dashboard.css": {"GET": self._file("dashboard.css")},
        }

    @staticmethod
    def _file(name: str) -> Callable[[Any, dict[str, Any]], Any]:
        content_type = _TYPES[name[name.rindex(".") :]]

        def serve(proxy: Any, body: dict[str, Any]) -> tuple[int, list[tuple[str, str]], bytes]:
            # Read at each request, from the installed package: small, and never stale.
            return 200, [("Content-Type", content_type), *_PAGE_HEADERS], _asset(name)

        return serve

    def events(self) -> tuple[int, list[tuple[str, str]], Iterator[bytes]] | None:
        """The stream of samples (``text/event-stream``) for one more watcher, or None when
        :data:`MAX_WATCHERS` streams are open."""
        if self.watch.watchers >= MAX_WATCHERS:
            return None
        return 200, _STREAM_HEADERS, self.watch.stream()
