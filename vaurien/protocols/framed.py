"""What the protocol-aware protocols share: framers, the exchange queue and the two loops.

A protocol built on :class:`FramedProtocol` gives two *framers* per session: one reads what the
client sends (requests), the other what the backend sends (answers). A framer is sans-IO: bytes
in, message boundaries out, never a socket. ``feed(data, pos, end)`` looks at ``data[pos:end]``
(a ``bytes`` or ``bytearray``) and returns ``(newpos, event)``:

``None``
    ``data[pos:newpos]`` belongs to the message in progress and may pass on.
:data:`HOLD`
    ``data[pos:newpos]`` was kept by the framer (an unfinished head); nothing passes yet.
a :class:`Head`
    The head of a message is complete: ``head.raw`` holds all of its bytes, the ones just fed
    (``data[pos:newpos - head.body]``) included, and passes instead of them; the ``head.body``
    bytes after it pass as they are. ``head.end`` says whether the message ends there.
an :class:`End`
    ``data[pos:newpos]`` passes and the message is complete.

``feed_eof()`` tells the end of the stream (it completes a message that ends with the
connection, such as an HTTP body without a length), and ``idle`` is true between messages. An
answer framer is told, with ``begin(request)``, which request the next answer answers (None for
data nobody asked for). Framers keep a small ``bytearray`` for an unfinished line or head and
never search the same byte twice; values and bodies are counted through, never kept. Traffic
that breaks the protocol raises :class:`~vaurien.errors.ProtocolError`, which ends the session
with one log line.

One readable event is one exchange. The client's side gets a behavior for each request: the
protocol reads exactly that request (waiting for the rest of it if needed), pushes anything after
it back with ``unread`` so that the next request is a new event, and queues an :class:`Exchange`.
The backend's side gets no behavior of its own: each answer is matched, in order, to the
exchange it answers, and the request's behavior governs it.

* ``on_before_handle`` runs before the request is read, ``on_between_handle`` once it has reached
  the backend (its answer is not read before that hook returns), ``on_after_handle`` once its
  answer has reached the client (a ``delay`` with ``before = false`` holds what comes after).
* ``send_error`` (the ``error`` and ``transient`` behaviors) reads the request and answers it with
  the protocol's own error (:meth:`FramedProtocol.error_reply`) in its place among the answers,
  after the answers to earlier requests; with ``inject`` the request reaches the backend and its
  real answer is replaced by the error.
* ``abort`` forwards the request and closes the session when its answer starts to arrive.
* Data the backend sends on its own (a greeting, a pub/sub message) passes at once.

A behavior acts once per exchange (where ``tcp`` has it act on each chunk, both ways): on the
request, or, when its ``direction`` is ``to_client``, on the answer. Then the request passes
untouched and the behavior gets the answer before any of it reaches the client: ``delay``
holds it, ``hang`` swallows it, ``bandwidth``, ``slicer`` and ``corrupt`` read it with
``_get_data`` (exactly that answer, bit by bit) and pass it on themselves. No behavior is
picked for an answer, a handshake, the rest of a request or answer a behavior is moving, nor
for the end of the client's stream: a behavior's calls are requests.

A protocol may switch a session to a plain stream (after an HTTP ``Upgrade``, SMTP
``STARTTLS``): both directions then pass bytes as the ``tcp`` protocol does, a behavior picked
for each chunk either way.

A protocol of your own gets all this by subclassing :class:`FramedProtocol`: it provides the
two framers and :meth:`FramedProtocol.error_reply`, its error form, and overrides the hooks
its exchanges need (see the class).
"""

from __future__ import annotations

import collections
import socket
from typing import Any

import gevent.event

from vaurien.behaviors.base import BaseBehavior
from vaurien.errors import ProtocolError
from vaurien.protocols.base import BaseProtocol

__all__ = [
    "ABORT",
    "COMPLETE",
    "DROP",
    "END",
    "FORWARD",
    "HOLD",
    "PARTIAL",
    "SWALLOW",
    "UNSOLICITED",
    "End",
    "Exchange",
    "FramedProtocol",
    "Head",
    "LineReader",
    "SessionState",
]

