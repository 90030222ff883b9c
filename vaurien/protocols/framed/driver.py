"""The framed driver: requests forwarded as they are framed, answers matched to them in order.

Each readable event of the client's side is one read: every complete request in it gets its
own pick from the mix, and the requests whose behavior changes nothing before they reach the
backend (``dummy``, a ``delay`` after the exchange, a behavior acting on the answer) are
forwarded together, in the batch in which they arrived. A request whose behavior acts on it
(holds it, answers it with an error, moves its bytes itself) stops the batch: what came before
it is forwarded, it gets the event to itself, and what follows waits behind it, so keeping the
order costs only what that behavior costs.

Every request is queued as an :class:`~vaurien.protocols.framed.exchange.Exchange`. Each
answer the backend sends is matched to the oldest exchange that is owed one, and the answers
to the client keep the requests' order: an error reply the proxy makes, or an exchange waiting
for its ``on_after_handle``, is written in its turn. Bytes of the backend's answers pass in the
batches in which they arrive.

One loop frames each side. Where the bytes of a request go is its *sink*: forwarded to the
backend, collected for a behavior that moves them itself (``protocol.read``), or dropped
(the error reply answers the request instead).
"""

from __future__ import annotations

import collections
import socket
from typing import Any

import gevent.event

from vaurien.protocols.base import BaseProtocol
from vaurien.protocols.framed.exchange import (
    ABORT,
    COMPLETE,
    DROP,
    FORWARD,
    PASS,
    SWALLOW,
    Action,
    AnswerVerdict,
    ErrorReply,
    Exchange,
    Phase,
    RequestVerdict,
)
from vaurien.protocols.framed.framing import HOLD

READING, HELD, AWAITING, ANSWERING, READY = (
    Phase.READING,
    Phase.HELD,
    Phase.AWAITING,
    Phase.ANSWERING,
    Phase.READY,
)

# Common options: the meaning they have for the tcp protocol.
BUFFER_OPTION = ("Largest read in bytes", int, 65536)
REUSE_SOCKET_OPTION = (
    "Listen with SO_REUSEPORT so several proxies share the port",
    bool,
    False,
)


def _ignore(data: Any) -> None:
    """The sink of a dropped request."""


class FramedState:
    """The driver's view of one session: the framers, the exchange queue and where each
    side is. ``state`` is what the protocol itself keeps (its ``new_session_state``)."""

    __slots__ = (
        "session",
        "state",
        "requests",
        "answers",
        "queue",
        "current",
        "behavior",
        "target",
        "passing",
        "answering",
        "gate",
        "stream",
        "last",
        "advancing",
        "_changed",
        "__weakref__",
    )

    def __init__(self, session: Any, state: Any, requests: Any, answers: Any) -> None:
        self.session = session
        self.state = state
        self.requests = requests
        self.answers = answers
        #: Exchanges not finished yet, oldest first.
        self.queue: collections.deque[Exchange] = collections.deque()
        self.current: Exchange | None = None  # the request being read
        self.behavior: Any = None  # the behavior whose hook acts on the next request
        self.target: Exchange | None = None  # whose answer is arriving
        self.passing = True  # whether the answer arriving reaches the client
        self.answering: Exchange | None = None  # whose answer a to_client behavior reads
        self.gate: Exchange | None = None  # the next request waits until this one is answered
        self.stream = False  # the session became a plain byte stream
        self.last = False  # no more requests pass: the connection ends after the answers due
        self.advancing = False
        self._changed: gevent.event.Event | None = None

    def wait(self) -> None:
        """Wait until :meth:`notify` (a hook returned, an exchange was finished)."""
        if self._changed is None:
            self._changed = gevent.event.Event()
        self._changed.wait()

    def notify(self) -> None:
        """Wake whoever waits in :meth:`wait`."""
        changed = self._changed
        if changed is not None:
            self._changed = None
            changed.set()


