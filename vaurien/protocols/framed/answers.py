"""The backend's side of the framed driver: answers matched to their requests, in order."""

from __future__ import annotations

from typing import Any

from vaurien.protocols.framed.exchange import ABORT, COMPLETE, SWALLOW, Exchange, Phase
from vaurien.protocols.framed.framing import HOLD
from vaurien.protocols.framed.state import FramedState, Relay

HELD, AWAITING, ANSWERING, READY = Phase.HELD, Phase.AWAITING, Phase.ANSWERING, Phase.READY


class AnswerSide(Relay):
    """Reads what the backend sends and passes each answer in its request's turn."""

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
                if head is not None and head.count > 1:
                    # The answers of a run pass as they are: all but its last go in one step.
                    newpos, answered = self.skim_answers(
                        flow.state, head.request, buf, pos, count, head.count - 1
                    )
                    if answered:
                        head.count -= answered
                        pos = newpos
                        continue
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
                if not passing:
                    out = newpos
                elif verdict is not None and verdict.hide:
                    if out < pos:
                        dest.write(view[out:pos])
                    passing = False
                    out = newpos
                elif event.held or send is not None:
                    if out < pos:
                        dest.write(view[out:pos])
                    dest.write(send if send is not None else event.raw)
                    out = newpos - event.body
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
            if target.count > 1:  # one answer of a run: the next one answers the next request
                target.count -= 1
                flow.target = None
                continue
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

    def _relay_answers(self, flow: FramedState, data: Any, end: int) -> int:
        """How much of ``data[:end]`` is plain answers to the runs of plain requests at the
        head of the queue (see :meth:`FramedProtocol.relay`); the runs they finish leave it.

        The last answer of a run followed by an exchange of another kind is left to the
        general path, which finishes what follows in its turn."""
        if flow.target is not None or flow.answering is not None or not flow.answers.idle:
            return 0
        queue = flow.queue
        pos = 0
        while pos < end and queue and queue[0].plain_run():
            head = queue[0]
            most = head.count if len(queue) == 1 or queue[1].plain_run() else head.count - 1
            head.phase = ANSWERING
            pos, answered = self.skim_answers(flow.state, head.request, data, pos, end, most)
            head.count -= answered
            if head.count:
                break
            head.phase = READY  # answered (flow.target is None)
            queue.popleft()
            if head.behavior is None:
                flow.spare_run = head  # nothing else holds it: the next run reuses it
            if flow._changed is not None:
                flow.notify()
        return pos

    def _answers(self, flow: FramedState, source: Any, dest: Any) -> None:
        # What was read and pushed back is framed in the same event; the event ends before
        # reading more, so that a pump at rest may give the direction back (relays_next).
        session = flow.session
        while self._frame_answers(flow, source, dest) and not session.closed and source.has_pending:
            pass

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
                target.after = _after_both(target.after, behavior.on_after_handle)
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


def _after_both(request_after: Any, answer_hook: Any) -> tuple[Any, bool]:
    """The ``after`` of an exchange whose answer a behavior let through: its
    ``on_after_handle`` for the answer, after the one for the request when one is due too
    (a chain acting both ways)."""
    if request_after is None:
        return answer_hook, False
    request_hook = request_after[0]

    def both(protocol: Any, backend: Any, client: Any, to_backend: bool) -> None:
        request_hook(protocol, client, backend, True)
        answer_hook(protocol, backend, client, False)

    return both, False