#: A framer kept the bytes it was fed (an unfinished head): nothing passes yet.
HOLD = object()

# What happens to a request (Exchange.action).
FORWARD = "forward"  # the request goes to the backend, its answer to the client
DROP = "drop"  # the request is read and dropped; the client gets the error reply
SWALLOW = "swallow"  # the request goes to the backend; its answer is replaced by the error reply
ABORT = "abort"  # the request goes to the backend; the session ends when its answer starts

# What an answer message is to the exchange it was read for (FramedProtocol._answer_end).
COMPLETE = "complete"  # the exchange's answer is complete
PARTIAL = "partial"  # part of the answer (an HTTP 100 Continue): more follows
UNSOLICITED = "unsolicited"  # nobody asked for it (a pub/sub message): it only passes

# Common options: the meaning they have for the tcp protocol.
BUFFER_OPTION = ("Largest read in bytes", int, 65536)
KEEP_ALIVE_OPTION = ("TCP keep-alive probes on both connections", bool, False)
REUSE_SOCKET_OPTION = (
    "Listen with SO_REUSEPORT so several proxies share the port",
    bool,
    False,
)


class End:
    """The end of a message. Framers return :data:`END` or an instance describing the message."""

    __slots__ = ()
    end = True
    raw = None


#: A message ended and there is nothing more to say about it.
END = End()


class Head:
    """A complete message head: ``raw`` is all of its bytes, ``held`` how many of them came
    from earlier feeds, ``end`` whether the message ends with it. ``body`` bytes that follow
    the head in the same feed may come with it (a whole small body): they pass as they are,
    and the message then ends with the event. Protocols subclass it to carry what they
    parsed."""

    __slots__ = ("raw", "held", "end", "body")

    def __init__(self, raw: bytes, held: int = 0, end: bool = False, body: int = 0) -> None:
        self.raw = raw
        self.held = held
        self.end = end
        self.body = body

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.raw[:40]!r} end={self.end}>"


class LineReader:
    """Finds the end of a line in fed data without searching any byte twice.

    ``take(data, pos, end)`` returns ``(line, newpos)``: the complete line (with its ``\\n``)
    as ``bytes`` once its end is in ``data``, else ``None`` after keeping ``data[pos:end]``.
    A line longer than ``limit`` is a protocol error.
    """

    __slots__ = ("partial", "limit", "what")

    def __init__(self, limit: int, what: str = "line") -> None:
        self.partial = bytearray()
        self.limit = limit
        self.what = what

    def take(self, data: Any, pos: int, end: int) -> tuple[bytes | None, int]:
        i = data.find(b"\n", pos, end)
        partial = self.partial
        if i < 0:
            if len(partial) + end - pos > self.limit:
                raise ProtocolError(f"{self.what} longer than {self.limit} bytes")
            partial += data[pos:end]
            return None, end
        if partial:
            partial += data[pos : i + 1]
            line = bytes(partial)
            partial.clear()
        else:
            line = bytes(data[pos : i + 1])
        if len(line) > self.limit:
            raise ProtocolError(f"{self.what} longer than {self.limit} bytes")
        return line, i + 1

    @property
    def held(self) -> int:
        """How many bytes of an unfinished line are kept."""
        return len(self.partial)


