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

While the session needs no pick (no chaos, no rule takes the requests), a protocol that
skims (frames runs of plain messages in one go) has such runs relayed from the sockets'
watcher callbacks, without a greenlet (:meth:`FramedProtocol.relay`); anything else goes to
the pumps, which run the loops below.

One loop frames each side. Where the bytes of a request go is its *sink*: forwarded to the
backend, collected for a behavior that moves them itself (``protocol.read``), or dropped
(the error reply answers the request instead).
"""

from __future__ import annotations

import socket
from collections.abc import Mapping
from typing import Any

from vaurien.memory_endpoint import MemoryEndpoint
from vaurien.protocols.base import BaseProtocol
from vaurien.protocols.framed.answers import AnswerSide
from vaurien.protocols.framed.exchange import (
    ABORT,
    DROP,
    FORWARD,
    SWALLOW,
    AnswerVerdict,
    ErrorReply,
    Phase,
    RequestVerdict,
)
from vaurien.protocols.framed.requests import RequestSide
from vaurien.protocols.framed.state import FramedState
from vaurien.rules import NO_FIELDS

READY = Phase.READY

# Common options: the meaning they have for the tcp protocol.
BUFFER_OPTION = ("Largest read in bytes", int, 65536)
REUSE_SOCKET_OPTION = (
    "Listen with SO_REUSEPORT so several proxies share the port",
    bool,
    False,
)


class FramedProtocol(RequestSide, AnswerSide, BaseProtocol):
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

    #: The most bytes of a request the driver gathers for :meth:`peek`; beyond, the request's
    #: fields are unknown and only rules on the client alone may take it.
    peek_limit = 65536

    def peek(self, state: Any, data: Any, pos: int, end: int) -> Mapping[str, str] | None:
        """The fields of the request that starts at ``data[pos]`` (``data[pos:end]`` is what is
        there so far), for the rules in force: a mapping of the names in ``rule_fields``
        (``header.host`` for a family) to text; None while more bytes are needed. It frames
        nothing: the framer reads the same bytes next. The driver asks only when a rule tests
        more than the client, before the request's pick. The base knows no fields."""
        return NO_FIELDS

    #: Whether :meth:`skim` takes ``untaken``, so that runs of requests pass untouched while
    #: rules test the requests' fields.
    skims_fields = False

    def skim(
        self,
        state: Any,
        data: Any,
        pos: int,
        end: int,
        untaken: Any = None,
        most: int | None = None,
    ) -> tuple[int, int, Any]:
        """Frame the plain requests at the start of ``data[pos:end]`` in one go, for when
        every request passes untouched: ``(newpos, how many, the first one)``; with ``most``,
        at most that many.

        A plain request is one whose hooks would say nothing (:data:`PASS`) and whose answer
        frames like the first one's. Stop before anything else, and before an unfinished
        request: the general path takes it from there. With ``untaken`` (a protocol that sets
        :attr:`skims_fields`), rules test the requests' fields: a request joins the run only
        when ``untaken(its fields)`` is true, the fields :meth:`peek` would give, or when
        ``untaken.rejected(field, value)`` is true for a field cheap to read (no rule takes a
        request with that value). The base skims nothing.
        """
        return pos, 0, None

    def skim_answers(
        self, state: Any, request: Any, data: Any, pos: int, end: int, most: int
    ) -> tuple[int, int]:
        """Frame at most ``most`` answers at the start of ``data[pos:end]`` in one go, for a
        run of plain requests like ``request``: ``(newpos, how many)``. Stop before anything
        that is not a plain answer to such a request, or not all there. The base skims none."""
        return pos, 0

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # Events run in watcher callbacks (relay) only for a protocol that frames runs of plain
        # messages in one go (skim), and reads and handles events the driver's way.
        if "relay" not in vars(cls):
            relays = all(
                getattr(cls, name) is not getattr(FramedProtocol, name)
                for name in ("skim", "skim_answers")
            ) and all(
                getattr(cls, name) is getattr(FramedProtocol, name)
                for name in ("handle", "_handle", "read", "_get_data")
            )
            cls.relay = FramedProtocol.relay if relays else None

    # -- the session's entry points ------------------------------------------------------------

    def relay(self, source: Any, dest: Any, pick: Any) -> int | None:
        """An event in the watcher's callback (see :meth:`vaurien.protocols.tcp.TCP.relay`):
        what ``source`` has, when it is all plain messages that need no pick (no chaos, no rule
        takes them), passes in one write, framed by :meth:`skim` or :meth:`skim_answers`.

        Anything else, from the first message that is not plain, goes to a pump greenlet
        (``pick()`` hands it over; the rest read is pushed back for it), as does the end of
        the stream. Returns the count moved, or None when nothing was there or the event went
        to a pump.
        """
        flow = source.session.state
        if flow.stream or flow.last or flow.gate is not None:
            pick()
            return None
        buf, view = self._buffers()
        count = source.receive_now(buf)
        if count is None:
            return None
        if source.role == "client":
            plain = self._relay_requests(flow, buf, count)
        else:
            plain = self._relay_answers(flow, buf, count)
        if plain:
            dest.write(view[:plain])
        if plain < count or not count:
            source.unread(buf[plain:count])
            pick()
            return None
        return count

    def relays_next(self, source: Any, to_backend: bool) -> bool:
        """After a pump's event: the direction goes back to watcher callbacks when nothing of
        it is under way. The client's side first waits for the replies and hooks its requests
        left in the queue to be done in their turn (an error's answer); the backend's side
        goes back once the answers due next are plain ones, or none."""
        flow = source.session.state
        if flow.stream or flow.last or flow.gate is not None or source.has_pending:
            return False
        if not to_backend:
            queue = flow.queue
            return (
                flow.target is None
                and flow.answering is None
                and flow.answers.idle
                and (not queue or queue[0].plain_run())
            )
        if flow.current is not None or flow.picked is not None:
            return False
        if self._relay_way(flow) is None:
            return False  # the relay would hand each request straight back
        session = source.session
        while not session.closed and any(each.left_to_write() for each in flow.queue):
            if flow.queue[0].phase is READY and not flow.advancing:
                self._advance(flow)
            else:
                flow.wait()
        return not session.closed and not flow.last

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
        if source.eof:
            self._closing(flow, source, dest, to_backend)
        return True

    def _closing(self, flow: FramedState, source: Any, dest: Any, to_backend: bool) -> None:
        """A side closed after the exchanges: the last one's behavior has its say
        (``on_close``: ``slow_close`` passes the close on late)."""
        behavior = flow.last_behavior
        if (
            behavior is not None
            and behavior.sits_out is not to_backend
            and self._hooks_of(behavior).close
        ):
            behavior.on_close(self, source, dest, to_backend)

    def _handle(self, source: Any, dest: Any, to_backend: bool) -> bool:
        """The event without a behavior: a chunk of a plain stream, one request, or answers."""
        if type(source) is MemoryEndpoint:  # a message a chain's member passed on: it goes on
            dest.sendall(source.take())
            return True
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
        size = size or self.buffer_size
        if type(sock) is MemoryEndpoint:  # a chain's member before took the message already
            return sock.read(size)
        flow = sock.session.state
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
        if to_backend and not source.session.state.stream and type(source) is not MemoryEndpoint:
            self._verb(source.session.state, source, dest, SWALLOW if inject else DROP)
        else:
            BaseProtocol.send_error(self, source, dest, to_backend, inject)

    def abort(self, source: Any, dest: Any, to_backend: bool) -> None:
        """Forward this request; end the session when its answer starts to arrive."""
        if to_backend and not source.session.state.stream and type(source) is not MemoryEndpoint:
            self._verb(source.session.state, source, dest, ABORT)
        else:
            BaseProtocol.abort(self, source, dest, to_backend)

    def setup_listener(self, sock: socket.socket) -> None:
        if self.settings.get("reuse_socket"):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)

    def _pass_chunk(self, source: Any, dest: Any, to_backend: bool) -> None:
        buf, view = self._buffers()
        count = source.recv_into(buf)
        if count:
            dest.sendall(view[:count])
            if to_backend:
                self._between(source, dest, to_backend)
