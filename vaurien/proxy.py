"""The proxy: a :class:`Proxy` wires a configuration to a listener, a protocol and a mix.

It listens (:mod:`vaurien.network`); for each client it connects to the backend and runs a
:class:`~vaurien.session.Session`, which picks behaviors from the mix in force
(:class:`~vaurien.mix.Mix`, swapped whole by :meth:`Proxy.set_behavior`) and hands each event
to the protocol. The proxy keeps the counters of all its sessions.
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

from vaurien.endpoint import PipePool
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
from vaurien.plan import Chaos, Plan
from vaurien.session import Session
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
        self._loop = gevent.get_hub().loop
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
        self._server: AcceptServer | None = None
        self._stopped = gevent.event.Event()
        # Rules and scenarios (vaurien.plan): the plan in force, swapped whole by ``chaos``.
        self.plan: Plan
        self.chaos = Chaos(self, self._loop)
        self.chaos.start(self.make_mix(config.behavior), config.rules, config.scenario)

    # -- the behavior mix ------------------------------------------------------------------

    @property
    def mix(self) -> Mix:
        """The proxy's own mix (``--behavior``; a running scenario's step takes its place)."""
        return self.plan.behavior

    @property
    def behavior(self) -> BehaviorMix:
        """The spec of the proxy's own mix."""
        return self.mix.spec

    def set_behavior(
        self, spec: BehaviorMix | str, options: Mapping[str, Mapping[str, Any]] | None = None
    ) -> None:
        """Put a new mix in force for every following event, on new and open connections; a
        running scenario ends.

        ``options`` maps behavior names to option values that replace the configured ones
        (those from the command line or the config file). Everything is checked before the
        swap, which is one assignment: two calls never blend.
        """
        self.chaos.set_behavior(self.make_mix(spec, options))

    def make_mix(
        self, spec: BehaviorMix | str, options: Mapping[str, Mapping[str, Any]] | None = None
    ) -> Mix:
        """A mix of this proxy's behaviors for ``spec``, with the configured option values and
        ``options`` (behavior name -> values) over them."""
        config = self.config
        spec = read_spec(spec, config.behaviors)
        options = options or {}
        values = {
            name: {**config.options_for("behavior", name), **options.get(name, {})}
            for name in spec.names
        }
        return Mix.create(
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
        for rule in config.rules:
            log.info("  rule:     %s", rule)
        if config.scenario is not None:
            log.info("  scenario: %s", config.scenario)
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
            self.bytes_to_backend += session.bytes_to_backend
            self.bytes_to_client += session.bytes_to_client
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

    def bytes_relayed(self) -> int:
        """Bytes relayed both ways since the start, by open sessions included."""
        active = self.sessions
        return (
            self.bytes_to_backend
            + self.bytes_to_client
            + sum(s.bytes_to_backend + s.bytes_to_client for s in active)
        )

    def stats(self) -> dict[str, Any]:
        """Counters: sessions, bytes and events each way, how often each behavior was applied,
        how many picks each rule and each scenario step supplied, and resources.

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
            "bytes_to_backend": self.bytes_to_backend + sum(s.bytes_to_backend for s in active),
            "bytes_to_client": self.bytes_to_client + sum(s.bytes_to_client for s in active),
            "events_to_backend": self.events["to_backend"],
            "events_to_client": self.events["to_client"],
            "behaviors": dict(self.applied),
            **self.chaos.stats(),
        }