class Exchange:
    """One request and its answer, as the client sees them.

    ``behavior`` is the request's behavior, ``action`` what happens to it (:data:`FORWARD`,
    :data:`DROP`, :data:`SWALLOW`, :data:`ABORT`), ``request`` what the request framer said
    about it. ``expects`` is false for a request that gets no answer (the protocol says so
    when the request is read whole). ``waiting`` is true while the backend owes the answer,
    ``sent`` once the whole request was read, ``released`` once ``on_between_handle``
    returned. ``reply`` is written to the client in the exchange's turn (an error reply),
    ``after`` runs then (a behavior's ``on_after_handle`` and the direction it gets), and
    ``close_after`` ends the session. ``answer_behavior`` is a behavior whose ``direction`` is
    ``to_client``: the request passed untouched, the behavior acts on its answer.
    """

    __slots__ = (
        "behavior",
        "action",
        "request",
        "expects",
        "waiting",
        "sent",
        "released",
        "reply",
        "after",
        "close_after",
        "gate",
        "cut",
        "answer_behavior",
        "answer_started",
    )

    def __init__(self, behavior: Any, action: str) -> None:
        self.behavior = behavior
        self.action = action
        self.request: Any = None
        self.expects = True
        self.waiting = action is not DROP
        self.sent = False
        self.released = False
        self.reply: bytes | None = None
        self.after: Any = None
        self.close_after = False
        self.gate = False
        self.cut = False
        self.answer_behavior: Any = None  # a to_client behavior: it acts on the answer
        self.answer_started = False

    def __repr__(self) -> str:
        name = self.behavior.name if self.behavior is not None else "-"
        return f"<Exchange {name} {self.action} {self.request!r} waiting={self.waiting}>"


class SessionState:
    """What a framed protocol keeps for one session: its two framers and the exchange queue.

    ``queue`` holds the exchanges whose answers have not all reached the client, oldest first.
    ``stream`` is true once the session became a plain byte stream; ``closing`` once no more
    requests may pass (the connection ends after the answers due). Protocols keep their own
    per-session facts as attributes of a subclass.
    """

    def __init__(self, session: Any, requests: Any, answers: Any) -> None:
        self.session = session
        self.requests = requests
        self.answers = answers
        self.queue: collections.deque[Exchange] = collections.deque()
        self.target: Exchange | None = None  # the exchange the answer in progress belongs to
        self.passing = True  # whether the answer in progress reaches the client
        self.stream = False
        self.closing = False
        self.gate: Exchange | None = None  # requests wait until this exchange is answered
        self.partial: Exchange | None = None  # a request a behavior read only part of
        self.answering: Exchange | None = None  # whose answer a to_client behavior is reading
        self.answer_partial: Exchange | None = None  # an answer it read only part of
        self.answered: Exchange | None = None  # an answer it read to the end
        self.advancing = False
        self._changed: gevent.event.Event | None = None

    def wait(self) -> None:
        """Wait until :meth:`notify` (a released request, an exchange done)."""
        if self._changed is None:
            self._changed = gevent.event.Event()
        self._changed.wait()

    def notify(self) -> None:
        """Wake whoever waits in :meth:`wait`."""
        changed = self._changed
        if changed is not None:
            self._changed = None
            changed.set()


def _hooks(cls: type) -> tuple[bool, bool]:
    """Whether a behavior class does something in on_between_handle and on_after_handle
    (the base hooks do nothing: most behaviors need neither call)."""
    return tuple(
        getattr(cls, hook, None) not in (None, getattr(BaseBehavior, hook))
        for hook in ("on_between_handle", "on_after_handle")
    )


