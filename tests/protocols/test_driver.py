"""The framed driver on its own: a toy line protocol between two real socket pairs.

Each test drives the events by hand (``protocol.handle`` for one readable event) and reads what
reached the peers, so that what the driver promises can be checked exactly: batches forwarded
in one write, answers in the requests' order, each verdict doing what it says.
"""

from __future__ import annotations

import random
import socket
import types

import gevent
import pytest

from vaurien.behaviors import Behavior
from vaurien.behaviors.base import BaseBehavior
from vaurien.endpoint import Endpoint
from vaurien.mix import SITS_OUT
from vaurien.protocols.framed import (
    NO_ANSWER,
    PARTIAL,
    UNSOLICITED,
    End,
    ErrorReply,
    FramedProtocol,
    LineReader,
    Phase,
    RequestVerdict,
)


class Line(End):
    __slots__ = ("text",)

    def __init__(self, text: bytes) -> None:
        self.text = text

    def __repr__(self) -> str:
        return f"<Line {self.text!r}>"


class LineFramer:
    """One message per line."""

    passive = False

    def __init__(self) -> None:
        self.idle = True
        self._lines = LineReader(1024)

    def begin(self, request):
        pass

    def feed(self, data, pos, end):
        self.idle = False
        line, pos = self._lines.take(data, pos, end)
        if line is None:
            return pos, None
        self.idle = True
        return pos, Line(line)

    def feed_eof(self):
        return None


class Lines(FramedProtocol):
    """Requests and answers are lines; a request's first word asks for a verdict."""

    name = "test_lines"

    def request_framer(self):
        return LineFramer()

    def answer_framer(self):
        return LineFramer()

    def error_reply(self, state, request, answered, forwarded):
        if not answered:
            return None
        return ErrorReply(b"ERR " + request.text, close=request.text.startswith(b"FATAL"))

    def request_end(self, state, message, forwarded):
        word = message.text.split()[0] if message.text.split() else b""
        return {
            b"NOREPLY": NO_ANSWER,
            b"GATE": RequestVerdict(gate=True),
            b"LAST": RequestVerdict(last=True),
            b"STREAM": RequestVerdict(answered=False, stream=True),
            b"TRAIL": RequestVerdict(send=b"TRAILER\n"),
        }.get(word)

    def answer_end(self, state, request, message):
        first = message.text[:1]
        if first == b"*":
            return UNSOLICITED
        if first == b"~":
            return PARTIAL
        return None

    def peek(self, state, data, pos, end):
        eol = data.find(b"\n", pos, end)
        if eol < 0:
            return None
        words = bytes(data[pos:eol]).split()
        return {"word": words[0].decode()} if words else {}


class SkimmedLines(Lines):
    """Lines whose plain requests (``GET ...``) and answers (not ``*`` or ``~``) are skimmed,
    so that its events may be relayed from watcher callbacks."""

    name = "test_skimmed_lines"

    def skim(self, state, data, pos, end, untaken=None, most=None):
        count, first = 0, None
        while (
            count != most
            and (eol := data.find(b"\n", pos, end)) >= 0
            and data[pos : pos + 3] == b"GET"
        ):
            first = first or Line(bytes(data[pos : eol + 1]))
            pos, count = eol + 1, count + 1
        return pos, count, first

    def skim_answers(self, state, request, data, pos, end, most):
        count = 0
        while count < most and (eol := data.find(b"\n", pos, end)) >= 0:
            if data[pos : pos + 1] in (b"*", b"~"):
                break
            pos, count = eol + 1, count + 1
        return pos, count


class CountingEndpoint(Endpoint):
    """An endpoint that counts the writes the driver makes (one per batch)."""

    def __init__(self, *args):
        super().__init__(*args)
        self.writes = 0

    def write(self, data):
        self.writes += 1
        super().write(data)


