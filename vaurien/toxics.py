"""Toxics: Toxiproxy's faults, made of Vaurien's behaviors, and a proxy's list of them.

:data:`TOXIC_TYPES` says, once, which behavior each Toxiproxy toxic is, and how its attributes
(with Toxiproxy's names and units: milliseconds, KB/s, microseconds) become the behavior's
options. Any other behavior the proxy knows is a toxic type too, under its own name, with its
own options as attributes (``error``, ``hang``, ``corrupt`` ...). :func:`make_toxic` turns a
toxic's JSON body into a :class:`Toxic` value, with one precise :class:`ToxicError` per problem.

:class:`ProxyToxics` is a proxy's toxic list and the behavior that runs it. As in Toxiproxy,
the list is a chain applied to each connection and direction: each toxic joins the chain of a
connection with the chance its ``toxicity`` says, drawn from the proxy's random source (so
``--seed`` reproduces the draws), and acts on its ``stream``. A change of the list reaches the
open connections at their next event: they draw for the toxics they have not seen.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from vaurien.chain import Chain
from vaurien.errors import OptionError, VaurienError
from vaurien.mix import SITS_OUT

#: Toxiproxy's streams, and the ``direction`` of the behavior acting on each.
STREAMS = {"upstream": "to_backend", "downstream": "to_client"}
#: The most chains (one per set of toxics drawn) a proxy keeps made for its connections.
MAX_CHAINS = 256
#: The largest attribute value (Toxiproxy's are 64-bit integers).
_LARGEST = 2**63 - 1
_NAME = re.compile(r"[A-Za-z0-9_.-]{1,100}")


class ToxicError(VaurienError):
    """A toxic (or its body) refused: the HTTP ``status`` and Toxiproxy's message for it."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclasses.dataclass(frozen=True)
class Attribute:
    """One attribute of a Toxiproxy toxic: its ``name`` and ``unit`` there, the ``option`` of
    the behavior it sets, multiplied by ``scale``, and never below ``least`` (the behavior's
    smallest value)."""

    name: str
    option: str
    unit: str
    scale: float = 1
    least: float | None = None

    def convert(self, value: int) -> Any:
        """The option's value for the attribute's ``value``."""
        converted = value * self.scale if self.scale != 1 else value
        return converted if self.least is None else max(self.least, converted)


@dataclasses.dataclass(frozen=True)
class ToxicType:
    """A Toxiproxy toxic: the ``behavior`` that acts for it, its ``attributes`` (each 0 unless
    given, as in Toxiproxy), and ``fixed`` option values."""

    name: str
    behavior: str
    attributes: tuple[Attribute, ...] = ()
    fixed: Mapping[str, Any] = dataclasses.field(default_factory=dict)


#: Toxiproxy's toxics, by name: the mapping the docs' table is made from.
TOXIC_TYPES: dict[str, ToxicType] = {
    toxic.name: toxic
    for toxic in (
        ToxicType(
            "latency",
            "delay",
            (
                Attribute("latency", "sleep", "ms", 0.001),
                Attribute("jitter", "jitter", "ms", 0.001),
            ),
            {"before": True},
        ),
        ToxicType("bandwidth", "bandwidth", (Attribute("rate", "rate", "KB/s", 1000 / 1024),)),
        ToxicType("slow_close", "slow_close", (Attribute("delay", "delay", "ms", 0.001),)),
        ToxicType("timeout", "timeout", (Attribute("timeout", "timeout", "ms", 0.001),)),
        ToxicType("reset_peer", "reset", (Attribute("timeout", "timeout", "ms", 0.001),)),
        ToxicType(
            "slicer",
            "slicer",
            (
                Attribute("average_size", "average_size", "bytes", least=1),
                Attribute("size_variation", "size_variation", "bytes"),
                Attribute("delay", "delay", "µs", 1e-6),
            ),
        ),
        ToxicType("limit_data", "limit", (Attribute("bytes", "bytes", "bytes"),)),
        ToxicType("noop", "dummy"),
    )
}


@dataclasses.dataclass(frozen=True, eq=False)
class Toxic:
    """One toxic of a proxy: as the Toxiproxy API shows it, and the ``behavior`` instance that
    acts for it (made with the proxy's registry, its ``direction`` set from ``stream``).

    Compared by identity: a toxic changed is a new value, which connections draw for anew.
    """

    name: str
    type: str
    stream: str
    toxicity: float
    attributes: Mapping[str, Any]
    behavior: Any

    def to_json(self) -> dict[str, Any]:
        """The toxic as Toxiproxy's API shows it, its fields in Toxiproxy's order."""
        return {
            "attributes": dict(self.attributes),
            "name": self.name,
            "type": self.type,
            "stream": self.stream,
            "toxicity": self.toxicity,
        }


