"""The convenience base class of behaviors, and what every behavior shares."""

from __future__ import annotations

from typing import Any

from vaurien.contract import EndpointLike, ProtocolLike, does_nothing, no_op


class BaseBehavior:
    """A behavior that changes nothing; subclasses override the hooks they need.

    Every hook gets ``(protocol, source, dest, to_backend)``: the proxy's protocol, whose verbs
    a behavior may call (:class:`~vaurien.contract.ProtocolLike`: ``read``, ``send_error``,
    ``abort``), the side data is read from and the one it goes to
    (:class:`~vaurien.contract.EndpointLike`), and the direction (true when the data goes from
    the client to the backend). The hooks here do nothing and are marked so
    (:func:`vaurien.contract.does_nothing` tells), so a protocol may skip calling them.

    * ``on_before_handle`` runs before the protocol handles the event; returning false means
      the behavior handled the event itself (read, dropped or answered the data) and the
      protocol's own handling is skipped.
    * ``on_between_handle`` runs once the request has reached the backend, before its answer is
      read (for a plain stream: once the chunk has been forwarded).
    * ``on_after_handle`` runs when the protocol is done with the event.

    Every behavior has the ``direction`` option (added by the registry): the proxy hands the
    events of the other direction to ``dummy``, so the hooks only see the events they act on.

    One instance serves every session of a proxy. What must be counted per connection (bytes
    let through, a bandwidth budget) goes in :meth:`state`, never on the instance.

    Set ``duplex = False`` when a hook reads from ``dest``: the proxy then runs the events of a
    session one at a time, as Vaurien 1.x did, so that the other direction does not read the
    same bytes.
    """

    name: str = ""
    options: dict[str, tuple[Any, ...]] = {}
    duplex: bool = True
    #: Set by the mix from ``direction``: the ``to_backend`` value of the events this
    #: behavior sits out (``None``: it sits out none; see :data:`vaurien.mix.SITS_OUT`).
    sits_out: bool | None = None
    #: For the reference docs: what a client sees when this behavior is picked, in
    #: reStructuredText. ``{protocol.error_form}`` (or any ``{protocol.ATTRIBUTE}``) is filled in
    #: for each protocol. Vaurien's own behaviors must set it; the docs build checks.
    client_sees: str | None = None

    def __init__(self) -> None:
        self.settings: dict[str, Any] = {}
        self.proxy: Any = None

    def option(self, name: str) -> Any:
        """The value of option ``name`` for this proxy (converted once, when it was set)."""
        return self.settings[name]

    def new_state(self) -> Any:
        """A fresh state for one connection (or one direction of it); see :meth:`state`."""
        return None

    def state(self, owner: Any) -> Any:
        """This behavior's state for ``owner``, made by :meth:`new_state` on first use.

        ``owner`` is the session (``source.session``: one state per connection, shared by both
        directions) or an endpoint (``source``: one state per connection and direction). The
        state lives as long as its connection, in the owner's ``states`` dict keyed by this
        instance, so a new mix (new instances) starts from fresh states.
        """
        states = owner.states
        state = states.get(self)
        if state is None:
            state = states[self] = self.new_state()
        return state

    @no_op
    def on_before_handle(
        self, protocol: ProtocolLike, source: EndpointLike, dest: EndpointLike, to_backend: bool
    ) -> bool:
        """Called before the protocol handles the event; false skips the protocol's handling."""
        return True

    @no_op
    def on_between_handle(
        self, protocol: ProtocolLike, source: EndpointLike, dest: EndpointLike, to_backend: bool
    ) -> bool:
        """Called after the request went to the backend, before the answer is read."""
        return True

    @no_op
    def on_after_handle(
        self, protocol: ProtocolLike, source: EndpointLike, dest: EndpointLike, to_backend: bool
    ) -> bool:
        """Called after the protocol handled the event."""
        return True

    def acts_after(self) -> bool:
        """Whether :meth:`on_after_handle` does anything with this instance's settings: a
        protocol that would keep an exchange open for it asks. The base says whether the
        class has one of its own."""
        return not does_nothing(type(self).on_after_handle)

    @no_op
    def on_close(
        self, protocol: ProtocolLike, source: EndpointLike, dest: EndpointLike, to_backend: bool
    ) -> None:
        """Called when ``source`` has closed its side, before the close is passed on to
        ``dest``: for the behavior of the event that read the end of the stream on a plain
        stream, for the behavior of the last exchange on a protocol of exchanges."""
