"""The client's side of the framed driver: requests framed, picked for and forwarded."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from vaurien.protocols.framed.exchange import (
    ABORT,
    DROP,
    FORWARD,
    PASS,
    SWALLOW,
    Action,
    Exchange,
    Phase,
    RequestVerdict,
)
from vaurien.protocols.framed.framing import HOLD
from vaurien.protocols.framed.state import FramedState, Relay
from vaurien.rules import NO_FIELDS

READING, HELD, AWAITING, READY = Phase.READING, Phase.HELD, Phase.AWAITING, Phase.READY


#: How a relay takes plain requests (RequestSide._relay_way): a run that no rule tests, or
#: a pick for each request.
NO_RULE = object()
PICK_EACH = object()


def _ignore(data: Any) -> None:
    """The sink of a dropped request."""


class RequestSide(Relay):
    """Reads what the client sends, request by request (see :mod:`vaurien.protocols.framed`)."""

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
        peeked = None  # the fields of the request at the start of the next read
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
            awaiting = False
            while pos < count:
                if exchange is None and not framer.passive:
                    head, peeked = (peeked if pos == 0 else None), None
                    wants_fields = session.wants_fields()
                    way = None if single or flow.picked is not None else self._relay_way(flow)
                    if way is not None and way is not PICK_EACH:
                        # Nothing to pick: the plain requests ahead (that no rule takes) pass as
                        # one run.
                        untaken = None if way is NO_RULE else way
                        newpos, run, first = self.skim(flow.state, buf, pos, count, untaken=untaken)
                        if run:
                            self._open_run(flow, first, run)
                            session.count_picks(run)
                            pos = newpos
                            continue
                    fields = None
                    if wants_fields:
                        # A rule decides on what the request holds: look before the pick.
                        fields = (
                            head if head is not None else self.peek(flow.state, buf, pos, count)
                        )
                        if fields is None:
                            awaiting = True  # its head is not all here: wait for the rest
                            break
                    elif session.names_requests():
                        # A dashboard watches: its fault feed names the request when its head
                        # is here (the rules, on no field, decide the same with fields or not).
                        fields = (
                            head if head is not None else self.peek(flow.state, buf, pos, count)
                        )
                    # A new request: its pick decides whether it rides along in the batch. A
                    # relay that stopped at it may have picked already.
                    behavior = flow.picked
                    plain = behavior is not None  # a relay skimmed it: its answer is plain
                    if plain:
                        flow.picked = None
                    else:
                        behavior = session.pick(fields=fields)
                    hooks = self._hooks_of(behavior)
                    if behavior.sits_out is True:
                        exchange = self._open(flow, behavior, FORWARD)
                        exchange.answer_behavior = behavior  # it acts on the answer
                    elif hooks.before or hooks.between:
                        if out < pos:
                            write(view[out:pos])
                        source.unread(buf[pos:count])
                        flow.current = None
                        self._request_behavior(flow, source, dest, behavior, plain)
                        return
                    else:
                        exchange = self._open(flow, behavior, FORWARD, hooks=True, plain=plain)
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
            # Stopped after a request (or a handshake message, or before a request whose head
            # is not all here): what follows waits.
            if out < pos:
                write(view[out:pos])
            if pos < count:
                source.unread(buf[pos:count])
            if done is not None:
                self._after_request(flow, done, source, dest)
            if not awaiting:
                return
            dest.drain()
            peeked = self._peek_more(flow, source)

    def _relay_requests(self, flow: FramedState, data: Any, end: int) -> int:
        """How much of ``data[:end]`` is plain requests that pass untouched (see
        :meth:`FramedProtocol.relay`): as one run with no pick when no chaos is in force,
        else while each one's pick is quiet. They are queued as runs."""
        if flow.current is not None or flow.picked is not None:
            return 0
        way = self._relay_way(flow)
        if way is None:
            return 0
        if way is PICK_EACH:
            return self._relay_picking(flow, data, end)
        untaken = None if way is NO_RULE else way
        pos, run, first = self.skim(flow.state, data, 0, end, untaken=untaken)
        if run:
            self._open_run(flow, first, run)
            flow.session.count_picks(run)
        return pos

    def _relay_way(self, flow: FramedState) -> Any:
        """How a relay takes the next plain requests: as runs with no pick (:data:`NO_RULE`, or
        the rules' test of what they take when rules read the requests' fields), with a pick
        each (:data:`PICK_EACH`), or not at all (None: a pump takes them, as when the
        dashboard's feed names each request picked for)."""
        session = flow.session
        if session.wants_fields():
            return session.untaken_test() if self.skims_fields else None
        if session.passes_everything():
            return NO_RULE
        return None if session.names_requests() else PICK_EACH

    def _relay_picking(self, flow: FramedState, data: Any, end: int) -> int:
        """How much of ``data[:end]`` is plain requests whose picks are quiet, a pick each. The
        first one picked for a behavior that acts stops the relay: it keeps its pick
        (``flow.picked``) for the pump that runs it."""
        session = flow.session
        quiet = session.proxy.plan.quiet  # the plan before the picks (see Relay.pick)
        pos = 0
        while pos < end:
            newpos, run, first = self.skim(flow.state, data, pos, end)
            if not run:
                break
            passing = 0
            while passing < run:
                behavior = session.pick()
                if id(behavior) not in quiet:
                    flow.picked = behavior
                    break
                passing += 1
            if passing < run:
                if passing:  # the quiet ones before it pass
                    pos, run, first = self.skim(flow.state, data, pos, end, most=passing)
                    self._open_run(flow, first, run)
                break
            self._open_run(flow, first, run)
            pos = newpos
        return pos

    def _peek_more(self, flow: FramedState, source: Any) -> Mapping[str, str]:
        """Read on until the request pushed back on ``source`` can be peeked, push it all back,
        and return its fields: unknown (:data:`~vaurien.rules.NO_FIELDS`) when the client ends
        its stream or the request grows past ``peek_limit`` first."""
        data = bytearray(source.recv(self.peek_limit))
        fields = None
        while fields is None and len(data) < self.peek_limit:
            more = source.recv(self.buffer_size)
            if not more:
                break
            data += more
            fields = self.peek(flow.state, data, 0, len(data))
        source.unread(data)
        return fields if fields is not None else NO_FIELDS

    def _request_behavior(
        self, flow: FramedState, source: Any, dest: Any, behavior: Any, plain: bool = False
    ) -> None:
        """The event of a request whose behavior acts on it: run the behavior's hook, then,
        unless it handled the request itself, forward the request (``plain``: one a relay
        skimmed, whose answer frames as a plain one)."""
        flow.behavior = behavior
        source.behavior = behavior
        if behavior.on_before_handle(self, source, dest, True):
            current = flow.current
            if current is None or not current.moved:
                exchange = current or self._open(flow, behavior, FORWARD, hooks=True, plain=plain)
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

    def _open_run(self, flow: FramedState, first: Any, count: int) -> None:
        exchange = flow.spare_run
        if exchange is None:
            exchange = Exchange(None, FORWARD)
        else:
            flow.spare_run = None
        exchange.request = first
        exchange.count = count
        exchange.phase = AWAITING
        flow.queue.append(exchange)
        flow.last_behavior = None

    def _open(
        self,
        flow: FramedState,
        behavior: Any,
        action: Action,
        hooks: bool = False,
        plain: bool = False,
    ) -> Exchange:
        exchange = Exchange(behavior, action, hooks)
        exchange.plain = plain
        if getattr(behavior, "both_ways", False):  # a chain acting on requests and answers
            exchange.answer_behavior = behavior
        flow.queue.append(exchange)
        flow.last_behavior = behavior
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
            acts_after = getattr(behavior, "acts_after", None)  # (plugins of old lack it)
            if acts_after is None or acts_after():
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
        while gate.phase is not READY and not flow.session.closed and not self.proxy.plan.exclusive:
            flow.wait()
        flow.gate = None

    def _discard(self, source: Any) -> None:
        # The connection ends after the answers due: what the client sends now is dropped.
        source.read(self.buffer_size)
