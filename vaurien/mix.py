"""The behavior mix: which behaviors handle what share of the events.

Two values, both immutable:

* :class:`BehaviorMix` is the spec as the user wrote it, parsed: ``20:delay,10:error``. Parsing
  is pure; :func:`read_spec` is the one way from a spec to a mix of registered names.
* :class:`Mix` is a spec made real for one proxy: an instance of each behavior, the ``dummy``
  that stands in for a behavior on the events it sits out, and the weighted pick on the proxy's
  own random source. A proxy puts a new mix in force by swapping one reference
  (``proxy.mix``), so an event sees one mix or the next, never a blend.
"""

from __future__ import annotations

import dataclasses
import math
import re
from bisect import bisect_right
from collections.abc import Callable, Mapping
from itertools import accumulate
from typing import Any

from vaurien.chain import Chain
from vaurien.contract import does_nothing
from vaurien.errors import SpecError
from vaurien.registry import Registry

_NUMBER = re.compile(r"\d+(\.\d*)?|\.\d+")

#: ``direction`` value -> the ``to_backend`` value of the events a behavior sits out
#: (``None``: it sits out none).
SITS_OUT: dict[str, bool | None] = {
    "both": None,
    "to_backend": False,
    "to_client": True,
    "upstream": False,
    "downstream": True,
}

#: The option every behavior has (the behavior registry adds it): which traffic it acts on.
DIRECTION_OPTION = {
    "direction": (
        "Traffic the behavior acts on: both, to_backend (client to backend, alias upstream) "
        "or to_client (backend to client, alias downstream); it passes the rest untouched",
        str,
        "both",
        tuple(SITS_OUT),
    )
}

#: A behavior's hooks: a behavior whose hooks all do nothing changes nothing.
_HOOKS = ("on_before_handle", "on_between_handle", "on_after_handle", "on_close")

#: One entry of a mix: its percent, and the names of the behaviors it chains (often one).
Entry = tuple[float, tuple[str, ...]]


@dataclasses.dataclass(frozen=True)
class BehaviorMix:
    """An immutable ``[(percent, names), ...]``; the percents add up to 100.

    Write it as ``PERCENT:NAME[,PERCENT:NAME...]``: ``20:delay,10:error``. A percent is a number
    from 0 to 100 (decimals allowed), the percents add up to at most 100 and what is left goes
    to ``dummy``. An entry may appear once. ``NAME`` is a behavior's name or a dotted path
    (``pkg.mod.Class`` or ``pkg.mod:Class``); :func:`read_spec` turns paths into names.

    An entry may chain behaviors, ``30:delay+bandwidth``: on the events it gets, each behavior
    acts in turn, in the order written (see :mod:`vaurien.chain`).
    """

    entries: tuple[Entry, ...]

    @classmethod
    def parse(cls, spec: str) -> BehaviorMix:
        """Parse a spec; every problem is a :class:`SpecError` naming the faulty item."""
        if not isinstance(spec, str) or not spec.strip():
            raise SpecError("empty behavior spec: expected PERCENT:NAME[,PERCENT:NAME...]")
        entries: list[Entry] = []
        for item in spec.split(","):
            item = item.strip()
            if not item:
                raise SpecError(f"empty item in behavior spec {spec!r}")
            percent_text, colon, chain = item.partition(":")
            if not colon:
                raise SpecError(f"{item!r}: missing ':' (expected PERCENT:NAME)")
            percent_text = percent_text.strip()
            if not _NUMBER.fullmatch(percent_text):
                raise SpecError(f"{item!r}: percent must be a number from 0 to 100")
            percent = float(percent_text)
            if percent > 100:
                raise SpecError(f"{item!r}: percent {percent_text} is over 100")
            names = tuple(name.strip() for name in chain.split("+"))
            if not all(names):
                raise SpecError(f"{item!r}: missing behavior name after ':' or around '+'")
            if len(set(names)) < len(names):
                raise SpecError(f"{item!r}: a behavior appears twice in one chain")
            if any(names == other for _, other in entries):
                raise SpecError(f"{item!r}: behavior {'+'.join(names)!r} appears twice")
            entries.append((percent, names))
        total = math.fsum(percent for percent, _ in entries)
        if total > 100 + 1e-9:
            raise SpecError(f"percents add up to {total:g}, over 100, in {spec!r}")
        return cls(tuple(entries))._with_rest(100 - total)

    @classmethod
    def single(cls, name: str) -> BehaviorMix:
        """All events to one behavior."""
        return cls(((100.0, (name,)),))

    def _with_rest(self, rest: float) -> BehaviorMix:
        if rest <= 1e-9:
            return self
        return BehaviorMix(_merged([*self.entries, (rest, ("dummy",))]))

    def resolve(self, resolve_name: Callable[[str], str]) -> BehaviorMix:
        """The same mix with each name passed through ``resolve_name`` (a registry's resolve).

        Entries that become the same are merged.
        """
        return BehaviorMix(
            _merged(
                (percent, tuple(resolve_name(name) for name in names))
                for percent, names in self.entries
            )
        )

    @property
    def names(self) -> list[str]:
        """Every behavior name in the mix, once, in order."""
        return list(dict.fromkeys(name for _, names in self.entries for name in names))

    def __str__(self) -> str:
        """The spec back: ``delay`` alone when it has every event, else ``20:delay,80:dummy``."""
        live = [(percent, "+".join(names)) for percent, names in self.entries if percent > 0]
        if len(live) == 1:
            return live[0][1]
        return ",".join(f"{percent:g}:{chain}" for percent, chain in live)