_CREATE_FIELDS = ("name", "type", "stream", "toxicity", "attributes")


def make_toxic(proxy: Any, body: Any, current: Toxic | None = None) -> Toxic:
    """The toxic a JSON ``body`` describes, for ``proxy`` (a :class:`~vaurien.proxy.Proxy`:
    its registry makes the behavior).

    Without ``current``, a new toxic: ``type`` is required, ``stream`` defaults to
    ``downstream``, ``toxicity`` to 1 and ``name`` to ``TYPE_STREAM``; attributes not given
    take their defaults. With ``current``, that toxic changed: ``attributes`` given replace
    its own one by one, and ``toxicity`` when given. ``null`` is the same as a field not
    given. Raises :class:`ToxicError`; nothing is made unless everything is right.
    """
    if not isinstance(body, Mapping):
        raise ToxicError(400, f"bad request body: a toxic is a JSON object, not {_kind(body)}")
    unknown = sorted(set(body) - set(_CREATE_FIELDS))
    if unknown:
        raise ToxicError(
            400,
            f"bad request body: unknown field {unknown[0]!r} (known: {', '.join(_CREATE_FIELDS)})",
        )
    fields = {key: value for key, value in body.items() if value is not None}
    if current is not None:
        for key in ("name", "type", "stream"):
            given = fields.get(key)
            if given is not None and given != getattr(current, key):
                raise ToxicError(
                    400,
                    f"bad request body: a toxic's {key} cannot change (it is "
                    f"{getattr(current, key)!r}): remove the toxic and add it anew",
                )
        type_name, stream, name = current.type, current.stream, current.name
        toxicity = _toxicity(fields.get("toxicity", current.toxicity))
        given = {**current.attributes, **_attributes(fields.get("attributes", {}))}
    else:
        type_name = fields.get("type")
        stream = fields.get("stream", "downstream")
        if not isinstance(stream, str) or stream.lower() not in STREAMS:
            raise ToxicError(400, "stream was invalid, can be either upstream or downstream")
        stream = stream.lower()
        name = fields.get("name") or f"{type_name}_{stream}"
        toxicity = _toxicity(fields.get("toxicity", 1.0))
        given = _attributes(fields.get("attributes", {}))
    registry = proxy.config.behaviors
    kind = TOXIC_TYPES.get(type_name) if isinstance(type_name, str) else None
    if kind is None and (
        not isinstance(type_name, str) or type_name not in _vaurien_types(registry)
    ):
        known = ", ".join([*TOXIC_TYPES, *_vaurien_types(registry)])
        raise ToxicError(400, f"invalid toxic type: {type_name!r} (known: {known})")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ToxicError(
            400,
            f"bad request body: {name!r} is not a toxic name: use letters, digits, '_', '.' "
            "and '-' (at most 100)",
        )
    if kind is not None:
        attributes, options = _toxiproxy_options(kind, given)
        behavior_name = kind.behavior
    else:
        if "direction" in given:
            raise ToxicError(400, "bad request body: attributes: direction is the stream's")
        attributes, options, behavior_name = given, dict(given), type_name
    options["direction"] = STREAMS[stream]
    try:
        behavior = registry.create(behavior_name, options, proxy=proxy)
    except OptionError as e:
        raise ToxicError(400, f"bad request body: attributes: {e}") from None
    except VaurienError as e:
        raise ToxicError(400, f"bad request body: {e}") from None
    behavior.sits_out = SITS_OUT[behavior.settings["direction"]]
    if kind is None:  # every option, as the behavior took it, but the one stream sets
        attributes = {key: v for key, v in behavior.settings.items() if key != "direction"}
    return Toxic(name, type_name, stream, toxicity, attributes, behavior)


def _vaurien_types(registry: Any) -> list[str]:
    """The behaviors that are toxic types under their own names: all but those Toxiproxy's
    toxics shadow."""
    return [name for name in registry.names() if name not in TOXIC_TYPES]


