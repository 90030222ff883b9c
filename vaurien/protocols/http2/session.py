"""One proxied HTTP/2 connection: the relay on the session's sockets, and a greenlet for each
stream whose behavior acts on it.

A stream whose behavior changes nothing (``dummy``, or a pick that sits this direction out)
is relayed inline by the session's pumps, with no greenlet. A stream whose behavior acts gets
a greenlet running the behavior's hooks with :class:`StreamSide` values in place of the
session's endpoints: reading one gives what its peer sent on that stream, writing one sends
on that stream. So ``delay`` holds one stream while the others flow, ``bandwidth`` paces one
stream's DATA, ``hang`` swallows one stream.
"""

from __future__ import annotations

import logging
from typing import Any

import gevent
import gevent.event

from vaurien.endpoint import EOF
from vaurien.errors import VaurienError
from vaurien.protocols.http2.relay import CANCEL, Leg, Relay, Stream

log = logging.getLogger(__name__)


def _acts(behavior: Any, hook: str) -> bool:
    """Whether ``behavior``'s ``hook`` does something (the base class's do nothing)."""
    function = getattr(type(behavior), hook, None)
    return function is not None and not getattr(function, "does_nothing", False)


class Hooks:
    """Which hooks of a behavior class act."""

    __slots__ = ("before", "between", "after", "any")

    def __init__(self, behavior: Any) -> None:
        self.before = _acts(behavior, "on_before_handle")
        self.between = _acts(behavior, "on_between_handle")
        self.after = _acts(behavior, "on_after_handle")
        self.any = self.before or self.between or self.after


class StreamFields:
    """What rules match in a stream's request headers: ``method``, ``path`` (``:path`` up to
    its query), ``host`` (``:authority``) and ``header.NAME``."""

    __slots__ = ("_head",)

    def __init__(self, head: list[Any]) -> None:
        self._head = head

    def get(self, name: str) -> str | None:
        if name == "method":
            wanted = b":method"
        elif name == "path":
            value = self.get_header(b":path")
            return value.partition("?")[0] if value is not None else None
        elif name == "host":
            wanted = b":authority"
        elif name.startswith("header."):
            wanted = name[7:].encode("latin-1")
        else:
            return None
        return self.get_header(wanted)

    def get_header(self, wanted: bytes) -> str | None:
        """The value of header ``wanted`` (lowercase, as HTTP/2 has them); repeated ones
        joined with ``", "``."""
        values = [value for name, value in self._head if name == wanted]
        return b", ".join(values).decode("latin-1") if values else None


class StreamSide:
    """One side of one stream, as a behavior sees it in place of an endpoint.

    ``role`` is ``"client"`` or ``"backend"``. Reading gives what that peer sent on the stream
    (the request body from the client, the response body from the backend), :data:`EOF` at its
    end; :meth:`sendall` sends DATA to that peer on the stream. ``session`` is the connection's
    session: closing or resetting it acts on the whole connection. ``states`` hold behavior
    state per stream and side.
    """

    __slots__ = ("role", "session", "stream", "connection", "behavior", "states", "moved")

    def __init__(self, connection: Connection, stream: Stream, role: str) -> None:
        self.role = role
        self.connection = connection
        self.session = connection.session
        self.stream = stream
        self.behavior: Any = stream.behavior
        self.states: dict[Any, Any] = {}
        self.moved = 0  # bytes read or sent through this side

    def __repr__(self) -> str:
        return f"<StreamSide {self.role} of {self.stream!r}>"

    @property
    def incoming(self) -> Leg:
        """The leg this side's peer sends on."""
        return self.stream.request if self.role == "client" else self.stream.response

    @property
    def outgoing(self) -> Leg:
        """The leg that goes to this side's peer."""
        return self.stream.response if self.role == "client" else self.stream.request

    @property
    def eof(self) -> bool:
        """Whether everything the peer sent on the stream was read."""
        return self.incoming.consumed or self.stream.done

    @property
    def closed(self) -> bool:
        """Whether the stream is over."""
        return self.stream.done

    def read(self, size: int = 65536) -> bytes:
        """Wait for what the peer sent on the stream and return up to ``size`` bytes of it."""
        return self.connection.take(self, size)

    recv = read

    def sendall(self, data: Any) -> None:
        """Send ``data`` to the peer on the stream; return once it left the proxy's buffers."""
        self.connection.put(self, data)

    def close(self) -> None:
        """End the stream: both sides get RST_STREAM CANCEL."""
        self.connection.relay.reset(self.stream, CANCEL)
        self.connection.send()

    reset = close


