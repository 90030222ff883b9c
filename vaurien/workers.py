"""Greenlets kept for work that comes and goes: a :class:`WorkerPool`.

A session's direction runs in a greenlet only while an event may wait (see
:mod:`vaurien.session`), so under a mix with some chaos greenlets start and end all the time.
A new greenlet is not free: besides the object, Python gives it a fresh stack for its frames,
mapped from the system and unmapped when it ends. A pool keeps a few finished greenlets parked
and hands them the next work instead.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gevent
from gevent.hub import Waiter, get_hub


class WorkerPool:
    """Runs calls in greenlets, reusing up to ``keep`` parked ones. Each proxy has its own."""

    def __init__(self, keep: int = 32) -> None:
        self._keep = keep
        self._parked: list[Waiter] = []
        self._loop = get_hub().loop

    def spawn(self, function: Callable[..., Any], *args: Any) -> None:
        """Run ``function(*args)`` in a greenlet (a parked one when there is one), from the
        hub's next turn, as ``gevent.spawn`` would. ``function`` handles its own errors."""
        if self._parked:
            self._loop.run_callback(self._parked.pop().switch, (function, args))
        else:
            # The work goes in a list emptied at once: a greenlet keeps its arguments.
            gevent.spawn(self._work, [(function, args)])

    def _work(self, first: list) -> None:
        function, args = first.pop()
        while True:
            try:
                function(*args)
            except gevent.GreenletExit:
                pass  # killed during its work (a session closed): the greenlet goes on
            function = args = None  # parked, it keeps nothing of its last work alive
            work = self._park()
            if work is None:
                return
            function, args = work
            work = None

    def _park(self) -> tuple | None:
        """Wait for the next work; None when this greenlet ends instead: the pool is full or
        closed, or a kill meant for the work just finished found it parked."""
        if len(self._parked) >= self._keep:
            return None
        waiter = Waiter()
        self._parked.append(waiter)
        try:
            return waiter.get()
        except gevent.GreenletExit:
            if waiter in self._parked:
                self._parked.remove(waiter)
                return None
            return waiter.get()  # work was handed over meanwhile: its switch is on its way

    def close(self) -> None:
        """End the parked greenlets (their proxy stops); work given later still runs."""
        parked, self._parked = self._parked, []
        for waiter in parked:
            self._loop.run_callback(waiter.switch, None)