def _toxiproxy_options(kind: ToxicType, given: Mapping[str, Any]) -> tuple[dict, dict]:
    """The attributes shown (every one, 0 unless given) and the behavior's options."""
    names = [attribute.name for attribute in kind.attributes]
    unknown = sorted(set(given) - set(names))
    if unknown:
        raise ToxicError(
            400,
            f"bad request body: {kind.name} has no attribute {unknown[0]!r} "
            f"(known: {', '.join(names) or 'none'})",
        )
    attributes = {}
    options = dict(kind.fixed)
    for attribute in kind.attributes:
        value = given.get(attribute.name, 0)
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _LARGEST:
            raise ToxicError(
                400,
                f"bad request body: attributes: {attribute.name}: expected a whole number of "
                f"{attribute.unit} from 0, got {value!r}",
            )
        attributes[attribute.name] = value
        options[attribute.option] = attribute.convert(value)
    return attributes, options


def _attributes(value: Any) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise ToxicError(400, f"bad request body: attributes must be an object, not {_kind(value)}")
    return {key: item for key, item in value.items() if item is not None}


def _toxicity(value: Any) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or not 0 <= value <= 1
    ):
        raise ToxicError(
            400, f"bad request body: toxicity must be a number from 0 to 1, got {value!r}"
        )
    return float(value)


def _kind(value: Any) -> str:
    return {list: "an array", str: "a string", bool: "a boolean"}.get(
        type(value), type(value).__name__
    )


class ProxyToxics:
    """A proxy's toxics, in order, and the behavior that runs them.

    The proxy puts this object in force as its mix's only behavior while the list is not
    empty. On a connection's first event, and on its first event after a change of the list,
    each toxic not drawn for yet joins the connection's chain with the chance its
    ``toxicity`` says (``random`` is the proxy's source); the toxics that joined act as one
    :class:`~vaurien.chain.Chain`, each on its own stream. A protocol that follows requests and
    answers hands it the answer too (``both_ways``).
    """

    name = "toxics"
    sits_out: bool | None = None
    both_ways = True

    def __init__(self, random: Callable[[], float]) -> None:
        self.toxics: tuple[Toxic, ...] = ()
        self.version = 0
        self.duplex = True
        self._random = random
        self._chains: dict[tuple[Toxic, ...], Chain] = {}

    def __repr__(self) -> str:
        return f"<ProxyToxics {', '.join(toxic.name for toxic in self.toxics) or 'none'}>"

    @property
    def settings(self) -> dict[str, Any]:
        """The toxics as the Toxiproxy API shows them, by name (what ``GET /behavior/options``
        lists for ``toxics``)."""
        return {toxic.name: toxic.to_json() for toxic in self.toxics}

    def get(self, name: str) -> Toxic | None:
        """The toxic called ``name``, or None."""
        for toxic in self.toxics:
            if toxic.name == name:
                return toxic
        return None

    def replace(self, toxics: Sequence[Toxic]) -> None:
        """Put ``toxics`` in force: open connections take them at their next event."""
        self.toxics = tuple(toxics)
        self.duplex = all(getattr(t.behavior, "duplex", False) for t in self.toxics)
        self._chains = {}
        self.version += 1

    def chain(self, session: Any) -> Chain | None:
        """The chain of the toxics that joined ``session`` (None: none did)."""
        state = session.states.get(self)
        if state is None or state[0] != self.version:
            drawn = state[1] if state is not None else {}
            now = {toxic: drawn.get(toxic, None) for toxic in self.toxics}
            for toxic, joined in now.items():
                if joined is None:
                    probability = toxic.toxicity
                    now[toxic] = probability >= 1 or (
                        probability > 0 and self._random() < probability
                    )
            joined_toxics = tuple(toxic for toxic, joined in now.items() if joined)
            chain = self._chains.get(joined_toxics)
            if chain is None and joined_toxics:
                if len(self._chains) >= MAX_CHAINS:  # many toxics drawn many ways: start over
                    self._chains.clear()
                chain = self._chains[joined_toxics] = Chain(
                    [toxic.behavior for toxic in joined_toxics]
                )
            state = session.states[self] = (self.version, now, chain)
        return state[2]

    def on_before_handle(self, protocol: Any, source: Any, dest: Any, to_backend: bool) -> bool:
        """Run the connection's chain on the event."""
        chain = self.chain(source.session)
        return True if chain is None else chain.on_before_handle(protocol, source, dest, to_backend)

    def on_between_handle(self, protocol: Any, source: Any, dest: Any, to_backend: bool) -> bool:
        """Run the connection's chain's ``on_between_handle``."""
        chain = self.chain(source.session)
        return (
            True if chain is None else chain.on_between_handle(protocol, source, dest, to_backend)
        )

    def on_after_handle(self, protocol: Any, source: Any, dest: Any, to_backend: bool) -> bool:
        """Run the connection's chain's ``on_after_handle``."""
        chain = self.chain(source.session)
        return True if chain is None else chain.on_after_handle(protocol, source, dest, to_backend)