class Harness:
    """A session of the toy protocol: ``client`` and ``backend`` are the far ends (what the
    application and the server hold); the proxy's endpoints are ``session.client`` and
    ``session.backend``. ``picks`` lists the behaviors the next requests get (then dummy). With
    ``fields``, the session wants the requests' fields (as when a rule tests them):
    ``picked_fields`` lists what each pick got."""

    def __init__(self, *picks, fields=False, protocol=Lines):
        self.dummy = _behavior("dummy")
        self.proxy = types.SimpleNamespace(
            random=random.Random(1),
            plan=types.SimpleNamespace(exclusive=False, quiet=frozenset({id(self.dummy)})),
            backend=None,
        )
        self.picked_fields = []
        self.protocol = protocol()
        self.protocol.settings = {"buffer": 65536, "reuse_socket": False}
        self.protocol.proxy = self.proxy
        self.picks = list(picks)
        self.closed = False
        self.client, client_side = socket.socketpair()
        backend_side, self.backend = socket.socketpair()
        for sock in (self.client, self.backend):
            sock.settimeout(5)
        for sock in (client_side, backend_side):
            sock.setblocking(False)  # as the proxy's own sockets are
        self.session = types.SimpleNamespace(
            closed=False,
            close=self._close,
            reset=self._close,
            pick=self._pick,
            passes_everything=lambda: not self.picks and not fields,
            count_picks=lambda count: None,
            wants_fields=lambda: fields,
            names_requests=lambda: False,
            proxy=self.proxy,
        )
        self.session.client = CountingEndpoint(client_side, "client", self.session)
        self.session.backend = CountingEndpoint(backend_side, "backend", self.session)
        self.session.state = self.protocol.open_session(self.session)

    @property
    def flow(self):
        return self.session.state

    def _pick(self, to_backend=None, fields=None):
        self.picked_fields.append(fields)
        return self.picks.pop(0) if self.picks else self.dummy

    def _close(self):
        self.session.closed = True

    def requests(self, data: bytes) -> None:
        """The client sends ``data``; the proxy handles one readable event of it."""
        self.client.sendall(data)
        self.request_event()

    def request_event(self) -> None:
        session = self.session
        self.protocol.handle(session.client, session.backend, True, None)

    def answers(self, data: bytes) -> None:
        """The backend sends ``data``; the proxy handles one readable event of it."""
        self.backend.sendall(data)
        session = self.session
        self.protocol.handle(session.backend, session.client, False, None)

    def close(self):
        for sock in (self.client, self.backend):
            sock.close()
        for endpoint in (self.session.client, self.session.backend):
            endpoint.really_close()


def _behavior(name, **options):
    behavior = Behavior.create(name, options)
    behavior.sits_out = SITS_OUT[behavior.settings["direction"]]
    return behavior


def received(sock: socket.socket, expected: bytes) -> bool:
    """Whether ``sock`` receives exactly ``expected`` next (fewer bytes: a timeout)."""
    data = b""
    while len(data) < len(expected):
        data += sock.recv(len(expected) - len(data))
    return data == expected


