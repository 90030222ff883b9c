"""The plugin contract: what a behavior or a protocol may touch, as ``typing.Protocol`` types.

A behavior's hooks get ``(protocol, source, dest, to_backend)``: ``protocol`` offers the verbs of
:class:`ProtocolLike`, ``source`` and ``dest`` are :class:`EndpointLike`, and
``source.session`` is a :class:`SessionLike`. Those are the names to write in type hints; the
classes behind them (:class:`vaurien.protocols.base.BaseProtocol`,
:class:`vaurien.endpoint.Endpoint`, :class:`vaurien.session.Session`) may grow, the contract
only with care.

:func:`no_op` marks the hooks of :class:`~vaurien.behaviors.base.BaseBehavior` that do nothing,
and :func:`does_nothing` tells whether a behavior kept one of them: a protocol may then skip the
call (and what it would cost to prepare it).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol, TypeVar

#: The attribute that marks a no-op hook (the framed driver reads it too).
_NO_OP = "does_nothing"
F = TypeVar("F", bound=Callable[..., Any])


def no_op(hook: F) -> F:
    """Mark ``hook`` as a default that does nothing, so that :func:`does_nothing` knows it."""
    setattr(hook, _NO_OP, True)
    return hook


def does_nothing(hook: Callable[..., Any] | None) -> bool:
    """Whether ``hook`` (a behavior's bound hook, or a class's function) is a default marked
    with :func:`no_op`, which a caller may skip; a missing hook (``None``) does nothing too."""
    return hook is None or getattr(hook, _NO_OP, False)


class SessionLike(Protocol):
    """One client connection and its backend connection (:class:`vaurien.session.Session`)."""

    #: The client's and the backend's side.
    client: EndpointLike
    backend: EndpointLike
    #: True once the session is ending.
    closed: bool
    #: Behavior state for this connection (see ``BaseBehavior.state``).
    states: dict[Any, Any]
    #: What the protocol keeps for this session (``BaseProtocol.new_session_state``).
    state: Any

    def close(self) -> None:
        """End the session: both connections are closed cleanly."""

    def reset(self) -> None:
        """End the session with a TCP RST on both connections."""

    def pick(
        self, to_backend: bool | None = None, fields: Mapping[str, str] | None = None
    ) -> BehaviorLike:
        """The behavior for the next event (going ``to_backend``, when given), counted in the
        stats; ``fields`` is what the request holds, for the rules in force."""

    def wants_fields(self) -> bool:
        """Whether a rule in force decides on what a request holds: a protocol that picks for
        its requests then passes their fields to :meth:`pick`."""


class EndpointLike(Protocol):
    """One side of a session (:class:`vaurien.endpoint.Endpoint`): a socket's methods, plus
    what the proxy knows of that side."""

    #: ``"client"`` or ``"backend"``.
    role: str
    session: SessionLike
    #: True once the peer closed its side (a read returned end of stream).
    eof: bool
    bytes_received: int
    #: The size of the last read.
    last_read: int
    #: The behavior picked for the event being handled on this side (None: none was picked).
    behavior: BehaviorLike | None
    #: Behavior state for this connection and direction.
    states: dict[Any, Any]

    @property
    def closed(self) -> bool:
        """True once this side was closed by a plugin or by the session."""

    @property
    def has_pending(self) -> bool:
        """Whether bytes pushed back with :meth:`unread` wait to be read again."""

    def recv(self, size: int = 65536) -> bytes:
        """Read at most ``size`` bytes, waiting for data; ``b""`` at end of stream."""

    def recv_into(self, buffer: Any, nbytes: int = 0) -> int:
        """Read into ``buffer``, waiting for data; 0 at end of stream."""

    def read(self, size: int = 65536) -> bytes:
        """Wait for data, then return everything already there, up to ``size`` bytes."""

    def unread(self, data: bytes) -> None:
        """Put ``data`` back in front of what the next read returns."""

    def send(self, data: Any) -> int:
        """Send what the socket takes now; return the count."""

    def sendall(self, data: Any) -> None:
        """Send all of ``data``."""

    def shutdown(self, how: int = ...) -> None:
        """Shut down one or both directions of the socket."""

    def close(self) -> None:
        """Close this side; the whole session ends with it."""

    def reset(self) -> None:
        """Tear this side down with a TCP RST; the whole session ends with it."""

    def fileno(self) -> int:
        """The socket's file descriptor."""

    def getpeername(self) -> Any:
        """The peer's address."""

    def getsockname(self) -> Any:
        """This socket's own address."""

    def setsockopt(self, *args: Any) -> None:
        """Set a socket option."""

    def getsockopt(self, *args: Any) -> Any:
        """Read a socket option."""


class ProtocolLike(Protocol):
    """The verbs of a protocol that a behavior may call
    (:class:`vaurien.protocols.base.BaseProtocol`)."""

    name: str
    settings: dict[str, Any]
    #: Whether :meth:`send_error` acts on requests (true) or on the backend's answers.
    errors_on_request: bool

    @property
    def buffer_size(self) -> int:
        """How much one read takes."""

    def option(self, name: str) -> Any:
        """The value of option ``name`` for this proxy."""

    def read(self, endpoint: EndpointLike, size: int | None = None) -> bytes:
        """What a behavior reads from ``endpoint`` for this event (``b""`` at end of stream)."""

    def send_error(
        self, source: EndpointLike, dest: EndpointLike, to_backend: bool, inject: bool = False
    ) -> None:
        """Fail this event the way the protocol's servers fail."""

    def abort(self, source: EndpointLike, dest: EndpointLike, to_backend: bool) -> None:
        """Let this event's data through, then end the session before any answer."""

    def hang(self, source: EndpointLike, dest: EndpointLike, to_backend: bool) -> None:
        """Leave this event unanswered: what ``source`` sends is read and dropped."""


class BehaviorLike(Protocol):
    """A behavior as the proxy and the protocols see it
    (:class:`vaurien.behaviors.base.BaseBehavior`)."""

    name: str
    settings: dict[str, Any]
    #: The ``to_backend`` value of the events it sits out (None: none), set by the mix.
    sits_out: bool | None

    def on_before_handle(
        self, protocol: ProtocolLike, source: EndpointLike, dest: EndpointLike, to_backend: bool
    ) -> bool:
        """Before the protocol handles the event; false: the behavior handled it."""

    def on_between_handle(
        self, protocol: ProtocolLike, source: EndpointLike, dest: EndpointLike, to_backend: bool
    ) -> bool:
        """Once the request reached the backend, before its answer is read."""

    def on_after_handle(
        self, protocol: ProtocolLike, source: EndpointLike, dest: EndpointLike, to_backend: bool
    ) -> bool:
        """Once the protocol is done with the event."""

    def on_close(
        self, protocol: ProtocolLike, source: EndpointLike, dest: EndpointLike, to_backend: bool
    ) -> None:
        """Called when ``source`` has closed, before the close is passed on."""
