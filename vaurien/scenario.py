"""Scenarios: the behavior mix changing over time, step by step.

A scenario is a sequence of steps separated by ``;``, each a length and a behavior spec::

    30s 100:dummy; 10s 50:error; 100req 100:delay; repeat

A length is a time (``500ms``, ``30s``, ``2m``), a number of picks (``100req``: the requests, or
events, whose behavior the step's mix picks), of new connections (``5conn``) or of bytes relayed
both ways (``512KiB``, ``10MiB``). During its step, the step's mix takes the place of the proxy's
``behavior`` (rules still come first). ``repeat``, last, loops back to the first step; without it
the last step stays in force once it is over, and may then go without a length.

:class:`Scenario` is the parsed value (pure, one :class:`SpecError` naming the faulty step per
problem). :class:`Position` says where a running scenario is; :func:`begin` and :func:`settle`
move it on from readings of the proxy's counters, so the step changes between two picks, never
within one.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable

from vaurien.errors import SpecError
from vaurien.mix import BehaviorMix
from vaurien.rules import spec_or_name

#: What a step's length counts.
TIME, PICKS, CONNECTIONS, BYTES = "time", "picks", "connections", "bytes"

#: Length units: the measure each counts, how many of that measure one unit is, and whether a
#: length in it may have decimals.
UNITS: dict[str, tuple[str, float, bool]] = {
    "ms": (TIME, 0.001, True),
    "s": (TIME, 1.0, True),
    "m": (TIME, 60.0, True),
    "req": (PICKS, 1, False),
    "conn": (CONNECTIONS, 1, False),
    "KiB": (BYTES, 1024, True),
    "MiB": (BYTES, 1024 * 1024, True),
}
#: How each measure's amounts are shown (``GET /scenario``).
SHOWN_UNITS = {TIME: "s", PICKS: "req", CONNECTIONS: "conn", BYTES: "bytes"}

_LENGTH = re.compile(r"(\d+(?:\.\d*)?|\.\d+)([A-Za-z]+)")
_UNITS_TEXT = ", ".join(list(UNITS)[:-1]) + f" or {list(UNITS)[-1]}"


@dataclasses.dataclass(frozen=True)
class Step:
    """One step: how long it lasts (``length`` of its ``measure``; both None for a last step
    that lasts for good), its behavior mix, and its text as written."""

    length: float | None
    measure: str | None
    behavior: BehaviorMix
    text: str


@dataclasses.dataclass(frozen=True)
class Scenario:
    """An immutable sequence of steps, and whether it loops (``repeat``)."""

    steps: tuple[Step, ...]
    repeat: bool = False

    @classmethod
    def parse(cls, text: str) -> Scenario:
        """Parse ``LENGTH SPEC; LENGTH SPEC; ...[; repeat]``; each problem is a
        :class:`SpecError` naming the step (``scenario step 2 '10x 50:error': ...``)."""
        if not isinstance(text, str) or not text.strip():
            raise SpecError("empty scenario: expected LENGTH SPEC; LENGTH SPEC; ...")
        items = [item.strip() for item in text.split(";")]
        if items[-1] == "" and len(items) > 1:
            items.pop()  # a trailing ';'
        repeat = items[-1].lower() == "repeat"
        if repeat:
            items.pop()
            if not items:
                raise SpecError("scenario: 'repeat' needs steps before it")
        steps = []
        for number, item in enumerate(items, 1):
            label = f"scenario step {number} {item!r}"
            if item.lower() == "repeat":
                raise SpecError(f"{label}: 'repeat' comes last, after every step")
            steps.append(_step(item, label, last=number == len(items) and not repeat))
        return cls(tuple(steps), repeat)

    def __str__(self) -> str:
        return "; ".join([step.text for step in self.steps] + (["repeat"] if self.repeat else []))


def _step(item: str, label: str, last: bool) -> Step:
    if not item:
        raise SpecError(f"{label}: empty step")
    first, _, rest = item.partition(" ")
    rest = rest.strip()
    spec_only = ":" in first or "," in first or not (rest or first[:1].isdigit())
    if spec_only:
        if not last:
            raise SpecError(
                f"{label}: missing its length ({_UNITS_TEXT}); only the last step of a "
                f"scenario without repeat may go without one"
            )
        length, measure, spec = None, None, item
    else:
        length, measure = _length(first, label)
        spec = rest
        if not spec:
            raise SpecError(f"{label}: missing the behavior spec after {first!r}")
    try:
        behavior = spec_or_name(spec.replace(" ", ""))
    except SpecError as e:
        raise SpecError(f"{label}: {e}") from None
    return Step(length, measure, behavior, " ".join(item.split()))


def _length(text: str, label: str) -> tuple[float, str]:
    found = _LENGTH.fullmatch(text)
    if found is None:
        raise SpecError(f"{label}: {text!r} is not a length such as 30s, 100req or 10MiB")
    number, unit = found.groups()
    if unit not in UNITS:
        raise SpecError(f"{label}: unknown unit {unit!r} in {text!r} (expected {_UNITS_TEXT})")
    measure, size, decimals = UNITS[unit]
    if not decimals and "." in number:
        raise SpecError(f"{label}: {text!r}: a count of {unit} is a whole number")
    length = float(number) * size
    if measure in (PICKS, CONNECTIONS, BYTES):
        length = float(round(length))
    if length <= 0:
        raise SpecError(f"{label}: {text!r}: a step lasts more than nothing")
    return length, measure


@dataclasses.dataclass(frozen=True)
class Position:
    """Where a running scenario is: step ``index`` (from 0) of pass ``loop`` (from 1), begun at
    ``start`` and over once the step's measure is past ``end`` (``inf``: never). ``done``: the
    scenario ran through without repeat and its last step stays in force."""

    index: int
    loop: int
    start: float
    end: float
    done: bool = False


#: Reads a measure's counter now: loop time in seconds, picks, connections or bytes so far.
Reading = Callable[[str], float]


def begin(scenario: Scenario, read: Reading) -> Position:
    """The position of a scenario that starts now."""
    return _enter(scenario, 0, 1, read, None)


def _enter(scenario: Scenario, index: int, loop: int, read: Reading, at: float | None) -> Position:
    step = scenario.steps[index]
    if step.measure is None:
        return Position(index, loop, 0.0, math.inf)
    start = read(step.measure) if at is None else at
    return Position(index, loop, start, start + step.length)


def over(scenario: Scenario, position: Position, read: Reading) -> bool:
    """Whether the step at ``position`` is over: its measure went past its end.

    A pick or a connection is counted before it is served, so the one that goes past the end
    is the first of the next step.
    """
    measure = scenario.steps[position.index].measure
    return measure is not None and not position.done and read(measure) > position.end


def settle(scenario: Scenario, position: Position, read: Reading) -> Position:
    """The position now: ``position`` while its step lasts, else the first step after it that
    is not over yet. A step that counts what the one before it counted begins where that one
    ended (a time step at the previous one's deadline), so steps do not drift; another begins
    at the reading now."""
    while over(scenario, position, read):
        step = scenario.steps[position.index]
        index, loop = position.index + 1, position.loop
        if index == len(scenario.steps):
            if not scenario.repeat:
                return dataclasses.replace(position, end=math.inf, done=True)
            index, loop = 0, loop + 1
            cycle = _cycle(scenario, step.measure)
            if cycle:  # skip the whole passes that went by (a long idle time)
                passes = int((read(step.measure) - position.end) // cycle)
                if passes > 0:
                    loop += passes
                    position = dataclasses.replace(position, end=position.end + passes * cycle)
        following = scenario.steps[index].measure
        at = position.end if following == step.measure else None
        position = _enter(scenario, index, loop, read, at)
    return position


def _cycle(scenario: Scenario, measure: str | None) -> float:
    """The length of one pass when every step counts ``measure``, else 0."""
    if all(step.measure == measure for step in scenario.steps):
        return sum(step.length or 0.0 for step in scenario.steps)
    return 0.0


def left(scenario: Scenario, position: Position, read: Reading) -> float | None:
    """What is left of the step at ``position``, in its measure; None when it lasts for good."""
    measure = scenario.steps[position.index].measure
    if measure is None or position.done:
        return None
    return max(0.0, position.end - read(measure))
