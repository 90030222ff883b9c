"""What the framed driver keeps for one session, and what both of its sides share."""

from __future__ import annotations

import collections
from typing import Any

import gevent.event

from vaurien.contract import does_nothing
from vaurien.protocols.framed.exchange import Exchange, Phase

READY = Phase.READY


class FramedState:
    """The driver's view of one session: the framers, the exchange queue and where each
    side is. ``state`` is what the protocol itself keeps (its ``new_session_state``)."""

    __slots__ = (
        "session",
        "state",
        "requests",
        "answers",
        "queue",
        "current",
        "behavior",
        "target",
        "passing",
        "answering",
        "gate",
        "stream",
        "last",
        "advancing",
        "last_behavior",
        "picked",
        "spare_run",
        "_changed",
        "__weakref__",
    )

    def __init__(self, session: Any, state: Any, requests: Any, answers: Any) -> None:
        self.session = session
        self.state = state
        self.requests = requests
        self.answers = answers
        #: Exchanges not finished yet, oldest first.
        self.queue: collections.deque[Exchange] = collections.deque()
        self.current: Exchange | None = None  # the request being read
        self.behavior: Any = None  # the behavior whose hook acts on the next request
        self.target: Exchange | None = None  # whose answer is arriving
        self.passing = True  # whether the answer arriving reaches the client
        self.answering: Exchange | None = None  # whose answer a to_client behavior reads
        self.gate: Exchange | None = None  # the next request waits until this one is answered
        self.stream = False  # the session became a plain byte stream
        self.last = False  # no more requests pass: the connection ends after the answers due
        self.advancing = False
        self.last_behavior: Any = None  # the behavior of the latest request (on_close)
        self.picked: Any = None  # the pick a relay made for the next request, left to a pump
        self.spare_run: Exchange | None = None  # a run relayed and answered, to be reused
        self._changed: gevent.event.Event | None = None

    def wait(self) -> None:
        """Wait until :meth:`notify` (a hook returned, an exchange was finished)."""
        if self._changed is None:
            self._changed = gevent.event.Event()
        self._changed.wait()

    def notify(self) -> None:
        """Wake whoever waits in :meth:`wait`."""
        changed = self._changed
        if changed is not None:
            self._changed = None
            changed.set()


class _Hooks:
    """Which hooks of a behavior class do something (the base ones do nothing)."""

    __slots__ = ("before", "between", "after", "close")

    def __init__(self, cls: type) -> None:
        self.before = _acts(cls, "on_before_handle")
        self.between = _acts(cls, "on_between_handle")
        self.after = _acts(cls, "on_after_handle")
        self.close = _acts(cls, "on_close")


def _acts(cls: type, hook: str) -> bool:
    function = getattr(cls, hook, None)
    return function is not None and not does_nothing(function)


class Relay:
    """What the two sides of the driver share: the read buffer, the hook lookups, reading,
    and finishing the exchanges at the head of the queue in their turn."""

    buffer_size: int

    def __init__(self) -> None:
        super().__init__()
        self._buffer: bytearray | None = None
        self._view: memoryview | None = None
        self._hooks: dict[type, _Hooks] = {}

    def _hooks_of(self, behavior: Any) -> _Hooks:
        cls = type(behavior)
        hooks = self._hooks.get(cls)
        if hooks is None:
            hooks = self._hooks[cls] = _Hooks(cls)
        return hooks

    def _buffers(self) -> tuple[bytearray, memoryview]:
        # One buffer per proxy serves every session and both directions. Its content is valid
        # until the next switch to another greenlet: the loops write with Endpoint.write, which
        # never waits, and push the unread rest back (Endpoint.unread) before anything that
        # may wait.
        if self._buffer is None:
            self._buffer = bytearray(self.buffer_size)
            self._view = memoryview(self._buffer)
        return self._buffer, self._view

    def _read(self, source: Any, limit: int = 0) -> tuple[Any, memoryview, int]:
        """One read: ``(buffer, its view, count)``; 0 at the end of the stream."""
        if source.has_pending:
            # Data pushed back (a stopped batch): framed where it is, without a copy.
            data = source.recv(limit or 1 << 62)
            return data, memoryview(data), len(data)
        buf, view = self._buffers()
        return buf, view, source.recv_into(buf, min(limit, len(buf)) if limit else 0)

    def _answered(self, flow: FramedState, target: Exchange) -> None:
        target.phase = READY
        flow.target = None

    def _drop_finished(self, flow: FramedState) -> None:
        """Take the exchanges at the head of the queue that are done and have nothing to
        write out of it (requests that get no answer): this never waits."""
        queue = flow.queue
        while queue:
            head = queue[0]
            if head.phase is not READY or head.reply is not None or head.after is not None:
                break
            if head.close:
                break
            queue.popleft()

    def _advance(self, flow: FramedState) -> None:
        """Finish the exchanges at the head of the queue that wait for nothing more: write
        their replies, run their ``on_after_handle`` hooks, close when they say so."""
        if flow.advancing:
            return
        queue = flow.queue
        session = flow.session
        client, backend = session.client, session.backend
        flow.advancing = True
        try:
            while queue and queue[0].phase is READY:
                exchange = queue[0]
                if exchange.reply:
                    client.sendall(exchange.reply)
                if exchange.after is not None:
                    hook, to_backend = exchange.after
                    if to_backend:
                        hook(self, client, backend, True)
                    else:
                        hook(self, backend, client, False)
                queue.popleft()
                if exchange.close:
                    session.close()
                    break
        finally:
            flow.advancing = False
            flow.notify()