def _merged(entries: Any) -> tuple[Entry, ...]:
    """Entries with the same names summed into the first one's place."""
    merged: dict[tuple[str, ...], float] = {}
    for percent, names in entries:
        merged[names] = merged.get(names, 0.0) + percent
    return tuple((percent, names) for names, percent in merged.items())


def read_spec(spec: str | BehaviorMix, behaviors: Registry, *, imports: bool = True) -> BehaviorMix:
    """The one way from a spec to a mix of registered names: parse it (if it is text), then
    resolve each name against ``behaviors``.

    With ``imports`` (the command line, the config file), a dotted path is imported and its
    class registered; without (the control API), only registered names are accepted. Errors
    are :class:`~vaurien.errors.VaurienError`, one line each.
    """
    mix = BehaviorMix.parse(spec) if isinstance(spec, str) else spec
    if imports:
        return mix.resolve(behaviors.resolve)
    for name in mix.names:
        behaviors.get(name)  # raises "unknown behavior ... (known: ...)"
    return mix


@dataclasses.dataclass(frozen=True, eq=False)
class Mix:
    """The mix in force on one proxy: a :class:`BehaviorMix` made real.

    ``behaviors`` holds an instance of each behavior the spec names, made with the proxy's
    option values; ``dummy`` stands in for a behavior on the events it sits out (its
    ``direction`` is the other one); ``exclusive`` is true when a session's events must run one
    at a time (the protocol or a behavior reads the other side within its event). The pick draws
    from the proxy's random source, so ``--seed`` reproduces it. Build one with :meth:`create`.
    """

    spec: BehaviorMix
    behaviors: Mapping[str, Any]
    dummy: Any
    exclusive: bool
    _bounds: list[float] = dataclasses.field(repr=False)
    _choices: list[Any] = dataclasses.field(repr=False)
    _random: Callable[[], float] = dataclasses.field(repr=False)
    #: Whether every hook of the dummy does nothing: the events it gets may then be relayed
    #: without calling them (a session does so from its watchers' callbacks).
    quiet_dummy: bool = dataclasses.field(init=False, repr=False)
    #: Whether every pick is the dummy (no chaos at all).
    only_dummy: bool = dataclasses.field(init=False, repr=False)

    def __post_init__(self) -> None:
        quiet = all(does_nothing(getattr(self.dummy, hook, None)) for hook in _HOOKS)
        object.__setattr__(self, "quiet_dummy", quiet)
        only_dummy = all(choice is self.dummy for choice in self._choices)
        object.__setattr__(self, "only_dummy", only_dummy)

    @classmethod
    def create(
        cls,
        spec: BehaviorMix,
        behaviors: Registry,
        options: Mapping[str, Mapping[str, Any]],
        *,
        duplex: bool,
        random: Callable[[], float],
        proxy: Any = None,
    ) -> Mix:
        """Create the behaviors of ``spec`` (its names registered in ``behaviors``, as
        :func:`read_spec` returns them) with ``options[name]``.

        ``duplex`` is the protocol's: whether its events may run both ways at once. ``random``
        returns a float in [0, 1) (the proxy's ``random.random``). An entry of several names
        is picked as one :class:`~vaurien.chain.Chain` of their instances. Raises
        :class:`~vaurien.errors.VaurienError` for an option value or a plugin that cannot be
        created.
        """
        instances = {
            name: behaviors.create(name, options.get(name, {}), proxy=proxy) for name in spec.names
        }
        dummy = instances.get("dummy") or behaviors.create("dummy", proxy=proxy)
        for instance in (*instances.values(), dummy):
            # Read by the framed protocols, which substitute the dummy themselves.
            instance.sits_out = SITS_OUT[instance.settings["direction"]]
        live = [(percent, names) for percent, names in spec.entries if percent > 0]
        return cls(
            spec,
            instances,
            dummy,
            exclusive=not (duplex and all(getattr(b, "duplex", False) for b in instances.values())),
            _bounds=list(accumulate(percent for percent, _ in live)),
            _choices=[
                instances[names[0]] if len(names) == 1 else Chain([instances[n] for n in names])
                for _, names in live
            ],
            _random=random,
        )

    @classmethod
    def of(
        cls,
        spec: BehaviorMix,
        behavior: Any,
        dummy: Any,
        *,
        duplex: bool,
        random: Callable[[], float],
    ) -> Mix:
        """A mix in which ``behavior``, already made (a proxy's toxics), gets every event;
        ``spec`` is how it shows."""
        return cls(
            spec,
            {behavior.name: behavior},
            dummy,
            exclusive=not (duplex and getattr(behavior, "duplex", False)),
            _bounds=[100.0],
            _choices=[behavior],
            _random=random,
        )

    def pick(self) -> Any:
        """A behavior drawn by weight: a bisect over the cumulative percents."""
        choices = self._choices
        if len(choices) == 1:
            return choices[0]
        index = bisect_right(self._bounds, self._random() * self._bounds[-1])
        return choices[min(index, len(choices) - 1)]

    def for_event(self, to_backend: bool, picked: Any = None) -> Any:
        """The behavior that acts on an event going ``to_backend`` (true: from the client to the
        backend): ``picked`` (a new :meth:`pick` when not given), or :attr:`dummy` when the
        picked behavior's ``direction`` is the other one."""
        if picked is None:
            picked = self.pick()
        return self.dummy if picked.sits_out is to_backend else picked