class Connection:
    """What the ``http2`` protocol keeps for one session (``session.state``)."""

    __slots__ = ("protocol", "session", "relay", "greenlets", "_progress", "__weakref__")

    def __init__(self, protocol: Any, session: Any) -> None:
        self.protocol = protocol
        self.session = session
        self.relay = Relay(self._on_request, self._on_response)
        self.greenlets: set[gevent.Greenlet] = set()
        self._progress: gevent.event.Event | None = None
        session.backend.write(self.relay.output(self.relay.backend))  # the preface
        # The stream greenlets end with the session.
        link = getattr(session, "link", None)
        if link is not None:
            link(self._ended)

    # -- the pumps' events ---------------------------------------------------------------------

    def receive(self, source: Any, to_backend: bool) -> bool:
        """Read once from ``source`` and relay; false at its end of stream (the session ends)."""
        relay = self.relay
        data = source.recv(self.protocol.buffer_size)
        if not data:
            if to_backend:
                # The client is gone: so are its streams.
                relay.close(relay.backend)
                self.flush()
            else:
                self._backend_gone()
            return False
        relay.receive(relay.client if to_backend else relay.backend, data)
        self.send()
        return True

    def _backend_gone(self) -> None:
        """The backend closed: finish what it answered in full, then end the connection."""
        relay = self.relay
        relay.close(relay.client)
        relay.refusing = True
        self.send()

        def deliverable() -> bool:
            # A response the backend sent in full that has not reached the client yet.
            return any(
                leg.src_ended and not leg.dst_ended and not leg.dropped
                for leg in [stream.response for stream in relay.client.streams.values()]
            )

        while deliverable() and not self.session.closed:
            self.wait_progress()

    def flush(self) -> None:
        """Write what the relay has for each side, without waiting."""
        session = self.session
        if session.closed:
            raise gevent.GreenletExit
        relay = self.relay
        data = relay.output(relay.client)
        if data:
            session.client.write(data)
        data = relay.output(relay.backend)
        if data:
            session.backend.write(data)
        progress = self._progress
        if progress is not None:
            self._progress = None
            progress.set()

    def send(self) -> None:
        """Write what the relay has for each side and wait until the sockets took it."""
        self.flush()
        session = self.session
        session.client.drain()
        session.backend.drain()

    def wait_progress(self) -> None:
        """Wait until something was relayed."""
        if self._progress is None:
            self._progress = gevent.event.Event()
        self._progress.wait()

    # -- picks ---------------------------------------------------------------------------------

    def _on_request(self, stream: Stream) -> None:
        session = self.session
        fields = None
        if session.wants_fields() or session.names_requests():
            fields = StreamFields(stream.request.head)  # a dashboard's fault feed names it
        behavior = session.pick(fields=fields)
        stream.behavior = behavior
        hooks = self.protocol.hooks_of(behavior)
        if not hooks.any:
            return  # relayed inline
        relay = self.relay
        if behavior.sits_out is True:  # it acts on the response: its greenlet starts then
            relay.hold(stream.response)
            return
        relay.hold(stream.request)
        if hooks.between:
            relay.hold(stream.response)  # on_between_handle runs before the response goes on
        self._spawn(self._run_request, stream, hooks)

    def _on_response(self, stream: Stream) -> None:
        behavior = stream.behavior
        if behavior is not None and behavior.sits_out is True:
            self._spawn(self._run_response, stream, self.protocol.hooks_of(behavior))

    def _spawn(self, function: Any, stream: Stream, hooks: Hooks) -> None:
        stream.waiter = gevent.event.Event()
        greenlet = gevent.spawn(self._contain, function, stream, hooks)
        self.greenlets.add(greenlet)

    def _ended(self, _: Any) -> None:
        for greenlet in list(self.greenlets):
            greenlet.kill(block=False)

    def _contain(self, function: Any, stream: Stream, hooks: Hooks) -> None:
        """Run a stream's greenlet: a failure ends the session, never the proxy."""
        session = self.session
        try:
            function(stream, hooks)
        except gevent.GreenletExit:
            pass
        except OSError as e:
            log.debug("%s: %s", session.peer, e)
            session.close()
        except VaurienError as e:
            log.warning("%s: %s", session.peer, e)
            session.close()
        except Exception:
            log.exception(
                "%s: error in stream %d; closing the session", session.peer, stream.front_id
            )
            session.close()
        finally:
            stream.waiter = None
            self.greenlets.discard(gevent.getcurrent())

    # -- a stream's greenlet -------------------------------------------------------------------

    def _run_request(self, stream: Stream, hooks: Hooks) -> None:
        """The behavior of a stream, acting on its request."""
        behavior = stream.behavior
        protocol = self.protocol
        client = StreamSide(self, stream, "client")
        backend = StreamSide(self, stream, "backend")
        relay = self.relay
        if hooks.before:
            self._event(behavior, client, backend, True)
        else:
            relay.release(stream.request)
            self.send()
        response = stream.response
        if hooks.between and stream.back_id is not None and not stream.done:
            self.wait(stream, lambda: stream.request.dst_ended or stream.done)
            behavior.on_between_handle(protocol, client, backend, True)
        if response.held:
            relay.release(response)
            self.send()
        if hooks.after:
            self.wait(stream, lambda: stream.done)
            behavior.on_after_handle(protocol, client, backend, True)

    def _run_response(self, stream: Stream, hooks: Hooks) -> None:
        """The behavior of a stream, acting on its response (``direction = to_client``)."""
        behavior = stream.behavior
        backend = StreamSide(self, stream, "backend")
        client = StreamSide(self, stream, "client")
        if hooks.before:
            self._event(behavior, backend, client, False)
        else:
            self.relay.release(stream.response)
            self.send()
        if hooks.after:
            self.wait(stream, lambda: stream.done)
            behavior.on_after_handle(self.protocol, backend, client, False)

    def _event(self, behavior: Any, source: StreamSide, dest: StreamSide, to_backend: bool):
        """Run ``on_before_handle`` on one leg: true lets the leg go on, false means the
        behavior moves its data itself, and gets the leg again until all of it is read."""
        protocol = self.protocol
        relay = self.relay
        stream = source.stream
        leg = source.incoming
        session = self.session
        source.behavior = behavior
        while True:
            moved = source.moved + dest.moved
            if behavior.on_before_handle(protocol, source, dest, to_backend):
                relay.release(leg)
                self.send()
                return
            if session.closed or stream.done or stream.answered or leg.dropped:
                return
            if stream.abort or stream.replace is not None:
                return
            if leg.consumed:
                relay.finish(leg)  # what it sent is the leg's data; then the end goes on
                self.send()
                return
            if moved == source.moved + dest.moved:
                log.error(
                    "%s: %r returned without reading the data of its stream; "
                    "closing the session rather than looping",
                    session.peer,
                    behavior.name,
                )
                session.close()
                return

    # -- what a StreamSide does ------------------------------------------------------------------

    def take(self, side: StreamSide, size: int) -> bytes:
        """Up to ``size`` bytes of what ``side``'s peer sent on the stream (waiting for them)."""
        relay = self.relay
        leg = side.incoming
        stream = side.stream
        while True:
            data = relay.take(leg, size)
            if data is not None:
                if not data:
                    return EOF
                side.moved += len(data)
                self.flush()  # the credit given back
                return data
            self.wait(stream, lambda: leg.pending or leg.src_ended or stream.done)

    def put(self, side: StreamSide, data: Any) -> None:
        """Send ``data`` to ``side``'s peer on the stream; wait until it left the buffers."""
        relay = self.relay
        leg = side.outgoing
        stream = side.stream
        self.wait(stream, lambda: leg.head is not None or stream.done)
        side.moved += len(data) or 1  # an empty write opens the leg: that is progress too
        relay.put(leg, data)
        self.send()
        self.wait(stream, lambda: not leg.outbox or stream.done or leg.dropped)

    def wait(self, stream: Stream, ready: Any) -> None:
        """Wait until ``ready()`` is true; the relay wakes the stream's waiter as it changes."""
        waiter = stream.waiter
        while not ready():
            waiter.clear()
            if ready():
                return
            waiter.wait()
