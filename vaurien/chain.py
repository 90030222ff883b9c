"""Chains: several behaviors acting on the same event, in turn (``--behavior 30:delay+bandwidth``).

A :class:`Chain` is what a mix entry of several names picks, and what a Toxiproxy proxy's toxics
make of one connection. It is a behavior to the protocols: they call its hooks as they would
call one behavior's. Each member keeps its own options and its own ``direction``; on an event,
the members acting on that direction run in the order written.

Members are of two kinds, and a chain composes both:

* a *gate* lets the event through (its ``on_before_handle`` returns true): ``delay`` waits,
  ``error`` on a direction it does not fail, ``slow_close`` ... The data stays where it is and
  the next member gets it.
* a *mover* handles the data itself (``on_before_handle`` returns false): ``bandwidth``,
  ``slicer``, ``corrupt`` and ``limit`` read it with ``protocol.read`` and write it to
  ``dest``. Every member but the last gets a
  :class:`~vaurien.memory_endpoint.MemoryEndpoint` as its ``dest``, so what a mover writes
  becomes the next member's ``source``: the data goes member to member. A mover that writes
  nothing (``timeout``, ``hang``, ``reset``, an error answered
  by the protocol) ends the chain there: nothing is left to act on.

When no member moved the data, the chain lets the protocol handle the event as usual, and the
members' ``on_between_handle`` and ``on_after_handle`` run when the protocol calls the chain's.
When one did, the chain forwards what the last member let through, then runs the hooks of the
gates. Behaviors that reach the protocol's verbs (``error``, ``abort``, ``hang``) act in their
protocol-aware form only on data still in its endpoint: put them before the movers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from vaurien.contract import BehaviorLike, EndpointLike, ProtocolLike
from vaurien.memory_endpoint import MemoryEndpoint


class Chain:
    """The behaviors ``members`` acting on each event in turn (see the module documentation).

    The members' ``sits_out`` must be set (the mix sets it from their ``direction``): a chain
    sits out a direction only when all of its members do, and ``both_ways`` is true when some
    act on each direction (a protocol that follows requests and answers then hands the chain
    the answer too).
    """

    settings: dict[str, Any] = {}

    def __init__(self, members: Sequence[BehaviorLike]) -> None:
        self.members = tuple(members)
        self.name = "+".join(member.name for member in self.members)
        self.duplex = all(getattr(member, "duplex", False) for member in self.members)
        self._to_backend = tuple(m for m in self.members if m.sits_out is not True)
        self._to_client = tuple(m for m in self.members if m.sits_out is not False)
        self.both_ways = bool(self._to_backend and self._to_client)
        if not self._to_backend:
            self.sits_out: bool | None = True
        elif not self._to_client:
            self.sits_out = False
        else:
            self.sits_out = None

    def __repr__(self) -> str:
        return f"<Chain {self.name}>"

    def acting(self, to_backend: bool) -> tuple[BehaviorLike, ...]:
        """The members that act on the events going ``to_backend``, in order."""
        return self._to_backend if to_backend else self._to_client

    def on_before_handle(
        self, protocol: ProtocolLike, source: EndpointLike, dest: EndpointLike, to_backend: bool
    ) -> bool:
        """Run each acting member's ``on_before_handle``; true when none of them moved the data
        (the protocol then handles the event)."""
        members = self._to_backend if to_backend else self._to_client
        if not members:
            return True
        session = source.session
        last = len(members) - 1
        current: Any = source  # where the event's data is now
        passed = []
        for index, member in enumerate(members):
            out = dest if index == last else MemoryEndpoint(source)
            if member.on_before_handle(protocol, current, out, to_backend):
                passed.append(member)
                continue
            if current is not source:
                _take_all(member, protocol, current, out, to_backend)
            current = out
            if index < last and not out.holds and (session.closed or not source.eof):
                current = None  # dropped, or answered: nothing goes on
                break
        if current is source:
            return True
        if current is not None and current is not dest:
            data = current.take()  # what the last member let through
            if data:
                dest.sendall(data)
        for member in passed:
            member.on_between_handle(protocol, source, dest, to_backend)
        for member in passed:
            member.on_after_handle(protocol, source, dest, to_backend)
        return False

    def on_between_handle(
        self, protocol: ProtocolLike, source: EndpointLike, dest: EndpointLike, to_backend: bool
    ) -> bool:
        """Run each acting member's ``on_between_handle``."""
        for member in self._to_backend if to_backend else self._to_client:
            member.on_between_handle(protocol, source, dest, to_backend)
        return True

    def on_after_handle(
        self, protocol: ProtocolLike, source: EndpointLike, dest: EndpointLike, to_backend: bool
    ) -> bool:
        """Run each acting member's ``on_after_handle``."""
        for member in self._to_backend if to_backend else self._to_client:
            member.on_after_handle(protocol, source, dest, to_backend)
        return True

    def on_close(
        self, protocol: ProtocolLike, source: EndpointLike, dest: EndpointLike, to_backend: bool
    ) -> None:
        """Run each acting member's ``on_close``, in order."""
        for member in self._to_backend if to_backend else self._to_client:
            close_hook = getattr(member, "on_close", None)
            if close_hook is not None:
                close_hook(protocol, source, dest, to_backend)


def _take_all(
    member: BehaviorLike, protocol: Any, held: MemoryEndpoint, out: Any, to_backend: bool
) -> None:
    """Hand ``member`` the event again until it took everything ``held`` has: a mover reads
    at most a buffer (``bandwidth`` a second's worth) each time, and there is no next event
    for bytes already taken from the socket."""
    session = held.session
    while held.holds and not session.closed:
        left = held.holds
        if member.on_before_handle(protocol, held, out, to_backend):
            out.sendall(held.take())  # it lets the rest through as it is
            return
        if held.holds == left:
            return  # it leaves the rest: dropped
