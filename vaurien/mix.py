"""The behavior mix: which behavior handles what share of the events."""

from __future__ import annotations

import dataclasses
import math
import re
from bisect import bisect_right
from collections.abc import Callable, Sequence
from itertools import accumulate
from typing import Any

from vaurien.errors import SpecError

_NUMBER = re.compile(r"\d+(\.\d*)?|\.\d+")


@dataclasses.dataclass(frozen=True)
class BehaviorMix:
    """An immutable ``[(percent, name), ...]``; the percents add up to 100.

    Write it as ``PERCENT:NAME[,PERCENT:NAME...]``: ``20:delay,10:error``. A percent is a number
    from 0 to 100 (decimals allowed), the percents add up to at most 100 and what is left goes
    to ``dummy``. A name may appear once. ``NAME`` is a behavior's name or a dotted path
    (``pkg.mod.Class`` or ``pkg.mod:Class``); :meth:`resolve` turns paths into names.
    """

    entries: tuple[tuple[float, str], ...]

    @classmethod
    def parse(cls, spec: str) -> BehaviorMix:
        """Parse a spec; every problem is a :class:`SpecError` naming the faulty item."""
        if not isinstance(spec, str) or not spec.strip():
            raise SpecError("empty behavior spec: expected PERCENT:NAME[,PERCENT:NAME...]")
        entries: list[tuple[float, str]] = []
        seen: set[str] = set()
        for item in spec.split(","):
            item = item.strip()
            if not item:
                raise SpecError(f"empty item in behavior spec {spec!r}")
            percent_text, colon, name = item.partition(":")
            if not colon:
                raise SpecError(f"{item!r}: missing ':' (expected PERCENT:NAME)")
            percent_text, name = percent_text.strip(), name.strip()
            if not _NUMBER.fullmatch(percent_text):
                raise SpecError(f"{item!r}: percent must be a number from 0 to 100")
            percent = float(percent_text)
            if percent > 100:
                raise SpecError(f"{item!r}: percent {percent_text} is over 100")
            if not name:
                raise SpecError(f"{item!r}: missing behavior name after ':'")
            if name in seen:
                raise SpecError(f"{item!r}: behavior {name!r} appears twice")
            seen.add(name)
            entries.append((percent, name))
        total = math.fsum(percent for percent, _ in entries)
        if total > 100 + 1e-9:
            raise SpecError(f"percents add up to {total:g}, over 100, in {spec!r}")
        return cls(tuple(entries))._with_rest(100 - total)

    @classmethod
    def single(cls, name: str) -> BehaviorMix:
        """All events to one behavior."""
        return cls(((100.0, name),))

    def _with_rest(self, rest: float) -> BehaviorMix:
        if rest <= 1e-9:
            return self
        entries = dict((name, percent) for percent, name in self.entries)
        entries["dummy"] = entries.get("dummy", 0.0) + rest
        return BehaviorMix(tuple((percent, name) for name, percent in entries.items()))

    def resolve(self, resolve_name: Callable[[str], str]) -> BehaviorMix:
        """The same mix with each name passed through ``resolve_name`` (a registry's resolve)."""
        merged: dict[str, float] = {}
        for percent, name in self.entries:
            resolved = resolve_name(name)
            merged[resolved] = merged.get(resolved, 0.0) + percent
        return BehaviorMix(tuple((percent, name) for name, percent in merged.items()))

    @property
    def names(self) -> list[str]:
        """The behavior names in the mix, in order."""
        return [name for _, name in self.entries]

    def __str__(self) -> str:
        """The spec back: ``delay`` alone when it has every event, else ``20:delay,80:dummy``."""
        live = [(percent, name) for percent, name in self.entries if percent > 0]
        if len(live) == 1:
            return live[0][1]
        return ",".join(f"{percent:g}:{name}" for percent, name in live)


class Picker:
    """Picks a behavior instance for an event: a bisect over cumulative percents."""

    __slots__ = ("_bounds", "_choices", "_random", "_last")

    def __init__(self, mix: BehaviorMix, instances: dict[str, Any], random: Callable[[], float]):
        live = [(percent, name) for percent, name in mix.entries if percent > 0]
        self._bounds: Sequence[float] = list(accumulate(percent for percent, _ in live))
        self._choices = [instances[name] for _, name in live]
        self._random = random
        self._last = len(self._choices) - 1

    def __call__(self) -> Any:
        if not self._last:
            return self._choices[0]
        index = bisect_right(self._bounds, self._random() * self._bounds[-1])
        return self._choices[min(index, self._last)]