def nothing_waits(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        sock.recv(1)
    except BlockingIOError:
        return True
    finally:
        sock.settimeout(5)
    return False


@pytest.fixture
def harness():
    made = []

    def make(*picks, **options):
        made.append(Harness(*picks, **options))
        return made[-1]

    yield make
    for harness in made:
        harness.close()


def test_pipelined_requests_and_their_answers_pass_in_one_write_each(harness):
    h = harness()
    requests = b"".join(b"GET %d\n" % i for i in range(50))
    h.requests(requests)
    assert received(h.backend, requests)
    assert h.session.backend.writes == 1
    assert len(h.flow.queue) == 50
    answers = b"".join(b"OK %d\n" % i for i in range(50))
    h.answers(answers)
    assert received(h.client, answers)
    assert h.session.client.writes == 1
    assert not h.flow.queue


def test_when_rules_test_fields_each_request_is_picked_with_its_own(harness):
    h = harness(fields=True)
    h.requests(b"GET a\nPUT b\n")
    assert received(h.backend, b"GET a\nPUT b\n")
    assert h.session.backend.writes == 1  # still one batch
    assert h.picked_fields == [{"word": "GET"}, {"word": "PUT"}]


def test_a_request_whose_head_is_cut_is_picked_once_its_head_is_in(harness):
    h = harness(fields=True)
    rest = gevent.spawn(h.client.sendall, b"T x\n")  # runs once the proxy waits for it
    h.requests(b"one\nGE")
    assert received(h.backend, b"one\nGET x\n")
    assert rest.dead
    assert h.picked_fields == [{"word": "one"}, {"word": "GET"}]
    assert not h.session.client.has_pending


def test_a_head_the_client_never_finishes_is_picked_without_fields(harness):
    h = harness(fields=True)
    h.client.sendall(b"GET a\nunfinished")
    h.client.shutdown(socket.SHUT_WR)
    h.request_event()
    assert received(h.backend, b"GET a\nunfinished")
    assert h.picked_fields == [{"word": "GET"}, {}]


def test_an_error_splits_the_batch_and_answers_in_its_turn(harness):
    h = harness(_behavior("dummy"), _behavior("error"))
    h.requests(b"one\ntwo\nthree\n")
    # "one" went in a batch of its own; "two" is answered by the proxy; "three" waits.
    assert received(h.backend, b"one\n")
    assert h.session.client.has_pending and nothing_waits(h.client)
    h.request_event()
    assert received(h.backend, b"three\n")
    h.answers(b"OK one\nOK three\n")
    assert received(h.client, b"OK one\nERR two\nOK three\n")
    assert not h.flow.queue


def test_an_error_reply_that_closes_ends_the_session_after_the_answers_before_it(harness):
    h = harness(_behavior("dummy"), _behavior("error"))
    h.requests(b"one\nFATAL two\nthree\n")
    assert received(h.backend, b"one\n")
    assert h.flow.last  # nothing after the closing error passes
    h.request_event()
    assert nothing_waits(h.backend)
    h.answers(b"OK one\n")
    assert received(h.client, b"OK one\nERR FATAL two\n")
    assert h.session.closed


def test_a_request_without_answer_is_finished_at_once(harness):
    h = harness()
    h.requests(b"NOREPLY a\nGET b\n")
    assert received(h.backend, b"NOREPLY a\nGET b\n")
    assert [e.phase for e in h.flow.queue] == [Phase.AWAITING]
    h.answers(b"OK b\n")
    assert received(h.client, b"OK b\n")


def test_an_error_on_a_request_without_answer_sends_nothing(harness):
    h = harness(_behavior("error"))
    h.requests(b"NOREPLY a\n")
    assert nothing_waits(h.backend) and nothing_waits(h.client)
    assert not h.flow.queue


def test_unsolicited_and_partial_answers_pass_in_place(harness):
    h = harness()
    h.requests(b"a\nb\n")
    assert received(h.backend, b"a\nb\n")
    h.answers(b"*push\n~part of a\nrest of a\n*push\nOK b\n")
    assert received(h.client, b"*push\n~part of a\nrest of a\n*push\nOK b\n")
    assert not h.flow.queue


def test_a_trailer_is_sent_after_its_request(harness):
    h = harness()
    h.requests(b"TRAIL x\nGET y\n")
    assert received(h.backend, b"TRAIL x\nTRAILER\nGET y\n")


def test_last_drops_what_the_client_sends_after_it(harness):
    h = harness()
    h.requests(b"LAST a\nGET b\n")
    assert received(h.backend, b"LAST a\n")
    h.request_event()  # the rest is read and dropped
    assert nothing_waits(h.backend)
    assert not h.session.client.has_pending


def test_a_gate_holds_the_next_request_until_its_answer(harness):
    h = harness()
    h.requests(b"GATE a\nGET b\n")
    assert received(h.backend, b"GATE a\n")
    waiting = gevent.spawn(h.request_event)
    gevent.sleep(0.05)
    assert not waiting.dead and nothing_waits(h.backend)
    h.answers(b"OK a\n")
    waiting.join(timeout=5)
    assert waiting.dead
    assert received(h.backend, b"GET b\n")


def test_after_a_stream_verdict_bytes_pass_as_they_are(harness):
    h = harness()
    h.requests(b"STREAM\nnot\x00lines at all")
    assert received(h.backend, b"STREAM\n")
    assert h.flow.stream
    h.request_event()
    assert received(h.backend, b"not\x00lines at all")


def test_an_answer_may_start_before_its_request_is_complete(harness):
    h = harness()
    h.requests(b"a very long req")
    assert received(h.backend, b"a very long req")
    h.answers(b"EARLY\n")  # the server answers before the request ends
    assert received(h.client, b"EARLY\n")
    h.requests(b"uest\nGET b\n")
    assert received(h.backend, b"uest\nGET b\n")
    h.answers(b"OK b\n")
    assert received(h.client, b"OK b\n")
    assert not h.flow.queue


class Pieces(BaseBehavior):
    """Moves each request itself, three bytes per event."""

    name = "test_pieces"

    def on_before_handle(self, protocol, source, dest, to_backend):
        dest.sendall(protocol.read(source, 3).upper())
        return False


def test_a_behavior_that_reads_a_request_itself_gets_exactly_that_request(harness):
    pieces = Pieces()
    pieces.sits_out = None
    h = harness(pieces)
    h.requests(b"abcdefg\nnext\n")
    assert received(h.backend, b"ABC")
    h.request_event()
    h.request_event()
    assert received(h.backend, b"DEFG\n")  # the rest of the request, and no more
    assert h.flow.current is None
    h.request_event()  # the next request rides along
    assert received(h.backend, b"next\n")
    h.answers(b"OK 1\nOK 2\n")
    assert received(h.client, b"OK 1\nOK 2\n")


def test_a_to_client_delay_holds_the_answer_not_the_request(harness):
    h = harness(_behavior("delay", sleep=0.2, direction="to_client"))
    h.requests(b"a\nb\n")
    assert received(h.backend, b"a\nb\n")  # both passed in one batch
    assert h.session.backend.writes == 1
    started = gevent.get_hub().loop.now()
    h.answers(b"OK a\nOK b\n")
    assert gevent.get_hub().loop.now() - started >= 0.15
    assert received(h.client, b"OK a\nOK b\n")


def test_a_behavior_reading_an_answer_passes_a_partial_one_before_the_rest_comes(harness):
    # The client acts on the partial answer (an HTTP 100 Continue, a PostgreSQL
    # CopyInResponse) before the backend sends the rest: holding it for the rest would never end.
    slicer = _behavior("slicer", average_size=4, size_variation=0, delay=0, direction="to_client")
    h = harness(slicer)
    slicer.proxy = h.proxy  # its random source
    h.requests(b"a\n")
    assert received(h.backend, b"a\n")
    h.answers(b"~go on\n")
    assert received(h.client, b"~go on\n")
    assert h.flow.answering is not None  # the rest of the answer goes to the same behavior
    h.answers(b"rest of a\n")
    assert received(h.client, b"rest of a\n")
    assert h.flow.answering is None and not h.flow.queue


# -- relayed from watcher callbacks ---------------------------------------------------------------


class HandOver:
    """The ``pick`` a session's relay gives a protocol that picks itself: a call hands the
    event to a pump (here: counted, and the test runs the event with ``handle``)."""

    def __init__(self):
        self.calls = 0

    def __call__(self):
        self.calls += 1
        return False


def test_a_protocol_that_skims_nothing_is_not_relayed():
    assert Lines.relay is None
    assert SkimmedLines.relay is not None


def test_plain_requests_and_answers_are_relayed_in_one_write_each_without_a_pick(harness):
    h = harness(protocol=SkimmedLines)
    hand_over = HandOver()
    requests = b"".join(b"GET %d\n" % i for i in range(20))
    h.client.sendall(requests)
    assert h.protocol.relay(h.session.client, h.session.backend, hand_over) == len(requests)
    assert received(h.backend, requests)
    assert h.session.backend.writes == 1
    assert [exchange.count for exchange in h.flow.queue] == [20]  # one run
    answers = b"".join(b"OK %d\n" % i for i in range(20))
    h.backend.sendall(answers)
    assert h.protocol.relay(h.session.backend, h.session.client, hand_over) == len(answers)
    assert received(h.client, answers)
    assert not h.flow.queue
    assert hand_over.calls == 0 and h.picked_fields == []
    assert h.protocol.relay(h.session.backend, h.session.client, hand_over) is None  # nothing


def test_a_request_that_is_not_plain_goes_to_a_pump_with_what_follows(harness):
    h = harness(protocol=SkimmedLines)
    hand_over = HandOver()
    h.client.sendall(b"GET a\nPUT b\nGET c\n")
    assert h.protocol.relay(h.session.client, h.session.backend, hand_over) is None
    assert hand_over.calls == 1
    assert received(h.backend, b"GET a\n") and nothing_waits(h.backend)
    h.picks.append(h.dummy)  # a pick is due: the session no longer passes everything
    h.request_event()  # the pump's first event: what was pushed back
    assert received(h.backend, b"PUT b\nGET c\n")
    assert len(h.picked_fields) == 1  # PUT b picked; GET c (passes everything again) skimmed


def test_the_last_answer_of_a_run_with_an_error_behind_it_goes_to_a_pump(harness):
    h = harness(protocol=SkimmedLines)
    hand_over = HandOver()
    h.client.sendall(b"GET a\nGET b\n")
    h.protocol.relay(h.session.client, h.session.backend, hand_over)
    h.picks.append(_behavior("error"))
    h.requests(b"PUT c\n")  # the client's side is a pump by now: the error waits its turn
    assert received(h.backend, b"GET a\nGET b\n") and nothing_waits(h.backend)
    h.backend.sendall(b"OK a\nOK b\n")
    assert h.protocol.relay(h.session.backend, h.session.client, hand_over) is None
    assert hand_over.calls == 1
    assert received(h.client, b"OK a\n")
    # The pump's first event: the run's last answer, then the error in its turn (then it reads
    # on: the backend's end of stream ends the event here).
    h.backend.shutdown(socket.SHUT_WR)
    h.protocol.handle(h.session.backend, h.session.client, False, None)
    assert received(h.client, b"OK b\nERR PUT c\n")
    assert not h.flow.queue


def test_under_chaos_plain_requests_pass_while_their_picks_are_quiet(harness):
    h = harness(protocol=SkimmedLines)
    error = _behavior("error")
    h.picks.extend([h.dummy, h.dummy, error])  # chaos in force: a pick for each request
    hand_over = HandOver()
    h.client.sendall(b"GET a\nGET b\nGET c\nGET d\n")
    assert h.protocol.relay(h.session.client, h.session.backend, hand_over) is None
    assert hand_over.calls == 1 and h.flow.picked is error  # its pick goes to the pump
    assert received(h.backend, b"GET a\nGET b\n") and nothing_waits(h.backend)
    assert len(h.picked_fields) == 3  # GET d waits for its own pick
    h.picks.append(h.dummy)
    h.request_event()  # the pump's first event: GET c, with the pick made
    assert len(h.picked_fields) == 3 and h.flow.picked is None
    h.request_event()  # GET d, picked now
    assert len(h.picked_fields) == 4 and received(h.backend, b"GET d\n")
    h.answers(b"OK a\nOK b\nOK d\n")
    assert received(h.client, b"OK a\nOK b\nERR GET c\nOK d\n")


def test_a_pick_under_chaos_that_is_quiet_for_all_relays_them_all(harness):
    h = harness(protocol=SkimmedLines)
    h.picks.extend([h.dummy] * 3)
    h.client.sendall(b"GET a\nGET b\nGET c\n")
    assert h.protocol.relay(h.session.client, h.session.backend, HandOver()) == 18
    assert received(h.backend, b"GET a\nGET b\nGET c\n")
    assert [exchange.count for exchange in h.flow.queue] == [3]


def test_a_pump_gives_the_direction_back_once_at_rest(harness):
    h = harness(_behavior("error"), _behavior("delay", sleep=0), protocol=SkimmedLines)
    client, backend = h.session.client, h.session.backend
    h.client.sendall(b"GET a")  # half a request: not at rest
    h.request_event()
    assert not h.protocol.relays_next(client, True)
    h.requests(b"\nGET b\n")  # GET a gets the error; GET b (delayed) waits, pushed back
    assert received(h.client, b"ERR GET a\n")
    assert not h.protocol.relays_next(client, True)
    h.request_event()
    assert received(h.backend, b"GET b\n")
    assert not h.protocol.relays_next(backend, False)  # an answer a hook waits for is due
    h.answers(b"OK b\n")
    assert received(h.client, b"OK b\n")
    assert h.protocol.relays_next(backend, False)
    assert h.protocol.relays_next(client, True)  # (it would wait until then: delay's after)


def test_a_pump_keeps_the_direction_while_a_relay_could_take_no_request(harness):
    h = harness(fields=True, protocol=SkimmedLines)  # rules read every request's fields
    h.requests(b"GET a\n")
    assert received(h.backend, b"GET a\n") and h.picked_fields == [{"word": "GET"}]
    assert not h.protocol.relays_next(h.session.client, True)


def test_the_client_side_waits_for_its_error_to_be_written_before_it_goes_back(harness):
    h = harness(protocol=SkimmedLines)
    h.picks.extend([h.dummy, _behavior("error")])
    client = h.session.client
    h.requests(b"GET a\nPUT b\n")  # the error waits for GET a's answer
    assert received(h.backend, b"GET a\n")
    back = gevent.spawn(h.protocol.relays_next, client, True)
    gevent.sleep(0.05)
    assert not back.ready()  # it waits, as a pump may
    h.answers(b"OK a\n")
    assert back.get(timeout=5) is True
    assert received(h.client, b"OK a\nERR PUT b\n") and not h.flow.queue


@pytest.mark.parametrize("before", [True, False])
def test_the_answer_to_a_request_a_delay_held_is_relayed_unless_the_delay_comes_after(
    harness, before
):
    h = harness(protocol=SkimmedLines)
    h.picks.append(_behavior("delay", sleep=0, before=before))
    client, backend = h.session.client, h.session.backend
    hand_over = HandOver()
    h.client.sendall(b"GET a\n")
    assert h.protocol.relay(client, backend, hand_over) is None and h.flow.picked is not None
    h.request_event()  # the pump: the delay's hook, then GET a forwarded
    assert received(h.backend, b"GET a\n")
    h.backend.sendall(b"OK a\n")
    relayed = h.protocol.relay(backend, client, hand_over)
    if before:  # nothing left to do after the answer: it passes as a plain one
        assert relayed == 5 and hand_over.calls == 1
        assert received(h.client, b"OK a\n") and not h.flow.queue
    else:  # the delay comes once the answer is through: a pump runs it
        assert relayed is None and hand_over.calls == 2


def test_the_end_of_the_stream_goes_to_a_pump(harness):
    h = harness(protocol=SkimmedLines)
    hand_over = HandOver()
    h.client.shutdown(socket.SHUT_WR)
    assert h.protocol.relay(h.session.client, h.session.backend, hand_over) is None
    assert hand_over.calls == 1 and h.session.client.eof
