"""The proxy server and its sessions.

A :class:`Proxy` listens with a gevent ``StreamServer``. For each client it connects to the
backend and runs a :class:`Session`: two pumps, one per direction, each waiting until its side
is readable, picking a behavior from the mix (on each event, or once per connection with
``--scope connection``) and handing the event to the protocol; a behavior whose ``direction``
is the other one is replaced by ``dummy`` for the event. An end of stream on one side becomes
a half-close on the other; the session ends when both directions are done, on a reset, when a
behavior closes it, or after ``timeout`` idle seconds.
"""

from __future__ import annotations

import collections
import logging
import random
import socket
from collections.abc import Mapping
from typing import Any

import gevent
import gevent.event
import gevent.socket
from gevent.lock import Semaphore
from gevent.server import StreamServer

from vaurien.endpoint import Endpoint, PipePool
from vaurien.errors import VaurienError
from vaurien.mix import BehaviorMix, Mix, read_spec
from vaurien.network import (
    AcceptServer,
    Address,
    BackendConnector,
    PeerName,
    describe_failure,
    listen,
    open_fds,
)
from vaurien.settings import ProxyConfig

log = logging.getLogger(__name__)

#: Connections accepted per wake-up of the listening socket.
ACCEPT_BURST = 1000


class Proxy:
    """One chaos proxy: its listening socket, protocol, behavior mix and counters.

    Nothing is shared between two proxies: each has its own plugin registries, plugin
    instances and random source (seeded with ``config.seed``). Use it as a context manager,
    or call :meth:`start` and :meth:`stop`.
    """

    def __init__(self, config: ProxyConfig, name: str = "vaurien") -> None:
        self.config = config
        self.name = name
        self.seed = (
            config.seed if config.seed is not None else random.SystemRandom().getrandbits(32)
        )
        self.random = random.Random(self.seed)
        self.backend: Address = config.backend
        self.protocol = config.protocols.create(
            config.protocol, config.options_for("protocol", config.protocol), proxy=self
        )
        self.sessions: set[Session] = set()
        self.pipes = PipePool() if PipePool.available else None
        self._hub = gevent.get_hub()
        self._loop = self._hub.loop
        self._connector = BackendConnector(config.timeout)
        # Every client being served, from accept to close (connecting to the backend included).
        self._handlers: set[gevent.Greenlet] = set()
        self.applied: collections.Counter[str] = collections.Counter()
        self.events: collections.Counter[str] = collections.Counter()  # by direction
        self.total_sessions = 0
        self.refused_connections = 0
        self._refusals_unlogged = 0
        self._refusal_logged_at = float("-inf")
        self.bytes_to_backend = 0
        self.bytes_to_client = 0
        self._server: StreamServer | None = None
        self._stopped = gevent.event.Event()
        self.mix: Mix
        self.set_behavior(config.behavior)

    # -- the behavior mix ------------------------------------------------------------------

    @property
    def behavior(self) -> BehaviorMix:
        """The spec of the mix in force."""
        return self.mix.spec

    def set_behavior(
        self, spec: BehaviorMix | str, options: Mapping[str, Mapping[str, Any]] | None = None
    ) -> None:
        """Put a new mix in force for every following event, on new and open connections.

        ``options`` maps behavior names to option values that replace the configured ones
        (those from the command line or the config file). Everything is checked before the
        swap, which is one assignment: two calls never blend.
        """
        config = self.config
        spec = read_spec(spec, config.behaviors)
        options = options or {}
        values = {
            name: {**config.options_for("behavior", name), **options.get(name, {})}
            for name in spec.names
        }
        self.mix = Mix.create(
            spec,
            config.behaviors,
            values,
            duplex=self.protocol.duplex,
            random=self.random.random,
            proxy=self,
        )

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Bind the listening socket and start accepting clients."""
        listener = listen(self.config.proxy, self.config.backlog, self._prepare_listener)
        self._server = AcceptServer(listener, self._handle, self.name)
        # Accept a whole burst per wake-up: a full listen queue makes clients retransmit SYNs.
        self._server.max_accept = ACCEPT_BURST
        self._server.start()
        self._stopped.clear()
        self._log_start()

    def stop(self, timeout: float = 1.0) -> None:
        """Stop accepting, close every session, and wait at most ``timeout`` for them to end.

        Clients still waiting for their backend connection are let go too.
        """
        server = self._server
        if server is None:
            return
        address = self.address_text
        self._server = None
        server.close()
        in_session = set()
        for session in list(self.sessions):
            in_session.add(session.handler)
            session.close()
        current = gevent.getcurrent()
        handlers = [handler for handler in self._handlers if handler is not current]
        for handler in handlers:
            if handler not in in_session:
                handler.kill(block=False)
        gevent.joinall(handlers, timeout=timeout)
        if self.pipes is not None:
            self.pipes.close()
        self._stopped.set()
        log.info("%s on %s stopped", self.name, address)

    def serve_forever(self) -> None:
        """Start if needed and serve until :meth:`stop` is called."""
        if self._server is None:
            self.start()
        self._stopped.wait()

    def __enter__(self) -> Proxy:
        self.start()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()

    @property
    def address(self) -> tuple[str, int]:
        """The address actually listened on (the real port when ``0`` was asked)."""
        if self._server is None:
            raise RuntimeError("the proxy is not started")
        return self._server.socket.getsockname()[:2]

    @property
    def address_text(self) -> str:
        """The listening address as ``host:port``."""
        host, port = self.address if self._server is not None else (self.config.proxy.host, 0)
        return str(Address(host, port))

    def _log_start(self) -> None:
        config = self.config
        idle = "kept open" if config.stay_connected else f"closed after {config.timeout:g}s idle"
        log.info("%s listening on %s", self.name, self.address_text)
        log.info("  backend:  %s (connect timeout %gs)", self.backend, config.timeout)
        log.info("  protocol: %s", config.protocol)
        log.info("  behavior: %s (picked per %s)", self.mix.spec, config.scope)
        log.info("  sessions: %s; random seed %d", idle, self.seed)

    # -- sessions --------------------------------------------------------------------------

    def _handle(self, client_sock: gevent.socket.socket, client_address: Any) -> None:
        if len(self._handlers) >= self.config.max_connections:
            self._refuse(client_sock, client_address)
            return
        handler = gevent.getcurrent()
        self._handlers.add(handler)
        try:
            self._serve(client_sock, client_address)
        finally:
            self._handlers.discard(handler)
            if log.isEnabledFor(logging.DEBUG):
                log.debug(
                    "%s: session closed; %d live sessions, %s open fds",
                    PeerName(client_address),
                    len(self._handlers),
                    open_fds(),
                )

    def _serve(self, client_sock: gevent.socket.socket, client_address: Any) -> None:
        backend = self.backend
        try:
            backend_sock = self._connector.connect(backend)
        except OSError as e:
            log.warning(
                "cannot reach backend %s: %s; closing client %s",
                backend,
                describe_failure(e),
                PeerName(client_address),
            )
            client_sock.close()
            return
        try:
            for sock, role in ((client_sock, "client"), (backend_sock, "backend")):
                self.protocol.setup_socket(sock, role)
            session = Session(self, client_sock, client_address, backend_sock)
        except Exception:
            log.exception("%s: cannot set up the session; closing it", PeerName(client_address))
            backend_sock.close()
            client_sock.close()
            return
        self.sessions.add(session)
        self.total_sessions += 1
        try:
            session.run()
        finally:
            self.sessions.discard(session)
            self.bytes_to_backend += session.client.bytes_received
            self.bytes_to_client += session.backend.bytes_received
            session.release()

    def _prepare_listener(self, sock: gevent.socket.socket) -> None:
        # Accepted sockets inherit TCP_NODELAY from the listener: one call instead of one per
        # client. Small messages must not wait for Nagle's algorithm in a proxy.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.protocol.setup_listener(sock)

    def _refuse(self, client_sock: gevent.socket.socket, client_address: Any) -> None:
        """Close a client beyond ``max_connections`` at once; log at most one line a second."""
        client_sock.close()
        self.refused_connections += 1
        self._refusals_unlogged += 1
        now = self._loop.now()
        if now - self._refusal_logged_at >= 1.0:
            log.warning(
                "%d clients served, the most --max-connections allows: closed %d new "
                "client(s), the last %s",
                len(self._handlers),
                self._refusals_unlogged,
                PeerName(client_address),
            )
            self._refusal_logged_at = now
            self._refusals_unlogged = 0

    def stats(self) -> dict[str, Any]:
        """Counters: sessions, bytes and events each way, how often each behavior was applied,
        and resources.

        ``live_sessions`` counts every client being served, those still connecting to the
        backend included; ``open_fds`` is the process's open file descriptors (``None`` where
        the system does not tell).
        """
        active = list(self.sessions)
        return {
            "active_connections": len(active),
            "live_sessions": len(self._handlers),
            "total_connections": self.total_sessions,
            "refused_connections": self.refused_connections,
            "open_fds": open_fds(),
            "bytes_to_backend": self.bytes_to_backend
            + sum(s.client.bytes_received for s in active),
            "bytes_to_client": self.bytes_to_client + sum(s.backend.bytes_received for s in active),
            "events_to_backend": self.events["to_backend"],
            "events_to_client": self.events["to_client"],
            "behaviors": dict(self.applied),
        }


class Session:
    """One client connection and its backend connection, with a pump for each direction."""

    def __init__(
        self, proxy: Proxy, client_sock: Any, client_address: Any, backend_sock: Any
    ) -> None:
        self.proxy = proxy
        self.peer = PeerName(client_address)
        self.handler = gevent.getcurrent()  # the proxy's greenlet serving this client
        self.client = Endpoint(client_sock, "client", self)
        self.backend = Endpoint(backend_sock, "backend", self)
        # The client has usually spoken while the backend connection was being made: read at
        # once rather than after one more turn of the hub (a read that finds nothing waits).
        self.client.skip_next_wait()
        self.closed = False
        self._reset = False
        self._error_logged = False
        #: What the protocol keeps for this session (BaseProtocol.new_session_state).
        self.state: Any = proxy.protocol.new_session_state(self)
        self._hub = gevent.get_hub()
        self._loop = self._hub.loop
        self.last_activity = self._loop.now()
        self._greenlets: list[Any] = []
        self._idle_timer: Any = None
        #: Behavior state for this connection (see ``BaseBehavior.state``).
        self.states: dict[Any, Any] = {}
        self._per_connection = proxy.config.scope == "connection"
        self._exchanges = proxy.protocol.exchanges
        # --scope connection: the mix the pick was made from, and the pick.
        self._mix: Any = None
        self._picked: Any = None
        # Events run one at a time when a plugin may read the other side within its event.
        self._event_lock = Semaphore() if proxy.mix.exclusive else None
        self._debug = log.isEnabledFor(logging.DEBUG)

    def __repr__(self) -> str:
        return f"<Session {self.peer} -> {self.proxy.backend}>"

    def run(self) -> None:
        """Pump both directions until the session ends, then close both connections."""
        if self._debug:
            log.debug("%s: session opened to %s", self.peer, self.proxy.backend)
        self._greenlets = [gevent.getcurrent()]
        if not self.proxy.config.stay_connected:
            self._arm_idle_timer(self.proxy.config.timeout)
        other = gevent.spawn(self._pump, self.backend, self.client, False)
        self._greenlets.append(other)
        try:
            self._pump(self.client, self.backend, True)
            other.join()
        except gevent.GreenletExit:
            other.kill()
        finally:
            if self._idle_timer is not None:
                self._idle_timer.close()
            self.client.really_close(self._reset)
            self.backend.really_close(self._reset)

    def release(self) -> None:
        """Once the session is over and counted, drop its references to its endpoints,
        greenlets and timer.

        They tie it in reference cycles (each endpoint points back to its session): without
        this, every ended session, with its sockets and greenlets, waits for a full garbage
        collection, and the proxy's memory climbs between them. Endpoints keep ``session``,
        so a plugin holding one can still call ``source.session.close()``.
        """
        self._greenlets = []
        self._idle_timer = None
        self.handler = None
        self.client = self.backend = None
        self.state = None  # a protocol's state may point back to the session

    def close(self) -> None:
        """End the session: both connections are closed (cleanly) as soon as possible."""
        if self.closed:
            return
        self.closed = True
        current = gevent.getcurrent()
        for greenlet in self._greenlets:
            if greenlet is not current and not greenlet.dead:
                greenlet.kill(block=False)

    def reset(self) -> None:
        """End the session with a TCP RST on both connections."""
        self._reset = True
        self.close()

    def pick(self, to_backend: bool) -> Any:
        """The behavior for the next event going ``to_backend``, counted in the proxy's stats.

        Drawn from the mix in force for each event, or under ``--scope connection`` at the
        first event and kept for the connection's life (both directions share it) while the
        mix in force is the same object: a new mix makes the next event pick again. A
        behavior whose ``direction`` is the other one gets the dummy in its place, except for
        a protocol whose events are exchanges (``exchanges``): it gets the pick itself, as a
        ``to_client`` behavior picked for a request acts on its answer.
        """
        mix = self.proxy.mix
        if self._per_connection:
            if self._mix is not mix:
                self._mix, self._picked = mix, mix.pick()
            behavior = self._picked
        else:
            behavior = mix.pick()
        if not self._exchanges:
            behavior = mix.for_event(to_backend, behavior)
        self.proxy.applied[behavior.name] += 1
        return behavior

    def _pump(self, source: Endpoint, dest: Endpoint, to_backend: bool) -> None:
        proxy = self.proxy
        protocol = proxy.protocol
        wants_behavior = protocol.wants_behavior
        events = proxy.events
        direction = "to_backend" if to_backend else "to_client"
        loop = self._loop
        lock = None
        try:
            while not self.closed:
                source.wait_readable()
                exclusive = proxy.mix.exclusive
                if exclusive:
                    lock = self._event_lock
                    if lock is None:  # a new mix made this session's events exclusive
                        lock = self._event_lock = Semaphore()
                if exclusive and not lock.acquire(blocking=False):
                    lock.acquire()
                    if not source.readable_now():
                        lock.release()
                        continue
                try:
                    # The protocol may decline: an answer follows its request's behavior.
                    behavior = self.pick(to_backend) if wants_behavior(self, to_backend) else None
                    source.behavior = behavior
                    consumed = source.bytes_received - len(source._pending)
                    self.last_activity = loop.now()
                    if self._debug and behavior is not None:
                        log.debug("%s: %s -> %s", self.peer, source.role, behavior.name)
                    keep_going = protocol.handle(source, dest, to_backend, behavior)
                finally:
                    if exclusive:
                        lock.release()
                self.last_activity = loop.now()
                events[direction] += 1
                if not keep_going or self.closed or source._closed or dest._closed:
                    self.close()
                    return
                if source.eof:
                    # Half-close the other side, unless its own end of stream came first:
                    # then the session closes both sockets now, which says the same.
                    if not dest.eof:
                        dest.shutdown(socket.SHUT_WR)
                    return
                if consumed == source.bytes_received - len(source._pending):
                    log.error(
                        "%s: %r returned without reading the data of its event; "
                        "closing the session rather than looping",
                        self.peer,
                        behavior.name if behavior is not None else protocol.name,
                    )
                    self.close()
                    return
        except gevent.GreenletExit:
            return
        except ConnectionResetError:
            log.debug("%s: connection reset by the %s", self.peer, source.role)
            self.reset()
        except OSError as e:
            log.debug("%s: %s", self.peer, e)
            self.close()
        except VaurienError as e:
            # One line per bad session: the other direction, woken before the close reached
            # it, often trips on the same garbage.
            if self._error_logged:
                log.debug("%s: %s", self.peer, e)
            else:
                self._error_logged = True
                log.warning("%s: %s", self.peer, e)
            self.close()
        except Exception:
            log.exception(
                "%s: error in the %s direction; closing the session",
                self.peer,
                "client->backend" if to_backend else "backend->client",
            )
            self.close()

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