class FramedProtocol(BaseProtocol):
    """The base of protocols that know requests and answers (see the module documentation).

    A subclass provides ``request_framer()`` and ``answer_framer()`` (new framers for a
    session), :meth:`error_reply` (its error form) and, where its exchanges need it, the hooks
    ``_request_head``, ``_request_end``, ``_answer_head`` and ``_answer_end``.
    """

    duplex = True
    errors_on_request = True
    exchanges = True
    #: Whether the ``keep_alive`` option means TCP keep-alive probes (as for ``tcp``).
    tcp_keep_alive = True
    options = {
        "buffer": BUFFER_OPTION,
        "keep_alive": KEEP_ALIVE_OPTION,
        "reuse_socket": REUSE_SOCKET_OPTION,
    }

    def __init__(self) -> None:
        super().__init__()
        self._buffer: bytearray | None = None
        self._view: memoryview | None = None
        self._hooks: dict[type, tuple[bool, bool]] = {}

    # -- what a protocol provides -------------------------------------------------------------

    def request_framer(self) -> Any:
        """A new framer for what a client sends."""
        raise NotImplementedError

    def answer_framer(self) -> Any:
        """A new framer for what the backend sends."""
        raise NotImplementedError

    def new_session_state(self, session: Any) -> SessionState:
        return SessionState(session, self.request_framer(), self.answer_framer())

    def error_reply(self, state: SessionState, exchange: Exchange) -> bytes | None:
        """The protocol's error answer to ``exchange``'s request, or None when the request
        gets no answer at all (an answer would then be taken for the next request's)."""
        raise NotImplementedError

    def _request_head(self, state: SessionState, exchange: Exchange, head: Head) -> bytes | None:
        """A request head is complete: return other bytes to send instead of ``head.raw``."""
        return None

    def _request_end(
        self, state: SessionState, exchange: Exchange | None, message: Any
    ) -> bytes | None:
        """A request was read whole: set what the exchange needs (``request``, ``expects``
        false when no answer comes, ``gate`` ...). ``exchange`` is None for traffic that passes
        without one (a handshake). ``exchange.action`` says whether the backend gets the
        request (anything but :data:`DROP`): only then may what the server knows change.
        May return bytes the proxy sends to the backend after the request."""
        exchange.request = message
        return None

    def _answer_head(
        self, state: SessionState, target: Exchange | None, head: Head
    ) -> bytes | None:
        """An answer's head is complete: ``state.passing`` may be changed, and other bytes
        returned to send instead of ``head.raw``."""
        return None

    def _answer_end(self, state: SessionState, target: Exchange | None, message: Any) -> str:
        """An answer message is complete: :data:`COMPLETE`, :data:`PARTIAL` or
        :data:`UNSOLICITED` for ``target``, the exchange it was read for."""
        return COMPLETE if target is not None else UNSOLICITED

    # -- the proxy's entry points ------------------------------------------------------------

    def wants_behavior(self, session: Any, to_backend: bool) -> bool:
        """A behavior for each request; none for answers, handshakes, continuations, nor for
        the end of the client's stream (a behavior's calls are requests)."""
        state = session.state
        if not to_backend or state.stream:
            return state.stream  # a plain stream: each chunk, as for tcp
        if state.closing or state.partial or state.requests.passive:
            return False
        client = session.client
        if not client.has_pending:
            buf, view = self._buffers()
            count = client.recv_into(buf)
            if not count:
                return False  # the end of the stream: no request to pick a behavior for
            client.unread(view[:count])  # a behavior may wait before it reads: keep a copy
        return True

    def handle(self, source: Any, dest: Any, to_backend: bool, behavior: Any) -> bool:
        state = source.session.state
        if state.stream:
            if behavior is not None and behavior.sits_out is to_backend:
                behavior = source.behavior = self.proxy.mix.dummy  # its direction is the other
            return BaseProtocol.handle(self, source, dest, to_backend, behavior)
        if not to_backend:
            self._answer(source, dest)
            return True
        if behavior is None:
            partial = state.partial
            if partial is None or partial.behavior is None:
                return self._handle(source, dest, to_backend) is not False
            # The rest of a request a behavior took only part of: the same behavior goes on.
            behavior = source.behavior = partial.behavior
        answer_behavior = None
        if behavior.sits_out is True:
            # direction = to_client: the request passes untouched, the behavior acts on its
            # answer.
            answer_behavior = behavior
            behavior = source.behavior = self.proxy.mix.dummy
        if behavior.on_before_handle(self, source, dest, to_backend):
            self._request(source, dest, FORWARD, True, answer_behavior)
        return True

    def _get_data(self, sock: Any, size: int | None = None) -> bytes:
        """What a behavior reads from ``sock``: from the client, exactly one request; from the
        backend, for a behavior acting on an answer, that answer.

        Behaviors that move the bytes themselves (``bandwidth``, ``slicer``, ``corrupt`` ...)
        get the bytes of one whole request (or answer), or its first ``size`` bytes: the rest
        comes in the next events, handed to the same behavior. A request is queued as
        forwarded, so its answer is matched as usual.
        """
        state = sock.session.state
        size = size or self.buffer_size
        if state.stream:
            return sock.read(size)
        if sock.role != "client":
            if state.answering is not None:
                return self._take_answer(state, sock, size)
            return sock.read(size)
        if state.closing:
            return sock.read(size)
        return self._take_request(state, sock, size)

    def _handle(self, source: Any, dest: Any, to_backend: bool) -> bool:
        state = source.session.state
        if state.stream:
            self._pass_chunk(source, dest, to_backend)
        elif to_backend:
            self._request(source, dest, FORWARD, hooks=False)
        else:
            self._answer(source, dest)
        return True

    def send_error(self, source: Any, dest: Any, to_backend: bool, inject: bool = False) -> None:
        """Answer this request with the protocol's error, in its turn among the answers.

        With ``inject`` the request still reaches the backend (what it does, it does) and the
        real answer is replaced by the error.
        """
        if to_backend and not source.session.state.stream:
            self._request(source, dest, SWALLOW if inject else DROP, hooks=False)
        else:
            BaseProtocol.send_error(self, source, dest, to_backend, inject)

    def abort(self, source: Any, dest: Any, to_backend: bool) -> None:
        """Forward this request; end the session when its answer starts to arrive."""
        if to_backend and not source.session.state.stream:
            self._request(source, dest, ABORT, hooks=False)
        else:
            BaseProtocol.abort(self, source, dest, to_backend)

    def setup_listener(self, sock: socket.socket) -> None:
        if self.settings.get("reuse_socket"):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)

    def setup_socket(self, sock: socket.socket, role: str) -> None:
        if self.tcp_keep_alive and self.settings.get("keep_alive"):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)

    # -- the buffer --------------------------------------------------------------------------

    def _buffers(self) -> tuple[bytearray, memoryview]:
        # One buffer per proxy serves every session and both directions. Its content is valid
        # until the next switch to another greenlet: sendall copies what it cannot send at
        # once, and before anything else that may wait, the loops push the unread rest back
        # into the endpoint (Endpoint.unread).
        if self._buffer is None:
            self._buffer = bytearray(self.buffer_size)
            self._view = memoryview(self._buffer)
        return self._buffer, self._view

    def _pass_chunk(self, source: Any, dest: Any, to_backend: bool) -> None:
        buf, view = self._buffers()
        count = source.recv_into(buf)
        if count:
            dest.sendall(view[:count])
            if to_backend:
                self._between(source, dest, to_backend)

    # -- requests ------------------------------------------------------------------------------

    def _take_request(self, state: SessionState, source: Any, size: int) -> bytes:
        """Read one request (at most about ``size`` bytes of it) and return its bytes."""
        framer = state.requests
        buf, _ = self._buffers()
        exchange = state.partial
        passive = framer.passive
        out = bytearray()
        while len(out) < size:
            count = source.recv_into(buf, min(len(buf), size - len(out)))
            if not count:
                framer.feed_eof()
                break
            if exchange is None and not passive:
                exchange = Exchange(source.behavior, FORWARD)
                state.queue.append(exchange)
            pos = 0
            while pos < count:
                newpos, event = framer.feed(buf, pos, count)
                if event is None:
                    out += buf[pos:newpos]
                elif event is not HOLD:
                    if event.raw is not None:
                        replacement = (
                            self._request_head(state, exchange, event)
                            if exchange is not None
                            else None
                        )
                        out += replacement if replacement is not None else event.raw
                        if event.body:
                            out += buf[newpos - event.body : newpos]
                    else:
                        out += buf[pos:newpos]
                    if event.end or (exchange is not None and exchange.cut):
                        if newpos < count:
                            source.unread(buf[newpos:count])
                        state.partial = None
                        self._request_done(
                            state, exchange, event, source, source.session.backend, out.extend
                        )
                        return bytes(out)
                pos = newpos
        state.partial = exchange
        return bytes(out)

    def _request(
        self, source: Any, dest: Any, action: str, hooks: bool, answer_behavior: Any = None
    ) -> None:
        """Read exactly one request from the client and do ``action`` with it."""
        state = source.session.state
        gate = state.gate
        if gate is not None:
            # The answer decides what comes next (an upgrade, a mail body): wait for it, unless
            # the session's events run one at a time (the answer could not come meanwhile;
            # clients wait for it anyway, the gate only guards against those that do not).
            while gate.waiting and not source.session.closed and not self.proxy.mix.exclusive:
                state.wait()
            state.gate = None
        if state.stream:
            self._pass_chunk(source, dest, True)
            return
        if state.closing:
            # The connection ends after the answers due: what the client sends now is dropped.
            self._get_data(source)
            return
        framer = state.requests
        shared, shared_view = self._buffers()
        passing = action is not DROP
        exchange = state.partial
        state.partial = None
        passive = framer.passive
        while True:
            if source.has_pending:
                # Data read ahead (wants_behavior looks for the end of the stream so): framed
                # where it is, without a copy into the buffer.
                buf = source.recv(1 << 62)
                view = memoryview(buf)
                count = len(buf)
            else:
                buf, view = shared, shared_view
                count = source.recv_into(buf)
            if not count:
                framer.feed_eof()
                return
            if exchange is None and not passive:
                exchange = Exchange(source.behavior, action)
                exchange.answer_behavior = answer_behavior
                state.queue.append(exchange)
            pos = out = 0
            while pos < count:
                newpos, event = framer.feed(buf, pos, count)
                if event is None:
                    pos = newpos
                    continue
                if event is HOLD:
                    if passing and out < pos:
                        dest.sendall(view[out:pos])
                    out = pos = newpos
                    continue
                raw = event.raw
                if raw is not None:
                    replacement = (
                        self._request_head(state, exchange, event) if exchange is not None else None
                    )
                    if passing and (replacement is not None or event.held):
                        if out < pos:
                            dest.sendall(view[out:pos])
                        dest.sendall(replacement if replacement is not None else raw)
                        out = newpos - event.body
                    elif not passing:
                        out = newpos
                    if not event.end and (exchange is None or not exchange.cut):
                        pos = newpos
                        continue
                if passing and out < newpos:
                    dest.sendall(view[out:newpos])
                if newpos < count:
                    source.unread(buf[newpos:count])
                self._request_done(
                    state, exchange, event, source, dest, dest.sendall if passing else None, hooks
                )
                return
            if passing and out < count:
                dest.sendall(view[out:count])

    def _request_done(
        self,
        state: SessionState,
        exchange: Exchange | None,
        message: Any,
        source: Any,
        dest: Any,
        send: Any,
        hooks: bool = False,
    ) -> None:
        """The request was read whole (and passed, unless dropped): queue what it needs."""
        if exchange is None:  # traffic that passes without an exchange
            trailer = self._request_end(state, None, message)
            if trailer and send is not None:
                send(trailer)
            return
        exchange.sent = True
        trailer = self._request_end(state, exchange, message)
        if trailer and send is not None and exchange.action is not DROP:
            send(trailer)
        action = exchange.action
        exchange.waiting = exchange.expects and action is not DROP
        if action is DROP:
            exchange.reply = self.error_reply(state, exchange)
            exchange.released = True
            if exchange.close_after:
                state.closing = True
        else:
            if action is SWALLOW and exchange.waiting:
                exchange.reply = self.error_reply(state, exchange)
            elif action is ABORT:
                state.closing = True
                if not exchange.waiting:
                    exchange.close_after = True
            if exchange.close_after:
                state.closing = True
            if exchange.gate:
                state.gate = exchange
            behavior = exchange.behavior
            if behavior is not None:
                kind = type(behavior)
                between, after = self._hooks.get(kind) or self._hooks.setdefault(kind, _hooks(kind))
                if after and hooks:
                    exchange.after = (behavior.on_after_handle, True)
                if between:
                    behavior.on_between_handle(self, source, dest, True)
            exchange.released = True
            if state._changed is not None:
                state.notify()
            if exchange.waiting:
                return
        self._advance(state)

    # -- answers -------------------------------------------------------------------------------

    def _answer(self, source: Any, dest: Any) -> None:
        """Pass what the backend sent, matching each answer to its exchange."""
        state = source.session.state
        framer = state.answers
        queue = state.queue
        buf, view = self._buffers()
        if state.answer_partial is not None:
            # The rest of an answer a behavior took only part of: the same behavior goes on.
            if not self._answer_behavior(state, state.answer_partial, source, dest):
                return
        while True:
            count = source.recv_into(buf)
            if not count:
                message = framer.feed_eof()
                if message is not None and state.target is not None:
                    self._answered(state, state.target, message)
                return
            pos = out = 0
            parked = False
            while pos < count:
                if framer.idle:
                    # A new answer message starts: whose is it?
                    if queue and not queue[0].waiting:
                        # Exchanges done or answered by the proxy go first.
                        if state.passing and out < pos:
                            dest.sendall(view[out:pos])
                        source.unread(buf[pos:count])
                        parked = True
                        self._advance(state)
                        if queue and not queue[0].waiting and not state.session.closed:
                            state.wait()  # another greenlet is finishing them
                        break
                    target = queue[0] if queue else None
                    if target is not None:
                        if target.sent and not target.released:
                            # on_between_handle is running: the answer waits for it.
                            if state.passing and out < pos:
                                dest.sendall(view[out:pos])
                            source.unread(buf[pos:count])
                            parked = True
                            state.wait()
                            break
                        if target.answer_behavior is not None and not target.answer_started:
                            # A to_client behavior acts on this answer before any of it passes.
                            if state.passing and out < pos:
                                dest.sendall(view[out:pos])
                            source.unread(buf[pos:count])
                            parked = True
                            target.answer_started = True
                            state.target = target
                            self._answer_behavior(state, target, source, dest)
                            if state.answer_partial is not None:
                                return  # the rest goes to the behavior, event by event
                            break
                        if target.action is ABORT:
                            if state.passing and out < pos:
                                dest.sendall(view[out:pos])
                            state.session.close()
                            return
                        passing = target.action is not SWALLOW
                    else:
                        passing = True
                    if passing != state.passing:
                        if state.passing and out < pos:
                            dest.sendall(view[out:pos])
                        out = pos
                        state.passing = passing
                    state.target = target
                    framer.begin(target.request if target is not None else None)
                newpos, event = framer.feed(buf, pos, count)
                if event is None:
                    pos = newpos
                    continue
                if event is HOLD:
                    if state.passing and out < pos:
                        dest.sendall(view[out:pos])
                    out = pos = newpos
                    continue
                if event.raw is not None:
                    was_passing = state.passing
                    replacement = self._answer_head(state, state.target, event)
                    if was_passing and out < pos:
                        dest.sendall(view[out:pos])
                    if not state.passing:
                        out = newpos
                    elif replacement is not None or event.held:
                        dest.sendall(replacement if replacement is not None else event.raw)
                        out = newpos - event.body
                    else:
                        out = pos
                    if not event.end:
                        pos = newpos
                        continue
                # The message is complete; its bytes stay in the range [out, pos) that passes.
                target = state.target
                verdict = self._answer_end(state, target, event)
                pos = newpos
                if state.stream:
                    # The session became a plain stream (an upgrade): the rest passes as it is.
                    start = out if state.passing else pos
                    if start < count:
                        dest.sendall(view[start:count])
                    return
                if verdict is not COMPLETE or target is None:
                    continue
                passed = state.passing
                state.target = None
                state.passing = True
                target.waiting = False
                if (
                    queue[0] is target
                    and target.reply is None
                    and target.after is None
                    and not target.close_after
                ):
                    queue.popleft()
                    if state.gate is target:
                        state.notify()
                    if not queue or queue[0].waiting:
                        continue
                # Replies, hooks and closes may switch greenlets: park the rest first.
                if passed and out < pos:
                    dest.sendall(view[out:pos])
                if pos < count:
                    source.unread(buf[pos:count])
                    parked = True
                self._advance(state)
                break
            else:
                if state.passing and out < count:
                    dest.sendall(view[out:count])
            if not parked or state.session.closed:
                return

    def _answer_behavior(self, state: SessionState, target: Exchange, source, dest) -> bool:
        """Run the to_client behavior of ``target`` on its answer (or the answer's rest);
        true when the answer is left to pass as usual."""
        behavior = target.answer_behavior
        state.answering = target
        state.answer_partial = None
        source.behavior = behavior
        try:
            passes = behavior.on_before_handle(self, source, dest, False)
        finally:
            state.answering = None
        if passes:
            kind = type(behavior)
            _, after = self._hooks.get(kind) or self._hooks.setdefault(kind, _hooks(kind))
            if after:
                target.after = (behavior.on_after_handle, False)
            return True
        if state.answered is target:  # the behavior passed the whole answer itself
            state.answered = None
            state.target = None
            state.passing = True
            target.waiting = False
            self._advance(state)
        return False

    def _take_answer(self, state: SessionState, source: Any, size: int) -> bytes:
        """Read (at most about ``size`` bytes of) the answer a behavior acts on; return what
        of it would pass."""
        target = state.answering
        if state.answered is target:
            return source.read(size)  # past the answer (a behavior that reads on: hang)
        framer = state.answers
        buf, _ = self._buffers()
        out = bytearray()
        while len(out) < size:
            count = source.recv_into(buf, min(len(buf), size - len(out)))
            if not count:
                message = framer.feed_eof()
                if message is not None and self._answer_end(state, target, message) is COMPLETE:
                    state.answered = target
                    return bytes(out)
                break
            pos = 0
            while pos < count:
                if framer.idle:
                    framer.begin(target.request)
                newpos, event = framer.feed(buf, pos, count)
                if event is None:
                    if state.passing:
                        out += buf[pos:newpos]
                elif event is not HOLD:
                    if event.raw is not None:
                        replacement = self._answer_head(state, target, event)
                        if state.passing:
                            out += replacement if replacement is not None else event.raw
                            if event.body:
                                out += buf[newpos - event.body : newpos]
                    elif state.passing:
                        out += buf[pos:newpos]
                    if event.end:
                        verdict = self._answer_end(state, target, event)
                        state.passing = True
                        if verdict is COMPLETE or state.stream:
                            if newpos < count:
                                source.unread(buf[newpos:count])
                            state.answered = target
                            return bytes(out)
                pos = newpos
        state.answer_partial = target
        return bytes(out)

    def _answered(self, state: SessionState, target: Exchange, message: Any) -> None:
        """An answer completed at the end of the stream."""
        if self._answer_end(state, target, message) is COMPLETE:
            state.target = None
            target.waiting = False
            self._advance(state)

    def _advance(self, state: SessionState) -> None:
        """Finish the exchanges at the head of the queue that wait for nothing more: write
        their replies, run their ``on_after_handle`` hooks, close when they say so."""
        if state.advancing:
            return
        queue = state.queue
        session = state.session
        client, backend = session.client, session.backend
        state.advancing = True
        try:
            while queue:
                exchange = queue[0]
                if exchange.waiting or not exchange.released:
                    break
                if exchange.reply:
                    client.sendall(exchange.reply)
                if exchange.after is not None:
                    hook, to_backend = exchange.after
                    if to_backend:
                        hook(self, client, backend, True)
                    else:
                        hook(self, backend, client, False)
                queue.popleft()
                if exchange.close_after:
                    session.close()
                    break
        finally:
            state.advancing = False
            state.notify()
