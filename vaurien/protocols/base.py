"""The base class of protocols."""

from __future__ import annotations

import socket
from typing import Any

from vaurien.contract import BehaviorLike, EndpointLike, SessionLike
from vaurien.rules import Field

#: How much one read takes when a protocol has no ``buffer`` option.
DEFAULT_BUFFER = 65536


class BaseProtocol:
    """How the proxy handles one readable event of a session.

    A protocol provides ``name``, ``options`` and ``_handle(source, dest, to_backend)``, called
    each time data is ready on ``source`` (the client's connection when ``to_backend`` is true,
    the backend's otherwise). ``source`` and ``dest`` are :class:`~vaurien.endpoint.Endpoint`
    objects with the usual socket methods. ``_handle`` returns false to end the session; an end
    of stream read from ``source`` is noticed by the proxy, which half-closes ``dest``.

    Helpers: :meth:`read` reads what is available (``b''`` at end of stream; ``_get_data`` is
    its Vaurien 1.x name, kept) and ``option(name)`` gives an option's value.

    Set ``duplex = True`` when ``_handle`` never reads from ``dest``: both directions then run at
    once. The default, false, runs a session's events one at a time, which is what a protocol
    that reads the answer within the event (as Vaurien 1.x protocols did) needs.

    Protocols that follow requests and answers use more hooks: :meth:`new_session_state`
    (per-session state), ``picks_itself`` (the protocol picks a behavior per message it frames)
    and the verbs :meth:`send_error`, :meth:`abort` and :meth:`hang` that behaviors call.
    """

    name: str = ""
    options: dict[str, tuple[Any, ...]] = {}
    duplex: bool = False
    #: Where :meth:`send_error` acts: on the answer (false, a plain stream garbles what the
    #: backend sends) or on the request (true: the client is answered with an error instead).
    #: The error behaviors count a call only for events of that direction.
    errors_on_request: bool = False
    #: True for a protocol that picks a behavior itself for each message it frames (calling
    #: ``session.pick()``): the session then picks nothing and calls :meth:`handle` with
    #: ``behavior=None``.
    picks_itself: bool = False
    #: The ALPN names the protocol speaks over TLS (``("h2",)``), offered to the backend and
    #: chosen with the client when the proxy speaks TLS; empty: no ALPN.
    alpn: tuple[str, ...] = ()
    #: A method ``relay(source, dest, pick)`` for the events that may run in a watcher's
    #: callback (see :meth:`vaurien.protocols.tcp.TCP.relay`), or None: every event then runs
    #: in a greenlet, which may wait.
    relay: Any = None
    #: For the reference docs: what one event of this protocol is (reStructuredText).
    event_unit: str | None = None
    #: For the reference docs: what :meth:`send_error` does, as a client sees it, in one or two
    #: sentences. Vaurien's own protocols must set both; the docs build checks.
    error_form: str | None = None
    #: The request fields rules can match (see :mod:`vaurien.rules`), besides ``client``, which
    #: every protocol has. A name ending in ``.NAME`` declares a family (``header.NAME``). A
    #: protocol that declares fields says what each request holds: the framed driver asks
    #: ``peek``, a protocol that picks itself passes them to ``session.pick``.
    rule_fields: dict[str, Field] = {}
    #: The fields of :attr:`rule_fields` that name a request in the dashboard's fault feed, in
    #: this order (``("method", "path")``: "GET /api/x"); empty: requests go unnamed.
    request_name: tuple[str, ...] = ()

    def __init__(self) -> None:
        self.settings: dict[str, Any] = {}
        self.proxy: Any = None

    def option(self, name: str) -> Any:
        """The value of option ``name`` for this proxy."""
        return self.settings[name]

    @property
    def buffer_size(self) -> int:
        """How much one read takes: the ``buffer`` option when the protocol has one."""
        return self.settings.get("buffer", DEFAULT_BUFFER)

    # -- the event -------------------------------------------------------------------------

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # A protocol written for Vaurien 1.x customizes reading by overriding _get_data:
        # behaviors call read, which must reach that override.
        if "_get_data" in vars(cls) and "read" not in vars(cls):
            cls.read = _read_with_get_data  # type: ignore[method-assign]

    def handle(
        self,
        source: EndpointLike,
        dest: EndpointLike,
        to_backend: bool,
        behavior: BehaviorLike | None,
    ) -> bool:
        """Run one event: the behavior's hooks around the protocol's own handling.

        Returns false when the session must end. ``behavior`` is None for a protocol that
        ``picks_itself``: it is then handled as it is.
        """
        if behavior is None:
            return self._handle(source, dest, to_backend) is not False
        keep_going = True
        if behavior.on_before_handle(self, source, dest, to_backend):
            keep_going = self._handle(source, dest, to_backend)
            behavior.on_after_handle(self, source, dest, to_backend)
        if source.eof:
            close_hook = getattr(behavior, "on_close", None)  # optional for plugins of old
            if close_hook is not None:
                close_hook(self, source, dest, to_backend)
        return keep_going is not False

    def relays_next(self, source: EndpointLike, to_backend: bool) -> bool:
        """Whether the next events of the direction of ``source``, which a pump greenlet runs,
        may run in watcher callbacks again (:attr:`relay`); the pump then ends. Asked after each
        of the pump's events; it may wait for what the event left to finish. The base says
        no: once a pump runs a direction, it runs it to the end."""
        return False

    def _handle(self, source: EndpointLike, dest: EndpointLike, to_backend: bool) -> bool:
        """Forward what ``source`` has to ``dest``, as a plain byte stream."""
        data = self.read(source)
        if data:
            dest.sendall(data)
            self._between(source, dest, to_backend)
        return True

    def _between(self, source: EndpointLike, dest: EndpointLike, to_backend: bool) -> None:
        """Run the event's ``on_between_handle`` hook: the request has reached the backend."""
        behavior = source.behavior
        if behavior is not None:
            behavior.on_between_handle(self, source, dest, to_backend)

    # -- per-session hooks -----------------------------------------------------------------

    def new_session_state(self, session: SessionLike) -> Any:
        """Return the state this protocol keeps for one session.

        Called once per session, before either direction is read. The base keeps none.
        """
        return None

    def open_session(self, session: SessionLike) -> Any:
        """What the session keeps for this protocol (``session.state``): by default, the
        protocol's own :meth:`new_session_state`."""
        return self.new_session_state(session)

    # -- helpers ---------------------------------------------------------------------------

    def read(self, endpoint: EndpointLike, size: int | None = None) -> bytes:
        """What a behavior reads from ``endpoint`` for the event: the public way to read.

        Waits for data and returns what is available, up to ``size`` bytes (the ``buffer``
        option when the protocol has one); ``b''`` at end of stream. A protocol that frames
        messages returns one message's bytes instead.
        """
        return endpoint.read(size or self.buffer_size)

    def _get_data(self, sock: EndpointLike, size: int | None = None) -> bytes:
        """The Vaurien 1.x name of :meth:`read`, kept for the plugins written for it."""
        if type(self).read is _read_with_get_data:  # called up from a 1.x override
            return BaseProtocol.read(self, sock, size)
        return self.read(sock, size)

    def send_error(
        self, source: EndpointLike, dest: EndpointLike, to_backend: bool, inject: bool = False
    ) -> None:
        """Fail this event the way the protocol's servers fail.

        Called by the ``error`` and ``transient`` behaviors. A protocol with an error form
        (an HTTP 5xx, a Redis ``-ERR``) overrides this, sets ``errors_on_request`` and answers
        the client with it. A plain stream has none: data going to the backend passes, and the
        backend's answer is replaced by as many random bytes or, with ``inject``, has random
        bytes inserted in its middle.
        """
        if to_backend:
            self._handle(source, dest, to_backend)
            return
        data = self.read(source)
        if not data:
            return
        randbytes = self.proxy.random.randbytes  # the proxy's seeded source: --seed reproduces
        if inject:
            middle = len(data) // 2
            dest.sendall(data[:middle] + randbytes(max(1, min(len(data), 128))) + data[middle:])
        else:
            dest.sendall(randbytes(len(data)))

    def abort(self, source: EndpointLike, dest: EndpointLike, to_backend: bool) -> None:
        """Let this event's data reach the other side, then end the session before any answer.

        Called by the ``abort`` behavior. The base forwards what ``source`` has (or drops it on
        the way back to the client) and closes the session at once; a protocol that follows
        exchanges closes when the answer to this very request arrives, so the answers to
        earlier requests still reach the client.
        """
        if to_backend:
            self._handle(source, dest, to_backend)
        else:
            self.read(source)
        source.session.close()

    def hang(self, source: EndpointLike, dest: EndpointLike, to_backend: bool) -> None:
        """Leave this event unanswered: what ``source`` sends, now and after, is read and
        dropped.

        Called by the ``hang`` behavior. A protocol with independent exchanges (``http2``
        streams) leaves only this one unanswered.
        """
        while self.read(source):
            pass

    # -- sockets ---------------------------------------------------------------------------

    def setup_listener(self, sock: socket.socket) -> None:
        """Adjust the proxy's listening socket before it is bound."""

    def setup_socket(self, sock: socket.socket, role: str) -> None:
        """Adjust a new client (``role="client"``) or backend (``"backend"``) socket."""


def _read_with_get_data(
    self: BaseProtocol, endpoint: EndpointLike, size: int | None = None
) -> bytes:
    """:meth:`BaseProtocol.read` of a protocol that overrides the 1.x ``_get_data``."""
    return self._get_data(endpoint, size)
