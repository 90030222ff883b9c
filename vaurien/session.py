"""One client connection and its backend connection: a :class:`Session`.

Each direction runs one event each time its side is readable: a behavior is picked from the
proxy's mix (:meth:`Session.pick`) and the event handed to the protocol. While the protocol
relays plainly and the behavior picked does nothing, the event runs in the watcher's callback
(a :class:`Relay`), without a greenlet; an event that may wait gets the direction a pump
greenlet, which runs it until the protocol says the callbacks may take over again. An end of
stream on one side becomes a half-close on the other; the session ends when both directions are
done, on a reset, when a plugin closes it, or after ``timeout`` idle seconds.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable, Mapping
from typing import Any

import gevent
from gevent.lock import Semaphore

from vaurien.contract import BehaviorLike
from vaurien.endpoint import Endpoint
from vaurien.errors import VaurienError
from vaurien.network import PeerName

log = logging.getLogger(__name__)

#: Events a relay runs in a row while reads fill the buffer, before other connections' turn.
_MOST_EVENTS = 8


class Session:
    """One client connection and its backend connection, with a pump for each direction.

    ``proxy`` is the :class:`~vaurien.proxy.Proxy` serving it. Both sockets are adjusted here,
    before anything is read: keep-alive probes (``tcp_keepalive``), then the protocol's
    ``setup_socket``. ``backend_watcher`` is an io watcher already made for the backend's
    socket (its connect's), which its endpoint keeps. :meth:`start` starts it; once it has
    ended, the proxy's ``session_ended`` counts it.
    """

    def __init__(
        self,
        proxy: Any,
        client_sock: Any,
        client_address: Any,
        backend_sock: Any,
        backend_watcher: Any = None,
    ) -> None:
        protocol = proxy.protocol
        for sock, role in ((client_sock, "client"), (backend_sock, "backend")):
            if proxy.config.tcp_keepalive:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            protocol.setup_socket(sock, role)
        self.proxy = proxy
        self.peer = PeerName(client_address)
        #: The session's number on its proxy, from 1 (what the dashboard's fault feed names).
        self.number = proxy.total_sessions + 1
        if proxy.tls is None:
            self.client = Endpoint(client_sock, "client", self)
            self.backend = Endpoint(backend_sock, "backend", self, backend_watcher)
        else:
            self.client, self.backend = proxy.tls.endpoints(client_sock, backend_sock, self)
        # The client has usually spoken while the backend connection was being made: read at
        # once rather than after one more turn of the hub (a read that finds nothing waits).
        self.client.skip_next_wait()
        self.closed = False
        self._reset = False
        self._error_logged = False
        self._protocol = protocol
        self._greenlets: list[Any] = []  # those running its events (pumps, a handshake)
        self._relays: list[Relay] = []  # the directions relayed from callbacks
        self._running = 2  # directions not done yet
        self._ended = False
        self._links: list[Any] = []
        #: What the protocol keeps for this session (BaseProtocol.open_session).
        self.state: Any = protocol.open_session(self)
        self._loop = gevent.get_hub().loop
        self.last_activity = self._loop.now()
        self._idle_timer: Any = None
        #: Behavior state for this connection (see ``BaseBehavior.state``).
        self.states: dict[Any, Any] = {}
        self._per_connection = proxy.config.scope == "connection"
        self._picks = not protocol.picks_itself  # else the protocol picks per message
        # --scope connection: the plan the pick was made under, its mix, and the pick.
        self._plan: Any = None
        self._mix: Any = None
        self._picked: Any = None
        #: The rules that may take this session's requests (vaurien.plan.SessionRules).
        self.rule_view: Any = None
        # Events run one at a time when a plugin may read the other side within its event.
        self._event_lock = Semaphore() if proxy.plan.exclusive else None
        self._debug = log.isEnabledFor(logging.DEBUG)

    def __repr__(self) -> str:
        return f"<Session {self.peer} -> {self.proxy.backend}>"

    @property
    def bytes_to_backend(self) -> int:
        """Bytes read from the client so far."""
        return self.client.bytes_received

    @property
    def bytes_to_client(self) -> int:
        """Bytes read from the backend so far."""
        return self.backend.bytes_received

    # -- life --------------------------------------------------------------------------------

    def start(self) -> None:
        """Start relaying both directions (after the TLS handshakes, if any); returns at once.

        A direction is relayed from its watcher's callbacks when the protocol relays plainly,
        neither side speaks TLS and the mix runs events both ways at once; else it gets a pump
        greenlet.
        """
        config = self.proxy.config
        if self._debug:
            log.debug("%s: session opened to %s", self.peer, self.proxy.backend)
        if not config.stay_connected:
            self._arm_idle_timer(config.timeout)
        inline = self._relayable()
        for source, dest, to_backend in (
            (self.client, self.backend, True),
            (self.backend, self.client, False),
        ):
            if inline:
                self._relay(source, dest, to_backend)
            else:
                self._spawn_pump(source, dest, to_backend)
        if inline and not self.closed:
            # The client has usually spoken while the backend connection was being made.
            self._relays[0].on_readable()

    def handshake(self) -> bool:
        """Run the TLS handshakes in the calling greenlet; false when they failed (logged) or
        the session was closed meanwhile."""
        current = gevent.getcurrent()
        self._greenlets.append(current)
        try:
            done = self.proxy.tls.handshake(self)
        except gevent.GreenletExit:
            done = False
        finally:
            self._greenlets.remove(current)
        self.last_activity = self._loop.now()
        if done and not self.closed:
            return True
        self.close()
        self._end_if_over()  # closed while shaking hands: this greenlet was the last one
        return False

    def link(self, callback: Any) -> None:
        """Call ``callback(session)`` once the session has ended (both sockets closed)."""
        if self._ended:
            callback(self)
        else:
            self._links.append(callback)

    def _relayable(self) -> bool:
        """Whether events may run in watcher callbacks: the protocol relays plainly, neither
        side speaks TLS and the mix runs events both ways at once."""
        return (
            self._protocol.relay is not None
            and self.proxy.tls is None
            and not self.proxy.plan.exclusive
        )

    def _relay(self, source: Endpoint, dest: Endpoint, to_backend: bool) -> None:
        """From now on, the direction from ``source`` runs in its watcher's callbacks."""
        relay = Relay(self, source, dest, to_backend)
        self._relays.append(relay)
        source.watch_readable(relay.on_readable)

    def _spawn_pump(self, source: Endpoint, dest: Endpoint, to_backend: bool, behavior=None):
        # The pump counts itself in once it runs: a session closed before that ends at once,
        # and the pump, finding it closed, does nothing.
        self.proxy.workers.spawn(self._pump, source, dest, to_backend, behavior)

    def _hand_to_pump(self, relay: Relay, behavior: BehaviorLike | None) -> None:
        """From now on, a pump greenlet runs the direction of ``relay``, starting with an event
        for ``behavior`` (already picked) when given."""
        self._relays.remove(relay)
        relay.source.unwatch_readable(relay.on_readable)
        self._spawn_pump(relay.source, relay.dest, relay.to_backend, behavior)

    def _direction_done(self) -> None:
        self._running -= 1
        self._end_if_over()

    def _end_if_over(self) -> None:
        """Close both sockets once both directions are done (or the session is closed) and no
        greenlet runs an event of it any more."""
        if (self.closed or self._running <= 0) and not self._greenlets and not self._ended:
            self._ended = True
            self.closed = True
            if self._idle_timer is not None:
                self._idle_timer.close()
            self.client.really_close(self._reset)
            self.backend.really_close(self._reset)
            self.proxy.session_ended(self)
            links, self._links = self._links, []
            for callback in links:
                callback(self)

    def release(self) -> None:
        """Once the session is over and counted, drop its references to its endpoints,
        greenlets and timer.

        They tie it in reference cycles (each endpoint points back to its session): without
        this, every ended session, with its sockets and greenlets, waits for a full garbage
        collection, and the proxy's memory climbs between them. Endpoints keep ``session``,
        so a plugin holding one can still call ``source.session.close()``.
        """
        self._greenlets = []
        self._relays = []
        self._idle_timer = None
        self.client = self.backend = None
        self.state = None  # a protocol's state may point back to the session

    def greenlets(self) -> list[Any]:
        """The greenlets running the session's events now."""
        return list(self._greenlets)

    def close(self) -> None:
        """End the session: both connections are closed (cleanly) as soon as possible."""
        if self.closed:
            return
        self.closed = True
        current = gevent.getcurrent()
        for greenlet in self._greenlets:
            if greenlet is not current and not greenlet.dead:
                greenlet.kill(block=False)
        self._end_if_over()

    def reset(self) -> None:
        """End the session with a TCP RST on both connections."""
        self._reset = True
        self.close()

    # -- the pick ----------------------------------------------------------------------------

    @property
    def client_host(self) -> str:
        """The client's address, without its port (what rules on ``client`` test)."""
        address = self.peer.address
        return str(address[0]) if isinstance(address, tuple) else str(address)

    def pick(
        self, to_backend: bool | None = None, fields: Mapping[str, str] | None = None
    ) -> BehaviorLike:
        """The behavior for the next event, counted in the proxy's stats.

        Drawn for each event, or under ``--scope connection`` at the first event and kept for
        the connection's life (both directions share it) while the proxy's plan is the same
        object: a new mix, rule set or scenario step makes the next event pick again. The mix
        drawn from is the first rule's that takes the request (``fields``: what it holds, as
        the protocol's ``peek`` says; None when the protocol tells nothing), else the running
        scenario's step's, else the proxy's own (:class:`vaurien.plan.Plan`). With
        ``to_backend``, the event's direction, a behavior whose ``direction`` is the other one
        gets the dummy in its place (:meth:`Mix.for_event <vaurien.mix.Mix.for_event>`);
        without it, the pick itself (a protocol picking for a request, whose ``to_client``
        behavior acts on the answer). While a dashboard watches, a pick of any behavior but the
        dummy is noted in the proxy's ``fault_log``, with ``fields`` (see
        :meth:`names_requests`).
        """
        plan = self.proxy.plan
        if self._per_connection:
            if self._plan is not plan:
                self._pick_for_connection(plan, fields)
            mix, behavior = self._mix, self._picked
        else:
            mix = plan.mix if plan.direct else self.proxy.chaos.mix_for(self, plan, fields)
            behavior = mix.pick()
        if to_backend is not None:
            behavior = mix.for_event(to_backend, behavior)
        self.proxy.applied[behavior.name] += 1
        fault_log = self.proxy.fault_log
        if fault_log is not None and behavior is not mix.dummy:
            fault_log.append((time.time(), behavior.name, self.number, fields))
        return behavior

    def _pick_for_connection(self, plan: Any, fields: Mapping[str, str] | None) -> None:
        mix = plan.mix if plan.direct else self.proxy.chaos.mix_for(self, plan, fields)
        # The pick may have moved a scenario to its next step: that plan is the one picked under.
        self._plan, self._mix, self._picked = self.proxy.plan, mix, mix.pick()

    def wants_fields(self) -> bool:
        """Whether a rule in force decides on what a request holds (a protocol then passes
        its fields to :meth:`pick`), not only on the client."""
        plan = self.proxy.plan
        if not plan.needs_fields:
            return False
        view = self.rule_view
        if view is None or view.key is not plan.rules:
            view = self.proxy.chaos.view(self, plan)
        return view.wants_fields

    def names_requests(self) -> bool:
        """Whether a dashboard watches the faults: a protocol then passes a request's fields to
        :meth:`pick` even when no rule decides on them, so that the feed names the request."""
        return self.proxy.fault_log is not None

    def passes_everything(self) -> bool:
        """Whether every pick would be the dummy now (no chaos): a protocol may then frame a
        run of messages without picking for each, and count them with :meth:`count_picks`."""
        plan = self.proxy.plan
        if plan.direct:
            mix = plan.mix
        else:
            chaos = self.proxy.chaos
            if chaos.view(self, plan).wants_fields:
                return False  # a request's fields decide
            mix = chaos.run_mix(self, plan)
            if mix is None:  # the scenario's step counts every pick
                return False
        if self._per_connection:
            if self._plan is not self.proxy.plan:
                self._pick_for_connection(self.proxy.plan, None)
            return self._picked is self._mix.dummy
        return mix.only_dummy

    def untaken_test(self) -> Callable[[Mapping[str, str]], bool] | None:
        """When rules decide on what the requests hold, and every request they do not take
        would get the dummy: the test that tells, from a request's fields, that no rule takes
        it (``untaken(fields)``; ``untaken.rejected(field, value)`` tells it from one field,
        when it can), so that a protocol may frame a run of such requests without a pick each
        (and count them with :meth:`count_picks`). None otherwise."""
        plan = self.proxy.plan
        if self._per_connection or not plan.needs_fields:
            return None
        chaos = self.proxy.chaos
        view = chaos.view(self, plan)
        if not view.wants_fields:
            return None
        mix = chaos.run_mix(self, plan)
        return view if mix is not None and mix.only_dummy else None

    def count_picks(self, count: int) -> None:
        """Count ``count`` picks of the dummy made without :meth:`pick`."""
        plan = self.proxy.plan
        if self._per_connection or plan.direct:
            mix = self._mix if self._per_connection else plan.mix
            self.proxy.applied[mix.dummy.name] += count
        else:
            self.proxy.chaos.count_run(self, count)

    # -- the pumps ---------------------------------------------------------------------------

    def _pump(
        self, source: Endpoint, dest: Endpoint, to_backend: bool, behavior: Any = None
    ) -> None:
        """Run the events of one direction until it ends or the session does; the first one
        for ``behavior`` when given (picked already, its data is there)."""
        events = self.proxy.events
        direction = "to_backend" if to_backend else "to_client"
        protocol = self._protocol
        finished = False
        current = gevent.getcurrent()
        self._greenlets.append(current)
        try:
            while not self.closed:
                if behavior is None:
                    lock = self._wait_for_event(source)
                else:
                    lock = None  # a relay handed it over: its mix ran events both ways at once
                try:
                    keep_going, took_data = self._event(source, dest, to_backend, behavior)
                finally:
                    if lock is not None:
                        lock.release()
                behavior = None
                events[direction] += 1
                if not self._goes_on(source, dest, keep_going, took_data):
                    finished = True
                    return
                if self._relayable() and protocol.relays_next(source, to_backend):
                    if not self.closed:  # (relays_next may have waited)
                        self._relay(source, dest, to_backend)
                    return
        except gevent.GreenletExit:
            return
        except Exception as e:
            self._end_after(e, source.role, to_backend)
        finally:
            self._greenlets.remove(current)
            if finished:
                self._direction_done()
            else:
                self._end_if_over()

    def _wait_for_event(self, source: Endpoint) -> Semaphore | None:
        """Wait until ``source`` is readable and, when the mix in force runs a session's events
        one at a time, for this session's turn: return the lock to release after the event."""
        while True:
            source.wait_readable()
            if not self.proxy.plan.exclusive:
                return None
            lock = self._event_lock
            if lock is None:  # a new mix made this session's events exclusive
                lock = self._event_lock = Semaphore()
            if lock.acquire(blocking=False):
                return lock
            lock.acquire()
            if source.readable_now():
                return lock
            lock.release()  # the other side's event read what woke us: wait again

    def _event(
        self, source: Endpoint, dest: Endpoint, to_backend: bool, behavior: Any = None
    ) -> tuple[bool, bool]:
        """Pick a behavior (unless the protocol picks per message itself, or ``behavior`` was
        picked already) and let the protocol handle the event. Returns whether the protocol
        keeps the session going, and whether the event took data from ``source``."""
        protocol = self._protocol
        if behavior is None and self._picks:
            behavior = self.pick(to_backend)
        source.behavior = behavior
        consumed = source.bytes_consumed
        self.last_activity = self._loop.now()
        if self._debug and behavior is not None:
            log.debug("%s: %s -> %s", self.peer, source.role, behavior.name)
        keep_going = protocol.handle(source, dest, to_backend, behavior)
        self.last_activity = self._loop.now()
        return keep_going, source.bytes_consumed != consumed

    def _goes_on(self, source: Endpoint, dest: Endpoint, keep_going: bool, took_data: bool) -> bool:
        """After an event: whether this direction has more events to run.

        An end of stream from ``source`` becomes a half-close of ``dest``, unless ``dest``'s
        own end of stream came first: the session then closes both sockets, which says the
        same. An event that took no data would run again at once, for ever: the session ends.
        """
        if not keep_going or self.closed or source.closed or dest.closed:
            self.close()
            return False
        if source.eof:
            if not dest.eof:
                dest.shutdown(socket.SHUT_WR)
            return False
        if not took_data:
            behavior = source.behavior
            log.error(
                "%s: %r returned without reading the data of its event; "
                "closing the session rather than looping",
                self.peer,
                behavior.name if behavior is not None else self._protocol.name,
            )
            self.close()
            return False
        return True

    def _end_after(self, error: Exception, role: str, to_backend: bool) -> None:
        """End the session after ``error`` in one direction, with the log line it deserves."""
        if isinstance(error, ConnectionResetError):
            log.debug("%s: connection reset by the %s", self.peer, role)
            self.reset()
            return
        if isinstance(error, OSError):
            log.debug("%s: %s", self.peer, error)
        elif isinstance(error, VaurienError):
            # One line per bad session: the other direction, woken before the close reached
            # it, often trips on the same garbage.
            log.log(
                logging.DEBUG if self._error_logged else logging.WARNING, "%s: %s", self.peer, error
            )
            self._error_logged = True
        else:
            log.error(
                "%s: error in the %s direction; closing the session",
                self.peer,
                "client->backend" if to_backend else "backend->client",
                exc_info=error,
            )
        self.close()

    # -- the idle timeout --------------------------------------------------------------------

    def _arm_idle_timer(self, after: float) -> None:
        self._idle_timer = self._loop.timer(after)
        self._idle_timer.start(self._check_idle)

    def _check_idle(self) -> None:
        timeout = self.proxy.config.timeout
        idle = self._loop.now() - self.last_activity
        self._idle_timer.close()
        if idle >= timeout - 0.001:
            log.info("%s: idle for %gs; closing the session", self.peer, timeout)
            self.close()
        else:
            self._arm_idle_timer(timeout - idle)


class Relay:
    """One direction of a session relayed from its watcher's callbacks, in the hub.

    Each readable event is handed to the protocol's ``relay`` with :meth:`pick` (see
    :meth:`BaseProtocol.relay <vaurien.protocols.base.BaseProtocol.relay>`): when the behavior
    picked changes nothing, the bytes move at once; any other behavior, and a mix whose events
    must run one at a time, get the direction a pump greenlet. What ``dest`` does not take at
    once waits in its backlog while reading ``source`` pauses. Nothing here ever waits.
    """

    __slots__ = ("session", "source", "dest", "to_backend", "direction", "size")

    def __init__(self, session: Session, source: Endpoint, dest: Endpoint, to_backend: bool):
        self.session = session
        self.source = source
        self.dest = dest
        self.to_backend = to_backend
        self.direction = "to_backend" if to_backend else "to_client"
        self.size = session._protocol.buffer_size  # a read this large may leave more behind

    def pick(self) -> bool:
        """Pick for the event; true when the behavior changes nothing and the protocol may
        move the bytes itself. Otherwise the direction goes to a pump, which runs the event.

        A protocol that picks for each message itself calls this only to hand the event
        (what it pushed back, or the end of the stream) to a pump: no pick is made then."""
        session = self.session
        plan = session.proxy.plan
        if not plan.exclusive and session._picks:
            behavior = session.pick(self.to_backend)
            # The quiet dummies of every mix of the plan (its own, its rules', its steps'): a
            # pick from the next plan's (a scenario moved on in the pick) goes to a pump.
            if id(behavior) in plan.quiet:
                self.source.behavior = behavior
                if session._debug:
                    log.debug("%s: %s -> %s", session.peer, self.source.role, behavior.name)
                return True
        else:
            behavior = None  # the pump waits for the session's turn, then picks
        session._hand_to_pump(self, behavior)
        return False

    def on_readable(self) -> None:
        """The source is readable: relay events while reads fill the buffer (a few at most,
        so that other connections get their turn)."""
        session = self.session
        source = self.source
        relay = session._protocol.relay
        pick = self.pick  # bound once per wake-up, not kept: a bound method kept is a cycle
        try:
            for _ in range(_MOST_EVENTS):
                count = relay(source, self.dest, pick)
                if count is None:  # nothing there, or handed to a pump
                    return
                proxy = session.proxy
                proxy.events[self.direction] += 1
                session.last_activity = session._loop.now()
                if not count or self.dest.backlogged:
                    self._pause()
                    return
                if count < self.size:
                    return
        except Exception as e:
            session._end_after(e, source.role, self.to_backend)

    def _pause(self) -> None:
        """Stop reading the source until the destination has taken everything; at the end of
        the source's stream, pass the end on once it has."""
        self.source.unwatch_readable(self.on_readable)
        if self.dest.backlogged:
            self.dest.watch_writable(self.on_writable)
        else:
            self._resume()

    def on_writable(self) -> None:
        """The destination takes more: send what waits, then read the source again."""
        try:
            if not self.dest.flush():
                return
        except Exception as e:
            self.session._end_after(e, self.dest.role, self.to_backend)
            return
        self.dest.unwatch_writable(self.on_writable)
        self._resume()

    def _resume(self) -> None:
        session = self.session
        if session.closed:
            return
        if not self.source.eof:
            self.source.watch_readable(self.on_readable)
            return
        # The end of the source's stream: a half-close of the other side, unless its own
        # stream ended first (the session then closes both, which says the same).
        session._relays.remove(self)
        if not self.dest.eof:
            self.dest.shutdown(socket.SHUT_WR)
        session._direction_done()