class _Hooks:
    """Which hooks of a behavior class do something (the base ones do nothing)."""

    __slots__ = ("before", "between", "after")

    def __init__(self, cls: type) -> None:
        self.before = _acts(cls, "on_before_handle")
        self.between = _acts(cls, "on_between_handle")
        self.after = _acts(cls, "on_after_handle")


def _acts(cls: type, hook: str) -> bool:
    function = getattr(cls, hook, None)
    return function is not None and not getattr(function, "does_nothing", False)


class FramedProtocol(BaseProtocol):
    """The base of protocols that know requests and answers (see the module documentation).

    A subclass provides :meth:`request_framer` and :meth:`answer_framer` (or :meth:`framers`,
    for framers that share what they know), :meth:`error_reply` (its error form) and, where its
    messages need it, the hooks :meth:`request_head`, :meth:`request_end`, :meth:`answer_head`
    and :meth:`answer_end`, which return verdicts. What it knows about a session beyond the
    exchanges lives in the value its :meth:`new_session_state` returns, handed to every hook.
    """

    duplex = True
    errors_on_request = True
    picks_itself = True
    options = {"buffer": BUFFER_OPTION, "reuse_socket": REUSE_SOCKET_OPTION}

    def __init__(self) -> None:
        super().__init__()
        self._buffer: bytearray | None = None
        self._view: memoryview | None = None
        self._hooks: dict[type, _Hooks] = {}

    # -- what a protocol provides -------------------------------------------------------------

    def new_session_state(self, session: Any) -> Any:
        """What the protocol keeps for one session beyond its exchanges (None by default)."""
        return None

    def framers(self, state: Any) -> tuple[Any, Any]:
        """New request and answer framers for a session whose protocol state is ``state``."""
        return self.request_framer(), self.answer_framer()

    def request_framer(self) -> Any:
        """A new framer for what a client sends."""
        raise NotImplementedError

    def answer_framer(self) -> Any:
        """A new framer for what the backend sends."""
        raise NotImplementedError

    def error_reply(
        self, state: Any, request: Any, answered: bool, forwarded: bool
    ) -> ErrorReply | None:
        """The protocol's error answer to ``request``, or None when the client must get none.

        ``answered`` says whether the backend would have answered the request: an answer to a
        request that gets none would be taken for the next request's. ``forwarded`` says
        whether the backend got the request (``inject``: its answer is replaced).
        """
        raise NotImplementedError

    def request_head(self, state: Any, head: Any, forwarded: bool) -> RequestVerdict | None:
        """A request's head is complete. ``send``, ``gate``, ``cut`` and ``last`` count here;
        ``forwarded`` says whether the backend gets the request."""
        return None

    def request_end(self, state: Any, message: Any, forwarded: bool) -> RequestVerdict | None:
        """A request was read whole (or, while the request framer is passive, a message that
        is no request). Only when ``forwarded`` may what the server knows change."""
        return None

    def answer_head(self, state: Any, request: Any, head: Any) -> AnswerVerdict | None:
        """An answer's head is complete; ``request`` is what it answers (None: nothing)."""
        return None

    def answer_end(self, state: Any, request: Any, message: Any) -> AnswerVerdict | None:
        """An answer message is complete. None means :data:`COMPLETE`."""
        return None

    # -- the session's entry points ------------------------------------------------------------

    def open_session(self, session: Any) -> FramedState:
        state = self.new_session_state(session)
        requests, answers = self.framers(state)
        return FramedState(session, state, requests, answers)

    def handle(self, source: Any, dest: Any, to_backend: bool, behavior: Any) -> bool:
        flow = source.session.state
        if to_backend and flow.gate is not None:
            self._wait_for_gate(flow)
        if flow.stream:
            # A plain stream: a behavior picked for each chunk, either way, as for tcp.
            if behavior is None:
                behavior = source.session.pick(to_backend)
            return BaseProtocol.handle(self, source, dest, to_backend, behavior)
        if to_backend:
            if flow.last:
                self._discard(source)
            elif flow.current is not None and flow.current.moved:
                # The rest of a request its behavior reads itself: the same behavior goes on.
                self._request_behavior(flow, source, dest, flow.current.behavior)
            else:
                self._frame_requests(flow, source, dest, flow.current)
        elif flow.answering is not None and flow.answering.phase is not READY:
            self._answer_behavior(flow, flow.answering, source, dest)
        else:
            self._answers(flow, source, dest)
        dest.drain()
        return True

    def _handle(self, source: Any, dest: Any, to_backend: bool) -> bool:
        """The event without a behavior: a chunk of a plain stream, one request, or answers."""
        flow = source.session.state
        if flow.stream:
            self._pass_chunk(source, dest, to_backend)
        elif to_backend:
            self._verb(flow, source, dest, FORWARD)
        else:
            self._answers(flow, source, dest)
            dest.drain()
        return True

    def read(self, sock: Any, size: int | None = None) -> bytes:
        """What a behavior reads from ``sock``: from the client, exactly one request; from the
        backend, for a behavior acting on an answer, that answer.

        Behaviors that move the bytes themselves (``bandwidth``, ``slicer``, ``corrupt`` ...)
        get the bytes of one whole request (or answer), or its first ``size`` bytes: the rest
        comes in the next events, handed to the same behavior. A request is queued as
        forwarded, so its answer is matched as usual.
        """
        flow = sock.session.state
        size = size or self.buffer_size
        if flow.stream:
            return sock.read(size)
        if sock.role != "client":
            answering = flow.answering
            if answering is None or answering.phase is READY:
                return sock.read(size)  # past the answer (a behavior that reads on: hang)
            return self._take_answer(flow, sock, size)
        if flow.last:
            return sock.read(size)
        exchange = flow.current
        if exchange is None:
            exchange = self._open(flow, flow.behavior, FORWARD)
        exchange.moved = True
        collected = bytearray()
        self._frame_requests(flow, sock, sock.session.backend, exchange, collected, size)
        return bytes(collected)

    _get_data = read

    def send_error(self, source: Any, dest: Any, to_backend: bool, inject: bool = False) -> None:
        """Answer this request with the protocol's error, in its turn among the answers.

        With ``inject`` the request still reaches the backend (what it does, it does) and the
        real answer is replaced by the error.
        """
        if to_backend and not source.session.state.stream:
            self._verb(source.session.state, source, dest, SWALLOW if inject else DROP)
        else:
            BaseProtocol.send_error(self, source, dest, to_backend, inject)

    def abort(self, source: Any, dest: Any, to_backend: bool) -> None:
        """Forward this request; end the session when its answer starts to arrive."""
        if to_backend and not source.session.state.stream:
            self._verb(source.session.state, source, dest, ABORT)
        else:
            BaseProtocol.abort(self, source, dest, to_backend)

    def setup_listener(self, sock: socket.socket) -> None:
        if self.settings.get("reuse_socket"):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)

    # -- requests ------------------------------------------------------------------------------

    def _frame_requests(
        self,
        flow: FramedState,
        source: Any,
        dest: Any,
        exchange: Exchange | None,
        collected: bytearray | None = None,
        limit: int = 0,
        nested: bool = False,
    ) -> None:
        """Read what the client sent and frame it, request by request.

        Each new request gets a pick; those whose behavior rides along are forwarded in one
        batch. ``exchange`` is the request in progress, if any. With ``collected`` (a behavior
        reads the request itself) its bytes go there instead, up to ``limit``, and the loop
        stops at the request's end; ``nested`` (a behavior's verb) stops there too.
        """
        session = flow.session
        framer = flow.requests
        if collected is not None:
            write = collected.extend
        elif exchange is not None and exchange.action is DROP:
            write = _ignore
        else:
            write = dest.write
        single = nested or collected is not None
        while True:
            if collected is not None:
                buf, view, count = self._read(source, limit - len(collected))
            else:
                buf, view, count = self._read(source)
            if not count:
                framer.feed_eof()
                flow.current = exchange
                return
            pos = out = 0
            done = None
            while pos < count:
                if exchange is None and not framer.passive:
                    # A new request: its pick decides whether it rides along in the batch.
                    behavior = session.pick()
                    hooks = self._hooks_of(behavior)
                    if behavior.sits_out is True:
                        exchange = self._open(flow, behavior, FORWARD)
                        exchange.answer_behavior = behavior  # it acts on the answer
                    elif hooks.before or hooks.between:
                        if out < pos:
                            write(view[out:pos])
                        source.unread(buf[pos:count])
                        flow.current = None
                        self._request_behavior(flow, source, dest, behavior)
                        return
                    else:
                        exchange = self._open(flow, behavior, FORWARD, hooks=True)
                newpos, event = framer.feed(buf, pos, count)
                if event is None:
                    pos = newpos
                    continue
                if event is HOLD:
                    if out < pos:
                        write(view[out:pos])
                    out = pos = newpos
                    continue
                cut = False
                if event.raw is not None:
                    send = None
                    if exchange is not None:
                        exchange.request = event
                        verdict = self._request_head(flow, exchange, event)
                        send, cut = verdict.send, verdict.cut
                    if send is not None or event.held:
                        if out < pos:
                            write(view[out:pos])
                        write(send if send is not None else event.raw)
                        out = newpos - event.body
                    if not event.end and not cut:
                        pos = newpos
                        continue
                pos = newpos
                if exchange is None:  # traffic that is no request (a handshake) passes
                    verdict = self.request_end(flow.state, event, True) or PASS
                    if verdict.stream:
                        flow.stream = True
                        break
                    continue
                verdict = self._request_done(flow, exchange, event)
                if verdict.send is not None and exchange.action is not DROP:
                    if out < pos:
                        write(view[out:pos])
                    write(verdict.send)
                    out = pos
                done, exchange = exchange, None
                flow.current = None
                if single or flow.gate or flow.stream or flow.last:
                    break
                if done.phase is READY:
                    if done.reply is not None or done.after is not None or done.close:
                        break  # it has to write to the client, in its turn
                    self._drop_finished(flow)
            else:
                if out < count:
                    write(view[out:count])
                if collected is not None and exchange is not None and len(collected) < limit:
                    continue  # a behavior reads the whole request: read on
                flow.current = exchange
                return
            # Stopped after a request (or a handshake message): what follows waits.
            if out < pos:
                write(view[out:pos])
            if pos < count:
                source.unread(buf[pos:count])
            if done is not None:
                self._after_request(flow, done, source, dest)
            return

    def _request_behavior(self, flow: FramedState, source: Any, dest: Any, behavior: Any) -> None:
        """The event of a request whose behavior acts on it: run the behavior's hook, then,
        unless it handled the request itself, forward the request."""
        flow.behavior = behavior
        source.behavior = behavior
        if behavior.on_before_handle(self, source, dest, True):
            current = flow.current
            if current is None or not current.moved:
                exchange = current or self._open(flow, behavior, FORWARD, hooks=True)
                self._frame_requests(flow, source, dest, exchange, nested=True)

    def _verb(self, flow: FramedState, source: Any, dest: Any, action: Action) -> None:
        """A behavior's verb (send_error, abort): do ``action`` with the next request."""
        if flow.last:
            self._discard(source)
            return
        exchange = flow.current
        if exchange is None:
            exchange = self._open(flow, flow.behavior, action)
        else:
            exchange.action = action
        self._frame_requests(flow, source, dest, exchange, nested=True)
        dest.drain()

    def _open(self, flow: FramedState, behavior: Any, action: Action, hooks: bool = False):
        exchange = Exchange(behavior, action, hooks)
        flow.queue.append(exchange)
        flow.current = exchange
        return exchange

    def _request_head(self, flow: FramedState, exchange: Exchange, head: Any) -> RequestVerdict:
        forwarded = exchange.action is not DROP
        verdict = self.request_head(flow.state, head, forwarded) or PASS
        if verdict.gate and forwarded:
            flow.gate = exchange
        if verdict.last:
            flow.last = True
        return verdict

    def _request_done(self, flow: FramedState, exchange: Exchange, message: Any) -> RequestVerdict:
        """The request was read whole: settle what becomes of it and of its answer."""
        action = exchange.action
        verdict = self.request_end(flow.state, message, action is not DROP) or PASS
        exchange.request = message
        answered = verdict.answered
        if action is SWALLOW and (verdict.real_answer or not answered):
            action = exchange.action = FORWARD
        if action is DROP or action is SWALLOW:
            reply = self.error_reply(flow.state, message, answered, action is SWALLOW)
            if reply is not None:
                exchange.reply = reply.data
                exchange.close = reply.close
        elif action is ABORT:
            flow.last = True
            if not answered:
                exchange.close = True
        if exchange.phase is READING:
            exchange.phase = AWAITING if answered and action is not DROP else READY
        if verdict.last or exchange.close:
            flow.last = True
        if verdict.stream:
            flow.stream = True
        if verdict.gate and action is not DROP:
            flow.gate = exchange
        behavior = exchange.behavior
        if exchange.hooks and behavior is not None and self._hooks_of(behavior).after:
            exchange.after = (behavior.on_after_handle, True)
        return verdict

    def _after_request(self, flow: FramedState, exchange: Exchange, source: Any, dest: Any):
        """Once a request has been sent: its ``on_between_handle`` runs (its answer waits
        meanwhile), and exchanges done without an answer are finished in their turn."""
        behavior = exchange.behavior
        if (
            exchange.action is not DROP
            and not exchange.moved
            and behavior is not None
            and self._hooks_of(behavior).between
        ):
            phase, exchange.phase = exchange.phase, HELD
            try:
                dest.drain()  # the request reaches the backend before the hook runs
                behavior.on_between_handle(self, source, dest, True)
            finally:
                if exchange.phase is HELD:
                    exchange.phase = phase
                flow.notify()
        if exchange.phase is READY:
            self._advance(flow)

    def _wait_for_gate(self, flow: FramedState) -> None:
        # The answer decides what comes next (an upgrade, a mail body): wait for it, unless the
        # session's events run one at a time (the answer could not come meanwhile; clients wait
        # for it anyway, the gate only guards against those that do not).
        gate = flow.gate
        while gate.phase is not READY and not flow.session.closed and not self.proxy.exclusive:
            flow.wait()
        flow.gate = None

    def _discard(self, source: Any) -> None:
        # The connection ends after the answers due: what the client sends now is dropped.
        source.read(self.buffer_size)

    # -- answers -------------------------------------------------------------------------------

    def _frame_answers(self, flow: FramedState, source: Any, dest: Any) -> bool:
        """Pass what the backend sent, matching each answer to its exchange.

        Returns true when it stopped to let something ahead finish (an exchange's hook, a
        to_client behavior) and what it read waits, pushed back, to be framed at once.
        """
        queue = flow.queue
        framer = flow.answers
        buf, view, count = self._read(source)
        if not count:
            message = framer.feed_eof()
            target = flow.target
            if message is not None and target is not None:
                verdict = self.answer_end(flow.state, target.request, message) or COMPLETE
                if verdict.complete and not verdict.unsolicited:
                    self._answered(flow, target)
                    self._advance(flow)
            return False
        pos = out = 0
        passing = flow.passing
        while pos < count:
            if framer.idle:
                # A new answer message starts: what is finished ahead of it goes first.
                head = queue[0] if queue else None
                if head is not None and (head.phase is READY or head.phase is HELD):
                    if passing and out < pos:
                        dest.write(view[out:pos])
                    source.unread(buf[pos:count])
                    if head.phase is READY and not flow.advancing:
                        self._advance(flow)
                    else:
                        dest.drain()
                        flow.wait()  # its on_between_handle runs, or it is being finished
                    return True
                if head is not None:
                    if head.answer_behavior is not None and not head.answer_started:
                        if passing and out < pos:
                            dest.write(view[out:pos])
                        source.unread(buf[pos:count])
                        self._answer_behavior(flow, head, source, dest)
                        return flow.answering is None  # else the rest goes to the behavior
                    if head.action is ABORT:
                        if passing and out < pos:
                            dest.write(view[out:pos])
                        flow.session.close()
                        return False
                    if head.phase is AWAITING:
                        head.phase = ANSWERING
                    now_passing = head.action is not SWALLOW
                    framer.begin(head.request)
                else:
                    now_passing = True
                    framer.begin(None)
                if now_passing is not passing:
                    if passing and out < pos:
                        dest.write(view[out:pos])
                    out = pos
                    passing = now_passing
                flow.target = head
            newpos, event = framer.feed(buf, pos, count)
            if event is None:
                pos = newpos
                continue
            if event is HOLD:
                if passing and out < pos:
                    dest.write(view[out:pos])
                out = pos = newpos
                continue
            target = flow.target
            request = target.request if target is not None else None
            if event.raw is not None:
                verdict = self.answer_head(flow.state, request, event)
                send = verdict.send if verdict is not None else None
                if passing and out < pos:
                    dest.write(view[out:pos])
                out = pos
                if verdict is not None and verdict.hide:
                    passing = False
                    out = newpos
                elif passing and (event.held or send is not None):
                    dest.write(send if send is not None else event.raw)
                    out = newpos - event.body
                elif not passing:
                    out = newpos
                if not event.end:
                    pos = newpos
                    continue
            verdict = self.answer_end(flow.state, request, event) or COMPLETE
            pos = newpos
            if verdict.stream:
                # The session became a plain stream (an upgrade): the rest passes as it is.
                flow.stream = True
                start = out if passing else pos
                if start < count:
                    dest.write(view[start:count])
                flow.passing = True
                if target is not None:
                    self._answered(flow, target)
                flow.notify()  # a request waiting behind the gate goes on as a stream
                return False
            if verdict.last:
                flow.last = True
            if target is None or verdict.unsolicited or not verdict.complete:
                continue
            # The target's answer is complete.
            if not passing:
                out = pos  # it was not to reach the client
                passing = True
            self._answered(flow, target)
            if target.reply is None and target.after is None and not target.close:
                queue.popleft()  # finished in its turn, nothing more to do
                if flow._changed is not None:
                    flow.notify()
                if not queue or queue[0].phase is not READY:
                    continue
            if out < pos:
                dest.write(view[out:pos])
            if pos < count:
                source.unread(buf[pos:count])
            flow.passing = passing
            self._advance(flow)
            return True
        if passing and out < count:
            dest.write(view[out:count])
        flow.passing = passing
        return False

    def _answers(self, flow: FramedState, source: Any, dest: Any) -> None:
        session = flow.session
        while self._frame_answers(flow, source, dest) and not session.closed:
            pass

    def _answered(self, flow: FramedState, target: Exchange) -> None:
        target.phase = READY
        flow.target = None

    def _answer_behavior(self, flow: FramedState, target: Exchange, source: Any, dest: Any):
        """Run the to_client behavior of ``target`` on its answer (or the answer's rest)."""
        behavior = target.answer_behavior
        target.answer_started = True
        flow.target = target
        flow.answering = target
        source.behavior = behavior
        if behavior.on_before_handle(self, source, dest, False):
            flow.answering = None
            if self._hooks_of(behavior).after:
                target.after = (behavior.on_after_handle, False)
            return  # the answer passes as usual
        if target.phase is READY:  # the behavior passed the whole answer itself
            flow.answering = None
            self._advance(flow)

    def _take_answer(self, flow: FramedState, source: Any, size: int) -> bytes:
        """Read (at most about ``size`` bytes of) the answer a behavior acts on; return what
        of it would pass. It stops at the end of a part of the answer that is not complete
        (a ``PARTIAL`` verdict): the client may wait for that part before it sends what the rest
        answers, so holding it for the rest would never end."""
        target = flow.answering
        framer = flow.answers
        state = flow.state
        collected = bytearray()
        hiding = False
        while len(collected) < size:
            buf, view, count = self._read(source, size - len(collected))
            if not count:
                message = framer.feed_eof()
                if message is not None:
                    verdict = self.answer_end(state, target.request, message) or COMPLETE
                    if verdict.complete:
                        self._answered(flow, target)
                break
            pos = 0
            while pos < count:
                if framer.idle:
                    framer.begin(target.request)
                newpos, event = framer.feed(buf, pos, count)
                if event is None:
                    if not hiding:
                        collected += view[pos:newpos]
                elif event is not HOLD:
                    if event.raw is not None:
                        verdict = self.answer_head(state, target.request, event)
                        hiding = verdict is not None and verdict.hide
                        if not hiding:
                            send = verdict.send if verdict is not None else None
                            collected += send if send is not None else event.raw
                            if event.body:
                                collected += view[newpos - event.body : newpos]
                    elif not hiding:
                        collected += view[pos:newpos]
                    if event.end:
                        hiding = False
                        verdict = self.answer_end(state, target.request, event) or COMPLETE
                        if verdict.stream:
                            flow.stream = True
                        if verdict.last:
                            flow.last = True
                        done = (verdict.complete and not verdict.unsolicited) or verdict.stream
                        if done or not verdict.complete:
                            # Complete, or a part the client acts on before the rest comes (an
                            # HTTP 100 Continue, a CopyInResponse): what was read goes now.
                            if newpos < count:
                                source.unread(buf[newpos:count])
                            if done:
                                self._answered(flow, target)
                            return bytes(collected)
                pos = newpos
        return bytes(collected)

    def _drop_finished(self, flow: FramedState) -> None:
        """Take the exchanges at the head of the queue that are done and have nothing to
        write out of it (requests that get no answer): this never waits."""
        queue = flow.queue
        while queue:
            head = queue[0]
            if head.phase is not READY or head.reply is not None or head.after is not None:
                break
            if head.close:
                break
            queue.popleft()

    def _advance(self, flow: FramedState) -> None:
        """Finish the exchanges at the head of the queue that wait for nothing more: write
        their replies, run their ``on_after_handle`` hooks, close when they say so."""
        if flow.advancing:
            return
        queue = flow.queue
        session = flow.session
        client, backend = session.client, session.backend
        flow.advancing = True
        try:
            while queue and queue[0].phase is READY:
                exchange = queue[0]
                if exchange.reply:
                    client.sendall(exchange.reply)
                if exchange.after is not None:
                    hook, to_backend = exchange.after
                    if to_backend:
                        hook(self, client, backend, True)
                    else:
                        hook(self, backend, client, False)
                queue.popleft()
                if exchange.close:
                    session.close()
                    break
        finally:
            flow.advancing = False
            flow.notify()

    # -- plumbing ------------------------------------------------------------------------------

    def _hooks_of(self, behavior: Any) -> _Hooks:
        cls = type(behavior)
        hooks = self._hooks.get(cls)
        if hooks is None:
            hooks = self._hooks[cls] = _Hooks(cls)
        return hooks

    def _buffers(self) -> tuple[bytearray, memoryview]:
        # One buffer per proxy serves every session and both directions. Its content is valid
        # until the next switch to another greenlet: the loops write with Endpoint.write, which
        # never waits, and push the unread rest back (Endpoint.unread) before anything that
        # may wait.
        if self._buffer is None:
            self._buffer = bytearray(self.buffer_size)
            self._view = memoryview(self._buffer)
        return self._buffer, self._view

    def _read(self, source: Any, limit: int = 0) -> tuple[Any, memoryview, int]:
        """One read: ``(buffer, its view, count)``; 0 at the end of the stream."""
        if source.has_pending:
            # Data pushed back (a stopped batch): framed where it is, without a copy.
            data = source.recv(limit or 1 << 62)
            return data, memoryview(data), len(data)
        buf, view = self._buffers()
        return buf, view, source.recv_into(buf, min(limit, len(buf)) if limit else 0)

    def _pass_chunk(self, source: Any, dest: Any, to_backend: bool) -> None:
        buf, view = self._buffers()
        count = source.recv_into(buf)
        if count:
            dest.sendall(view[:count])
            if to_backend:
                self._between(source, dest, to_backend)
