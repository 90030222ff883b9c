"""The proxy: a :class:`Proxy` wires a configuration to a listener, a protocol and a mix.

It listens (:mod:`vaurien.network`); for each client it connects to the backend and runs a
:class:`~vaurien.session.Session`, which picks behaviors by the plan in force
(:class:`~vaurien.plan.Plan`: the rules, then a scenario's step or the proxy's own
:class:`~vaurien.mix.Mix`; swapped whole by :meth:`Proxy.set_behavior`, :meth:`Proxy.set_toxics`
and ``proxy.chaos``) and hands each event to the protocol. The proxy keeps the counters of all
its sessions.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import random
import socket
import struct
from collections.abc import Mapping, Sequence
from typing import Any

import gevent
import gevent.event
import gevent.socket

from vaurien.endpoint import PipePool
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
from vaurien.plan import Chaos, Plan
from vaurien.proxy_config import ProxyConfig
from vaurien.session import Session
from vaurien.tls import TLSSetup
from vaurien.toxics import ProxyToxics, Toxic
from vaurien.workers import WorkerPool

log = logging.getLogger(__name__)

#: Connections accepted per wake-up of the listening socket.
ACCEPT_BURST = 1000
#: Seconds between two probes of a backend that could not be reached (``refuse_when_backend_down``):
#: the first wait, doubled after each failed probe up to the second.
PROBE_PAUSES = (0.05, 1.0)
_LINGER_RESET = struct.pack("ii", 1, 0)
#: How a mix of toxics shows (``GET /behavior``).
TOXICS_SPEC = BehaviorMix.single(ProxyToxics.name)


class Proxy:
    """One chaos proxy: its listening socket, protocol, behavior mix and counters.

    Nothing is shared between two proxies: each has its own plugin registries, plugin
    instances and random source (seeded with ``config.seed``). Use it as a context manager,
    or call :meth:`start` and :meth:`stop`; :meth:`disable` and :meth:`start` take it down
    and up again on the same address, :meth:`move` sends it elsewhere. ``name`` defaults to
    the configuration's.
    """

    def __init__(self, config: ProxyConfig, name: str | None = None) -> None:
        self.config = config
        self.name = name if name is not None else config.name
        self.seed = (
            config.seed if config.seed is not None else random.SystemRandom().getrandbits(32)
        )
        self.random = random.Random(self.seed)
        self.backend: Address = config.backend
        self.protocol = config.protocols.create(
            config.protocol, config.options_for("protocol", config.protocol), proxy=self
        )
        #: TLS toward the clients and/or the backend; None for plain TCP on both sides.
        self.tls = TLSSetup.from_config(config, self.protocol.alpn)
        self.sessions: set[Session] = set()
        self.pipes = PipePool() if PipePool.available else None
        #: The greenlets that run the sessions' pumps, reused (see vaurien.workers).
        self.workers = WorkerPool()
        self._loop = gevent.get_hub().loop
        self._connector = BackendConnector(config.timeout)
        # Clients whose backend connection is being made: a PendingConnect, or the greenlet
        # that connects (the first lookup of the backend's name, TLS).
        self._connecting: set[Any] = set()
        self.applied: collections.Counter[str] = collections.Counter()
        #: While a dashboard watches (vaurien.dashboard), where each pick of a behavior but the
        #: dummy is noted, ``(time, behavior, session number, the request's fields or None)``,
        #: for its fault feed; None otherwise, and nothing is noted.
        self.fault_log: collections.deque[tuple[float, str, int, Any]] | None = None
        self.events: collections.Counter[str] = collections.Counter()  # by direction
        self.total_sessions = 0
        self.refused_connections = 0
        self._refusals_unlogged = 0
        self._refusal_logged_at = float("-inf")
        self.bytes_to_backend = 0
        self.bytes_to_client = 0
        self._server: AcceptServer | None = None
        #: Whether the proxy is up: listening (or waiting for its backend to listen again).
        self.enabled = False
        self._bound: Address | None = None  # where it listened last: it listens there again
        self._probing: gevent.Greenlet | None = None  # waits for an unreachable backend
        self._stopped = gevent.event.Event()
        #: The toxics (Toxiproxy's API); while there are some, they are the proxy's mix.
        self.toxics = ProxyToxics(self.random.random)
        self._behavior_mix: Mix  # the proxy's mix when it has no toxics
        # Rules and scenarios (vaurien.plan): the plan in force, swapped whole by ``chaos``.
        self.plan: Plan
        self.chaos = Chaos(self, self._loop)
        self._behavior_mix = self.make_mix(config.behavior)
        self.chaos.start(self._behavior_mix, config.rules, config.scenario)

    # -- the behavior mix ------------------------------------------------------------------

    @property
    def mix(self) -> Mix:
        """The proxy's own mix (``--behavior``, or its toxics; a running scenario's step takes
        its place)."""
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
        swap, which is one assignment: two calls never blend. The proxy's toxics, if any, are
        removed: the mix takes their place.
        """
        mix = self.make_mix(spec, options)
        if self.toxics.toxics:
            self.toxics.replace(())
        self._behavior_mix = mix
        self.chaos.set_behavior(mix)

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

    def set_toxics(self, toxics: Sequence[Toxic]) -> None:
        """Put ``toxics`` (made by :func:`~vaurien.toxics.make_toxic` for this proxy) in force
        in place of the mix, on new and open connections; none puts the mix back. Rules and a
        running scenario stay in force."""
        self.toxics.replace(toxics)
        mix = self._behavior_mix
        if toxics:
            mix = Mix.of(
                TOXICS_SPEC,
                self.toxics,
                mix.dummy,
                duplex=self.protocol.duplex,
                random=self.random.random,
            )
        self.chaos.replace_behavior(mix)

    def reset(self) -> None:
        """Back to how the configuration made it: listening, the configured mix, no toxics
        (Toxiproxy's ``POST /reset``)."""
        self.set_behavior(self.config.behavior)
        if not self.enabled:
            self.start()

    # -- lifecycle -------------------------------------------------------------------------

    def start(self, address: Address | None = None) -> None:
        """Bind the listening socket and start accepting clients.

        A proxy that listened before binds the same address again (the same port, when port 0
        was asked); with ``address``, it listens there from now on. Failures are
        :class:`~vaurien.errors.VaurienError` naming the address, and change nothing.
        """
        self._listen(address or self._bound or self.config.proxy)
        if address is not None and address != self.config.proxy:
            self.config = dataclasses.replace(self.config, proxy=address)
        self.enabled = True
        self._stopped.clear()
        self._log_start()
        if self.config.refuse_when_backend_down:
            gevent.spawn(self._first_probe)

    def disable(self, timeout: float = 1.0) -> None:
        """Stop listening, so that connects are refused, and close every session, waiting at
        most ``timeout`` for them to end. :meth:`start` listens again on the same address.

        Clients still waiting for their backend connection are let go too.
        """
        was_enabled, self.enabled = self.enabled, False
        self._stop_probing()
        server, self._server = self._server, None
        if server is not None:
            server.close()
        self._close_sessions(timeout)
        self.workers.close()
        if self.pipes is not None:
            self.pipes.close()
        if was_enabled:
            log.info("%s on %s stopped", self.name, self.address_text)

    def stop(self, timeout: float = 1.0) -> None:
        """Stop for good: :meth:`disable`, then :meth:`serve_forever` returns."""
        self.disable(timeout)
        self._stopped.set()

    def move(self, listen: Address | None = None, backend: Address | None = None) -> None:
        """Listen on ``listen``, forward to ``backend``, or both, from now on, closing the open
        sessions (a restart, as Toxiproxy does when either changes).

        The new address is bound before the old one is let go, so a failure to bind (a
        :class:`~vaurien.errors.VaurienError`) changes nothing; when the new address clashes
        with the proxy's own (the same port, another host), the old one is closed first and
        bound again if the new one still fails.
        """
        listener = None
        if listen is not None and self.enabled:
            listener = self._bind_beside(listen)
        self._stop_probing()  # a new backend, or a new address: probe anew below
        changes: dict[str, Any] = {}
        if listen is not None:
            changes["proxy"] = listen
            self._bound = None
        if backend is not None:
            changes["backend"] = self.backend = backend
        self.config = dataclasses.replace(self.config, **changes)
        self._close_sessions(1.0)
        if listener is not None:
            old, self._server = self._server, None
            if old is not None:
                old.close()
            self._serve_on(listener)
        elif self.enabled and self._server is None:  # it waited for the old backend
            self._listen(self._bound or self.config.proxy)
        if self.enabled and self.config.refuse_when_backend_down:
            gevent.spawn(self._first_probe)
        log.info(
            "%s moved: listening on %s, backend %s", self.name, self.address_text, self.backend
        )

    def _bind_beside(self, address: Address) -> gevent.socket.socket:
        try:
            return listen(address, self.config.backlog, self._prepare_listener)
        except VaurienError:
            if self._server is None or self._bound is None or address.port != self._bound.port:
                raise
        # The same port on another host: the proxy's own socket is in the way.
        old, self._server = self._server, None
        old.close()
        try:
            return listen(address, self.config.backlog, self._prepare_listener)
        except VaurienError:
            self._listen(self._bound)
            raise

    def _listen(self, address: Address) -> None:
        self._serve_on(listen(address, self.config.backlog, self._prepare_listener))

    def _serve_on(self, listener: gevent.socket.socket) -> None:
        server = AcceptServer(listener, self._handle, self.name)
        # Accept a whole burst per wake-up: a full listen queue makes clients retransmit SYNs.
        server.max_accept = ACCEPT_BURST
        server.start()
        self._server = server
        self._bound = Address(*listener.getsockname()[:2])

    def _close_sessions(self, timeout: float) -> None:
        current = gevent.getcurrent()
        waiting = []
        for session in list(self.sessions):
            session.close()
            waiting.extend(session.greenlets())
        for connecting in list(self._connecting):
            if isinstance(connecting, gevent.Greenlet):
                if connecting is not current:
                    connecting.kill(block=False)
                    waiting.append(connecting)
            else:
                self._connecting.discard(connecting)
                connecting.cancel()
        gevent.joinall([each for each in waiting if each is not current], timeout=timeout)

    # -- a backend that cannot be reached (refuse_when_backend_down) ---------------------------

    def _first_probe(self) -> None:
        try:
            self._connector.connect(self.backend).close()
        except OSError as e:
            self._backend_down(e)

    def _backend_down(self, error: OSError) -> None:
        """Stop listening until the backend can be reached again: new clients are refused."""
        if self._probing is not None or not self.enabled:
            return
        server, self._server = self._server, None
        if server is not None:
            server.close()
        log.warning(
            "%s: backend %s unreachable (%s): not listening on %s until it answers",
            self.name,
            self.backend,
            describe_failure(error),
            self.address_text,
        )
        self._probing = gevent.spawn(self._wait_for_backend)

    def _stop_probing(self) -> None:
        probing, self._probing = self._probing, None
        if probing is not None:
            probing.kill(block=False)

    def _wait_for_backend(self) -> None:
        pause, longest = PROBE_PAUSES
        try:
            while self.enabled:
                gevent.sleep(pause)
                pause = min(longest, pause * 2)
                try:
                    self._connector.connect(self.backend).close()
                except OSError:
                    continue
                if not self.enabled:
                    return
                try:
                    self._listen(self._bound or self.config.proxy)
                except VaurienError as e:
                    log.warning(
                        "%s: backend %s answers, but %s; retrying", self.name, self.backend, e
                    )
                    continue
                log.info(
                    "%s: backend %s answers again: listening on %s",
                    self.name,
                    self.backend,
                    self.address_text,
                )
                return
        finally:
            if self._probing is gevent.getcurrent():
                self._probing = None

    def serve_forever(self) -> None:
        """Start if needed and serve until :meth:`stop` is called."""
        if not self.enabled:
            self.start()
        # With a timeout: the timer keeps the hub alive while the proxy is disabled (no
        # listener), when nothing else may.
        while not self._stopped.wait(3600):
            pass

    def __enter__(self) -> Proxy:
        self.start()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()

    @property
    def address(self) -> tuple[str, int]:
        """The address listened on (the real port when ``0`` was asked), also while the proxy
        is disabled, once it listened."""
        if self._bound is None:
            raise RuntimeError("the proxy is not started")
        return self._bound.host, self._bound.port

    @property
    def listen_address(self) -> Address:
        """Where the proxy listens: the address bound, or the one configured before that."""
        return self._bound or self.config.proxy

    @property
    def address_text(self) -> str:
        """The listening address as ``host:port``."""
        return str(self.listen_address)

    def _log_start(self) -> None:
        config = self.config
        idle = "kept open" if config.stay_connected else f"closed after {config.timeout:g}s idle"
        log.info("proxy %s listening on %s", self.name, self.address_text)
        log.info("  backend:  %s (connect timeout %gs)", self.backend, config.timeout)
        log.info("  protocol: %s", config.protocol)
        log.info("  behavior: %s (picked per %s)", self.mix.spec, config.scope)
        for rule in config.rules:
            log.info("  rule:     %s", rule)
        if config.scenario is not None:
            log.info("  scenario: %s", config.scenario)
        log.info("  sessions: %s; random seed %d", idle, self.seed)
        for line in self.tls.describe() if self.tls is not None else ():
            log.info("  tls:      %s", line)

    # -- sessions --------------------------------------------------------------------------

    def _handle(self, client_sock: socket.socket, client_address: Any) -> None:
        """A client was accepted (called in the hub: nothing here waits)."""
        if len(self._connecting) + len(self.sessions) >= self.config.max_connections:
            self._refuse(client_sock, client_address)
            return
        if self.tls is None:
            pending = self._connector.connect_later(
                self.backend, self._connected, client_sock, client_address
            )
            if pending is not None:
                self._connecting.add(pending)
                pending.start()
                return
        # The backend's name to look up first, or TLS handshakes to run: a greenlet waits.
        self._connecting.add(gevent.spawn(self._serve, client_sock, client_address))

    def _connected(
        self,
        client_sock: socket.socket,
        client_address: Any,
        pending: Any,
        backend_sock: socket.socket | None,
        watcher: Any,
        error: OSError | None,
    ) -> None:
        """A backend connect started by :meth:`_handle` ended."""
        self._connecting.discard(pending)
        if error is not None:
            self._unreachable(client_sock, client_address, error)
            return
        session = self._open_session(client_sock, client_address, backend_sock, watcher)
        if session is not None:
            session.start()

    def _serve(self, client_sock: socket.socket, client_address: Any) -> None:
        """Connect to the backend, shake hands if TLS is spoken, start the session."""
        current = gevent.getcurrent()
        try:
            backend_sock = self._connector.connect(self.backend)
        except OSError as e:
            self._connecting.discard(current)
            self._unreachable(client_sock, client_address, e)
            return
        except BaseException:  # the proxy is stopping
            self._connecting.discard(current)
            client_sock.close()
            raise
        self._connecting.discard(current)
        session = self._open_session(client_sock, client_address, backend_sock)
        if session is None:
            return
        if self.tls is not None and not session.handshake():
            return
        session.start()

    def _unreachable(self, client_sock: socket.socket, client_address: Any, error: OSError) -> None:
        """The backend could not be reached for this client: close it, with one warning."""
        log.warning(
            "%s: cannot reach backend %s: %s; closing client %s",
            self.name,
            self.backend,
            describe_failure(error),
            PeerName(client_address),
        )
        if self.config.refuse_when_backend_down:
            # A reset, as close as an accepted client gets to a refused connect.
            client_sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
            client_sock.close()
            self._backend_down(error)
        else:
            client_sock.close()

    def _open_session(
        self,
        client_sock: socket.socket,
        client_address: Any,
        backend_sock: socket.socket,
        watcher: Any = None,
    ) -> Session | None:
        try:
            session = Session(self, client_sock, client_address, backend_sock, watcher)
        except Exception:
            log.exception("%s: cannot set up the session; closing it", PeerName(client_address))
            if watcher is not None:
                watcher.close()
            backend_sock.close()
            client_sock.close()
            return None
        self.sessions.add(session)
        self.total_sessions += 1
        return session

    def session_ended(self, session: Session) -> None:
        """Count a session that has ended (its sockets are closed) and let it go."""
        self.sessions.discard(session)
        self.bytes_to_backend += session.bytes_to_backend
        self.bytes_to_client += session.bytes_to_client
        session.release()
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "%s: session closed; %d live sessions, %s open fds",
                session.peer,
                len(self._connecting) + len(self.sessions),
                open_fds(),
            )

    def _prepare_listener(self, sock: gevent.socket.socket) -> None:
        # Accepted sockets inherit TCP_NODELAY from the listener: one call instead of one per
        # client. Small messages must not wait for Nagle's algorithm in a proxy.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.protocol.setup_listener(sock)

    def _refuse(self, client_sock: socket.socket, client_address: Any) -> None:
        """Close a client beyond ``max_connections`` at once; log at most one line a second."""
        client_sock.close()
        self.refused_connections += 1
        self._refusals_unlogged += 1
        now = self._loop.now()
        if now - self._refusal_logged_at >= 1.0:
            log.warning(
                "%d clients served, the most --max-connections allows: closed %d new "
                "client(s), the last %s",
                len(self._connecting) + len(self.sessions),
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
            "live_sessions": len(self._connecting) + len(self.sessions),
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
