"""Helpers for the protocol tests: driving a sans-IO framer over bytes cut at chosen points
(as the proxy's loops do), and a behavior that fails chosen requests, and an HTTP reader."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import h11

from vaurien.behaviors.base import BaseBehavior
from vaurien.protocols.framed import HOLD


def cut(data: bytes, points: Iterable[int]) -> list[bytes]:
    """``data`` split at ``points`` (offsets, in any order, duplicates allowed)."""
    edges = sorted({p for p in points if 0 < p < len(data)})
    return [data[a:b] for a, b in zip([0, *edges], [*edges, len(data)], strict=True)]


def run(
    framer: Any,
    chunks: Sequence[bytes],
    requests: Sequence[Any] | None = None,
    after: Callable[[Any, Any], None] | None = None,
) -> tuple[bytes, list[tuple[int, Any]]]:
    """Feed ``chunks`` to ``framer``; return what passes and the (offset, event) of each end.

    For an answer framer, ``requests`` are handed to ``begin`` as each message starts.
    ``after(framer, event)`` runs after each end (to tell the framer what the other side
    said). Heads are checked to carry exactly the bytes they were made of.
    """
    passed = bytearray()
    held = bytearray()
    ends: list[tuple[int, Any]] = []
    pending = list(requests) if requests is not None else None
    offset = 0
    for chunk in chunks:
        pos = 0
        while pos < len(chunk):
            if pending is not None and framer.idle:
                framer.begin(pending.pop(0) if pending else None)
            newpos, event = framer.feed(chunk, pos, len(chunk))
            assert pos < newpos <= len(chunk) or (event is not None and event is not HOLD)
            if event is None:
                assert not held
                passed += chunk[pos:newpos]
            elif event is HOLD:
                held += chunk[pos:newpos]
            else:
                if event.raw is not None:
                    stop = newpos - event.body
                    assert event.held == len(held)
                    assert event.raw == bytes(held) + chunk[pos:stop]
                    assert not event.body or event.end
                    passed += event.raw + chunk[stop:newpos]
                    held.clear()
                else:
                    assert not held
                    passed += chunk[pos:newpos]
                if event.end:
                    ends.append((offset + newpos, event))
                    if after is not None:
                        after(framer, event)
            pos = newpos
        offset += len(chunk)
    last = framer.feed_eof()
    if last is not None:
        ends.append((offset, last))
    return bytes(passed), ends


def boundaries(ends: list[tuple[int, Any]]) -> list[tuple[int, str]]:
    """The ends in a comparable form: offset and the event's repr."""
    return [(offset, repr(event)) for offset, event in ends]


def same_under_any_split(framer_factory, data: bytes, points, requests=None, after=None) -> None:
    """Framing ``data`` cut at ``points`` gives what framing it whole gives."""
    whole_passed, whole_ends = run(framer_factory(), [data], requests, after)
    passed, ends = run(framer_factory(), cut(data, points), requests, after)
    assert passed == whole_passed == data
    assert boundaries(ends) == boundaries(whole_ends)


def peeks(
    protocol: Any, state: Any, request: bytes, names: Sequence[str], after: bytes = b""
) -> dict[str, Any]:
    """The fields ``names`` that ``protocol.peek`` gives for ``request`` (followed by ``after``,
    what comes next in the stream), None for those it lacks. It also checks, for every prefix of
    the request, at an offset in a larger buffer, what the driver relies on: None while the
    fields are not all there, then the same fields as for the whole request."""
    data = b"xx" + request + after

    def values(end: int) -> dict[str, Any] | None:
        fields = protocol.peek(state, data, 2, end)
        return None if fields is None else {name: fields.get(name) for name in names}

    whole = values(len(data))
    assert whole is not None, request
    seen = False
    for end in range(3, len(data)):
        found = values(end)
        assert found is None or found == whole, (request, end, found)
        assert found is not None or not seen, (request, end)
        seen = found is not None
    return whole


class ErrorOnCalls(BaseBehavior):
    """A behavior for the tests: the requests numbered in ``calls`` (from 1) get the
    protocol's error (or, with ``verb = abort``, are aborted); the others pass. Named by dotted
    path: ``protocol_support.ErrorOnCalls``."""

    name = "error_on_calls"
    options = {
        "calls": ("Comma-separated numbers of the requests that fail", str, "2"),
        "verb": ("What happens to them", str, "error", ("error", "abort")),
    }

    def __init__(self):
        super().__init__()
        self.count = 0

    def on_before_handle(self, protocol, source, dest, to_backend):
        self.count += 1
        if str(self.count) not in self.settings["calls"].split(","):
            return True
        if self.settings["verb"] == "abort":
            protocol.abort(source, dest, to_backend)
        else:
            protocol.send_error(source, dest, to_backend)
        return False


def error_on_calls(proxy: Any, calls: str, **options: str) -> None:
    """Put :class:`ErrorOnCalls` in force on a started proxy's handle: the requests numbered
    in ``calls`` (``"2,4"``) fail, the others pass."""
    spec = "100:protocol_support.ErrorOnCalls"
    proxy.call(proxy.proxy.set_behavior, spec, {"error_on_calls": {"calls": calls, **options}})


def read_responses(sock: Any, count: int) -> list[tuple[int, dict[bytes, bytes], bytes]]:
    """Read ``count`` responses off a raw socket with h11; the last may end the connection."""
    connection = h11.Connection(h11.CLIENT)
    responses = []
    for _ in range(count):
        connection.send(h11.Request(method="GET", target="/", headers=[("Host", "x")]))
        connection.send(h11.EndOfMessage())
        body = b""
        while True:
            event = connection.next_event()
            if event is h11.NEED_DATA:
                connection.receive_data(sock.recv(65536))
                continue
            if isinstance(event, h11.Response):
                status, headers = event.status_code, dict(event.headers)
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
                break
        responses.append((status, headers, body))
        if connection.our_state is h11.MUST_CLOSE or connection.their_state is h11.MUST_CLOSE:
            break
        connection.start_next_cycle()
    return responses
