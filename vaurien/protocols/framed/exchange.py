"""Exchanges, and the verdicts protocols return about the messages they see.

An :class:`Exchange` is one request and its answer as the client sees them. Its ``phase`` moves
through the states of :class:`Phase`, only forward::

    READING --> HELD --> AWAITING --> ANSWERING --> READY --> (finished: out of the queue)
       |          |          |                        ^
       |          +----------+------------------------+   (no answer expected)
       +--------------------------------------------- +   (answered by the proxy: DROP)

A protocol never touches an exchange. Its hooks return frozen verdicts instead:
:class:`RequestVerdict` about a request, :class:`AnswerVerdict` about an answer, and
:class:`ErrorReply` for its error form. ``None`` from a hook means "nothing special".
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any


class Phase(enum.Enum):
    """Where an exchange is."""

    READING = "reading"  # the request is arriving (or a behavior is moving it)
    HELD = "held"  # the request reached the backend; on_between_handle runs: the answer waits
    AWAITING = "awaiting"  # the backend owes the answer
    ANSWERING = "answering"  # the answer is arriving
    READY = "ready"  # nothing more comes from the backend: finish it in its turn


class Action(enum.Enum):
    """What happens to a request."""

    FORWARD = "forward"  # it goes to the backend, its answer to the client
    DROP = "drop"  # it is read and dropped; the client gets the error reply
    SWALLOW = "swallow"  # it goes to the backend; its answer is replaced by the error reply
    ABORT = "abort"  # it goes to the backend; the session ends when its answer starts


FORWARD, DROP, SWALLOW, ABORT = Action.FORWARD, Action.DROP, Action.SWALLOW, Action.ABORT


@dataclasses.dataclass(frozen=True, slots=True)
class RequestVerdict:
    """What a protocol says about a request, from its head (``request_head``) or its end
    (``request_end``).

    ``send``: bytes sent to the backend in place of the head, or after the whole request.
    ``answered``: the backend answers this request (false: no answer will come, and an error
    reply would be taken for another request's answer). ``gate``: the requests after this one
    wait until its answer is in (the answer decides what follows: an upgrade, mail data).
    ``cut``: the request ends at this head (the client waits for an answer before it sends the
    body). ``last``: no request after this one passes; the connection ends after its answer.
    ``stream``: after this message the session is a plain byte stream. ``real_answer``: the
    backend's answer must reach the client (an ``inject`` error may not replace it).
    """

    send: bytes | None = None
    answered: bool = True
    gate: bool = False
    cut: bool = False
    last: bool = False
    stream: bool = False
    real_answer: bool = False


@dataclasses.dataclass(frozen=True, slots=True)
class AnswerVerdict:
    """What a protocol says about an answer message, from its head (``answer_head``) or its
    end (``answer_end``).

    ``complete``: the answer to the request is complete (false: more of it follows, as after an
    HTTP ``100 Continue``). ``unsolicited``: nobody asked for this message (a greeting, a
    pub/sub message): it passes and answers nothing. ``send``: bytes sent to the client in
    place of the head. ``hide``: the message does not reach the client (an answer to the
    proxy's own probe). ``last`` and ``stream`` as for :class:`RequestVerdict`.
    """

    complete: bool = True
    unsolicited: bool = False
    send: bytes | None = None
    hide: bool = False
    last: bool = False
    stream: bool = False


@dataclasses.dataclass(frozen=True, slots=True)
class ErrorReply:
    """The protocol's error answer to a request: ``data`` for the client and, with ``close``,
    the end of the connection once it is written."""

    data: bytes
    close: bool = False


#: A request with nothing special about it.
PASS = RequestVerdict()
#: A request the backend does not answer.
NO_ANSWER = RequestVerdict(answered=False)
#: The answer to the request is complete.
COMPLETE = AnswerVerdict()
#: Part of the answer: more follows (an HTTP 1xx).
PARTIAL = AnswerVerdict(complete=False)
#: A message nobody asked for: it only passes.
UNSOLICITED = AnswerVerdict(unsolicited=True)


class Exchange:
    """One request and its answer, as the driver follows them.

    ``behavior`` acts on the request (``answer_behavior``, a behavior whose ``direction`` is
    ``to_client``, on its answer instead); ``action`` says what happens to the request,
    ``request`` is the last message event its framer returned (its head, then its end),
    ``reply`` the error written to the client in the exchange's turn, ``after`` the
    ``on_after_handle`` hook run then (with the direction it gets), ``close`` whether the
    session ends once the exchange is finished. ``moved`` is true while a behavior reads the
    request itself (``protocol.read``): the rest of it goes to that behavior. ``count`` is
    how many answers it is owed: more than one for a run of plain requests that passed
    together untouched (``request`` is then the first of them).
    """

    __slots__ = (
        "behavior",
        "action",
        "phase",
        "request",
        "reply",
        "after",
        "close",
        "moved",
        "hooks",
        "answer_behavior",
        "answer_started",
        "count",
        "plain",
    )

    def __init__(self, behavior: Any, action: Action, hooks: bool = False) -> None:
        self.behavior = behavior
        self.action = action
        self.phase = Phase.READING
        self.request: Any = None
        self.reply: bytes | None = None
        self.after: Any = None
        self.close = False
        self.moved = False
        self.hooks = hooks  # run on_after_handle when finished (the behavior asked for it)
        self.answer_behavior: Any = None
        self.answer_started = False
        self.count = 1  # answers owed: a run of plain requests is one exchange of many
        self.plain = False  # a plain request (skimmed), though a behavior acted on it

    def plain_run(self) -> bool:
        """Whether this is a run of plain requests (skimmed) awaiting its answers, with
        nothing to do once they are there: a behavior may have acted on the request (a
        delay), not on what comes after it."""
        return (
            (self.behavior is None or self.plain)
            and self.action is Action.FORWARD
            and (self.phase is Phase.AWAITING or self.phase is Phase.ANSWERING)
            and self.answer_behavior is None
            and self.reply is None
            and self.after is None
            and not self.close
        )

    def left_to_write(self) -> bool:
        """Whether, once answered, something is still to be done in its turn: a reply to
        write, a hook to run, the session to close."""
        return self.reply is not None or self.after is not None or self.close

    def __repr__(self) -> str:
        name = self.behavior.name if self.behavior is not None else "-"
        return f"<Exchange {name} {self.action.value} {self.phase.value} {self.request!r}>"
