"""The relay: HTTP/2 terminated on both sides of a session, streams mapped one to one.

Sans-IO, on ``h2``: bytes in (:meth:`Relay.receive`), bytes out (:meth:`Relay.output`), never a
socket and never a wait. The relay has one ``h2`` connection toward the client (a server) and
one toward the backend (a client). Each request stream of the client is a :class:`Stream` with
two :class:`Leg` values: the request (client to backend) and the response (backend to client).

A leg either relays (what arrives is sent on as the other side's flow control allows) or is
*held* (what arrives waits in the leg's inbox, for a behavior to take, or until the leg is
released). Received data is acknowledged to its sender only once the other side has taken it
(sent within its window) or a behavior has read it: a slow reader slows its own stream, and
the relay never holds more than the windows it advertised.

SETTINGS are passed on: what the backend accepts per stream (the initial window, the number
of concurrent streams, frame and header list sizes) is what the relay advertises to the client,
and the other way round. The connection windows grow as the far side's do. GOAWAY frames are
taken out before ``h2`` sees them (see :mod:`.frames`), so a graceful shutdown lets the streams
in flight finish.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import h11
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.events import (
    DataReceived,
    InformationalResponseReceived,
    PriorityUpdated,
    PushedStreamReceived,
    RemoteSettingsChanged,
    RequestReceived,
    ResponseReceived,
    StreamEnded,
    StreamReset,
    TrailersReceived,
    WindowUpdated,
)
from h2.exceptions import H2Error, StreamClosedError, TooManyStreamsError
from h2.settings import SettingCodes

from vaurien.errors import ProtocolError
from vaurien.protocols.http2.frames import FrameScanner, GoAway, goaway_frame
from vaurien.protocols.http2.streams import (
    Leg,
    Side,
    Stream,
    _config,
)
from vaurien.protocols.http2.upgrade import ClientStart
from vaurien.protocols.http2.windows import Windows

NO_ERROR = ErrorCodes.NO_ERROR
CANCEL = ErrorCodes.CANCEL
REFUSED_STREAM = ErrorCodes.REFUSED_STREAM
INTERNAL_ERROR = ErrorCodes.INTERNAL_ERROR


class Relay(ClientStart, Windows):
    """Two ``h2`` connections and the streams between them (see the module documentation).

    ``on_request(stream)`` is called for each new request before anything of it is sent on;
    it may hold the request (or the response) leg. ``on_response(stream)`` is called when a
    held response leg gets its head. Whoever waits on a stream sets ``stream.waiter``; its
    ``set()`` is called when something about the stream changes.
    """

    def __init__(
        self,
        on_request: Callable[[Stream], None] | None = None,
        on_response: Callable[[Stream], None] | None = None,
    ) -> None:
        self.on_request = on_request
        self.on_response = on_response
        backend = H2Connection(_config(client_side=True))
        backend.initiate_connection()
        backend.update_settings({SettingCodes.ENABLE_PUSH: 0})
        self.client = Side("client", None, FrameScanner())
        self.backend = Side("backend", backend, FrameScanner())
        self._start = bytearray()  # the client's first bytes, until they show how it speaks
        self._upgrade: h11.Connection | None = None
        self._upgrade_head: h11.Request | None = None
        self._upgrade_body = bytearray()
        self._client_settings: dict[int, int] = {}  # the backend's, until the client speaks
        self.refusing = False  # the backend goes away: new streams are refused
        self.last_announced: int | None = None  # the last stream id announced to the client
        self._events = {
            RequestReceived: self._request,
            ResponseReceived: self._response,
            InformationalResponseReceived: self._informational,
            TrailersReceived: self._trailers,
            DataReceived: self._data,
            StreamEnded: self._ended,
            StreamReset: self._reset,
            WindowUpdated: self._window,
            RemoteSettingsChanged: self._settings,
            PriorityUpdated: self._priority,
            PushedStreamReceived: self._pushed,
        }

    # -- bytes in, bytes out -------------------------------------------------------------------

    def receive(self, side: Side, data: bytes) -> None:
        """Take what ``side``'s peer sent."""
        if side.conn is None:
            data = self._first_bytes(data)
            if side.conn is None:
                return
        events = self._events
        try:
            pieces = side.scanner.feed(data)
        except ProtocolError as e:
            raise ProtocolError(f"{side.role}: not valid HTTP/2: {e}") from None
        for piece in pieces:
            if isinstance(piece, GoAway):
                self._goaway(side, piece)
                continue
            try:
                received = side.conn.receive_data(piece)
            except H2Error as e:
                raise ProtocolError(f"{side.role}: not valid HTTP/2: {e}") from None
            for event in received:
                handler = events.get(type(event))
                if handler is not None:
                    handler(side, event)

    def output(self, side: Side) -> bytes:
        """What to send to ``side``'s peer now."""
        conn = side.conn
        if conn is None:
            return b""
        data = conn.data_to_send()
        if side.out:
            data = bytes(side.out + data)
            side.out.clear()
        return data

    def close(self, side: Side, error_code: int = NO_ERROR) -> None:
        """Say GOAWAY to ``side``'s peer: the connection ends (its peer went away)."""
        if side.conn is not None:
            last = side.conn.highest_inbound_stream_id if side is self.client else 0
            self._write_goaway(side, last, error_code)

    @property
    def streams(self) -> int:
        """How many streams are open."""
        return len(self.client.streams)

    # -- what a behavior does to a stream ------------------------------------------------------

    def hold(self, leg: Leg) -> None:
        """Keep what arrives on ``leg`` in its inbox until :meth:`take` or :meth:`release`."""
        leg.held = True

    def release(self, leg: Leg) -> None:
        """Let ``leg`` relay: its head and what is in its inbox go on, and all that follows."""
        leg.held = False
        stream = leg.stream
        if leg.dropped or stream.done or (stream.answered and not leg.to_backend):
            return
        if leg.pending:
            leg.outbox.append((bytes(leg.inbox[leg.inbox_pos :]), True))
            leg.inbox.clear()
            leg.inbox_pos = 0
        if leg.src_ended:
            leg.end_queued = True
        if leg.head is None:
            return  # the response has not started: it goes on when it does
        if not leg.opened:
            self._open(leg)
        self._flush(leg)

    def take(self, leg: Leg, size: int) -> bytes | None:
        """Up to ``size`` bytes of what arrived on a held ``leg`` (acknowledged to its sender);
        ``b""`` at its end, None when nothing is there yet."""
        pending = leg.pending
        if not pending:
            return b"" if leg.src_ended or leg.stream.done else None
        start = leg.inbox_pos
        size = min(size, pending)
        data = bytes(leg.inbox[start : start + size])
        leg.inbox_pos = start = start + size
        if start == len(leg.inbox):
            leg.inbox.clear()
            leg.inbox_pos = 0
        elif start > 65536 and start * 2 > len(leg.inbox):
            del leg.inbox[:start]
            leg.inbox_pos = 0
        if not leg.stream.done:
            leg.src.conn.acknowledge_received_data(size, leg.src_id)
        return data

    def put(self, leg: Leg, data: bytes) -> None:
        """Send ``data`` on ``leg`` (opening it if needed), as its destination's window allows;
        what waits is in ``leg.outbox``."""
        if leg.stream.done or leg.dst_ended:
            return
        if not leg.opened:
            if leg.head is None or not self._open(leg):
                return
        if data:
            leg.outbox.append((bytes(data), False))
            self._flush(leg)

    def finish(self, leg: Leg) -> None:
        """End ``leg`` once what waits in its outbox is sent (a behavior moved its data)."""
        if leg.stream.done or leg.dst_ended:
            return
        leg.end_queued = True
        if not leg.opened:
            if leg.head is None or not self._open(leg):
                return
        self._flush(leg)

    def drop(self, leg: Leg) -> None:
        """Acknowledge and discard what ``leg`` holds and everything that arrives on it."""
        leg.dropped = True
        leg.held = False
        self._discard(leg)

    def answer(self, stream: Stream, head: list[Any], body: bytes = b"") -> None:
        """Answer the client with ``head`` and ``body`` in place of the backend's response.

        What the backend sends for this stream is discarded; a request the client is still
        sending is dropped, and once the answer is complete the client is told to stop
        (RST_STREAM NO_ERROR, as RFC 9113 section 8.1 allows).
        """
        if stream.done or stream.front_closed:
            return
        response = stream.response
        if response.opened:  # the response already started: it can only be cut
            self.reset(stream, INTERNAL_ERROR)
            return
        stream.answered = stream.cut_request = True
        self._discard(response)
        response.held = False
        response.head = head
        response.end_queued = True
        response.trailers = None
        if body:
            response.outbox.append((body, False))
        if not stream.request.src_ended or stream.back_id is None:
            self.drop(stream.request)
        self._open(response)
        self._flush(response)

    def reset(self, stream: Stream, error_code: int = INTERNAL_ERROR) -> None:
        """Reset ``stream`` on both sides: the client gets RST_STREAM ``error_code``, the
        backend (if it had the request) RST_STREAM CANCEL."""
        if stream.done:
            return
        if not stream.front_closed:
            self._reset_stream(self.client, stream.front_id, error_code)
        if stream.back_id is not None and not stream.back_closed:
            self._reset_stream(self.backend, stream.back_id, CANCEL)
        self._close(stream)

    # -- events --------------------------------------------------------------------------------

    def _request(self, side: Side, event: RequestReceived) -> None:
        stream_id = event.stream_id
        if self.refusing or (self.last_announced is not None and stream_id > self.last_announced):
            self._reset_stream(side, stream_id, REFUSED_STREAM)
            return
        stream = self._new_stream(stream_id, event.headers)
        if event.priority_updated is not None:
            stream.request.priority = event.priority_updated
        if event.stream_ended is not None:
            stream.request.src_ended = True
        self._started(stream)

    def _new_stream(self, stream_id: int, head: list[Any]) -> Stream:
        stream = Stream(self, stream_id, head)
        self.client.streams[stream_id] = stream
        return stream

    def _started(self, stream: Stream) -> None:
        if self.on_request is not None:
            self.on_request(stream)
        request = stream.request
        if not request.held and not request.dropped and not stream.done and not stream.answered:
            self.release(request)

    def _response(self, side: Side, event: ResponseReceived) -> None:
        stream = side.streams.get(event.stream_id)
        if stream is None:
            return
        response = stream.response
        if event.stream_ended is not None:
            response.src_ended = True
        if stream.answered:
            return
        if stream.abort:
            self.reset(stream, INTERNAL_ERROR)
            return
        if stream.replace is not None:
            self.answer(stream, *stream.replace)
            return
        response.head = event.headers
        if response.held:
            if self.on_response is not None:
                self.on_response(stream)
            self._wake(stream)
        else:
            self.release(response)

    def _informational(self, side: Side, event: InformationalResponseReceived) -> None:
        stream = side.streams.get(event.stream_id)
        if stream is not None and not stream.answered and not stream.front_closed:
            self.client.conn.send_headers(stream.front_id, event.headers)

    def _trailers(self, side: Side, event: TrailersReceived) -> None:
        stream = side.streams.get(event.stream_id)
        if stream is not None and not (stream.answered and side is self.backend):
            leg = stream.request if side is self.client else stream.response
            leg.trailers = event.headers

    def _data(self, side: Side, event: DataReceived) -> None:
        stream = side.streams.get(event.stream_id)
        data = event.data
        size = len(data)
        flow = event.flow_controlled_length
        conn = side.conn
        if stream is None:
            conn.acknowledge_received_data(flow, event.stream_id)
            return
        leg = stream.request if side is self.client else stream.response
        if leg.dropped or (stream.answered and side is self.backend):
            conn.acknowledge_received_data(flow, event.stream_id)
            return
        if flow > size:  # padding: nobody will take it
            conn.acknowledge_received_data(flow - size, event.stream_id)
        if event.stream_ended is not None:
            leg.src_ended = True
        if leg.held or not leg.opened:
            leg.inbox += data
            self._wake(stream)
            return
        if size:
            leg.outbox.append((data, True))
        if leg.src_ended:
            leg.end_queued = True
        self._flush(leg)

    def _ended(self, side: Side, event: StreamEnded) -> None:
        stream = side.streams.get(event.stream_id)
        if stream is None:
            return
        leg = stream.request if side is self.client else stream.response
        leg.src_ended = True
        if leg.held or leg.dropped or not leg.opened or (stream.answered and side is self.backend):
            self._wake(stream)
            self._check(stream)
            return
        leg.end_queued = True
        self._flush(leg)

    def _reset(self, side: Side, event: StreamReset) -> None:
        stream = side.streams.get(event.stream_id)
        if stream is None:
            return
        code = event.error_code
        if side is self.client:
            stream.front_closed = True
            if stream.back_id is not None and not stream.back_closed:
                self._reset_stream(self.backend, stream.back_id, code)
        else:
            stream.back_closed = True
            response = stream.response
            if code == NO_ERROR and response.src_ended:
                # The backend answered in full and does not want the rest of the request:
                # the answer goes on, the client is told the same once it has it.
                self.drop(stream.request)
                stream.cut_request = True
                self._check(stream)
                return
            if not stream.front_closed and not stream.answered:
                self._reset_stream(self.client, stream.front_id, code)
            elif stream.answered:
                return self._check(stream)
        self._close(stream)

    def _pushed(self, side: Side, event: PushedStreamReceived) -> None:
        # Push is refused in the relay's SETTINGS; one sent before they were acknowledged is
        # refused here.
        self._reset_stream(side, event.pushed_stream_id, REFUSED_STREAM)

    def _goaway(self, side: Side, goaway: GoAway) -> None:
        if side is self.client:
            # The client opens no more streams, and takes no push (none is relayed).
            self._write_goaway(self.backend, 0, goaway.error_code, goaway.debug)
            return
        # The backend takes no stream above its last: those never ran, the client may retry.
        self.refusing = True
        for stream in list(side.streams.values()):
            if stream.back_id > goaway.last_stream_id:
                if not stream.front_closed:
                    self._reset_stream(self.client, stream.front_id, REFUSED_STREAM)
                    stream.front_closed = True
                stream.back_closed = True
                self._close(stream)
        client = self.client
        if client.conn is not None:
            last = client.conn.highest_inbound_stream_id
            if self.last_announced is not None:
                last = min(last, self.last_announced)
            self.last_announced = last
            self._write_goaway(client, last, goaway.error_code, goaway.debug)

    # -- plumbing ------------------------------------------------------------------------------

    def _open(self, leg: Leg) -> bool:
        """Send ``leg``'s head on; false when the backend refused a new stream."""
        stream = leg.stream
        end = leg.end_queued and not leg.outbox and leg.trailers is None
        if leg.to_backend:
            backend = self.backend
            if self.refusing:
                self.reset(stream, REFUSED_STREAM)
                return False
            conn = backend.conn
            stream_id = conn.get_next_available_stream_id()
            priority = leg.priority
            try:
                if priority is not None:
                    conn.send_headers(
                        stream_id,
                        leg.head,
                        end_stream=end,
                        priority_weight=priority.weight,
                        priority_depends_on=self._back_id(priority.depends_on),
                        priority_exclusive=priority.exclusive,
                    )
                else:
                    conn.send_headers(stream_id, leg.head, end_stream=end)
            except TooManyStreamsError:
                # More streams than the backend takes: the client has not yet seen its limit.
                self.reset(stream, REFUSED_STREAM)
                return False
            stream.back_id = leg.dst_id = stream.response.src_id = stream_id
            backend.streams[stream_id] = stream
        else:
            self.client.conn.send_headers(leg.dst_id, leg.head, end_stream=end)
        leg.opened = True
        if end:
            leg.dst_ended = True
            self._check(stream)
        return True

    def _flush(self, leg: Leg) -> None:
        """Send what ``leg``'s outbox holds as far as the window allows, then its end."""
        if not leg.opened or leg.dst_ended:
            return
        try:
            self._send(leg)
        except StreamClosedError:
            # The peer reset the stream: its reset, among the events being read, closes it.
            leg.dst.stalled.pop(leg, None)
            return
        if leg.dst_ended:
            self._check(leg.stream)

    def _send(self, leg: Leg) -> None:
        dst = leg.dst
        conn = dst.conn
        stream_id = leg.dst_id
        outbox = leg.outbox
        if outbox:
            src_conn = leg.src.conn
            window = conn.local_flow_control_window(stream_id)
            frame = conn.max_outbound_frame_size
            while outbox and window > 0:
                data, owed = outbox[0]
                size = min(len(data), window, frame)
                if size < len(data):
                    outbox[0] = (data[size:], owed)
                    data = data[:size]
                else:
                    outbox.popleft()
                last = not outbox and leg.end_queued and leg.trailers is None
                conn.send_data(stream_id, data, end_stream=last)
                window -= size
                if owed:
                    src_conn.acknowledge_received_data(size, leg.src_id)
                if last:
                    leg.dst_ended = True
            if outbox:
                dst.stalled[leg] = None
                return
            dst.stalled.pop(leg, None)
            self._wake(leg.stream)
        if leg.end_queued and not leg.dst_ended:
            if leg.trailers is not None:
                conn.send_headers(stream_id, leg.trailers, end_stream=True)
            else:
                conn.end_stream(stream_id)
            leg.dst_ended = True

    def _check(self, stream: Stream) -> None:
        """Close the sides of ``stream`` that are done, and the stream once both are."""
        if stream.done:
            return
        request, response = stream.request, stream.response
        if not stream.front_closed and response.dst_ended:
            if request.src_ended:
                stream.front_closed = True
            elif stream.cut_request:
                # The answer is complete and the client is still sending: it may stop.
                self._reset_stream(self.client, stream.front_id, NO_ERROR)
                stream.front_closed = True
        if stream.back_id is not None and not stream.back_closed:
            if request.dst_ended and response.src_ended:
                stream.back_closed = True
            elif stream.front_closed and stream.answered:
                self._reset_stream(self.backend, stream.back_id, CANCEL)
                stream.back_closed = True
        if stream.front_closed and (stream.back_id is None or stream.back_closed):
            self._close(stream)

    def _close(self, stream: Stream) -> None:
        """Forget ``stream``: what it holds is discarded and acknowledged."""
        if stream.done:
            return
        stream.done = True
        stream.front_closed = stream.back_closed = True
        self.client.streams.pop(stream.front_id, None)
        if stream.back_id is not None:
            self.backend.streams.pop(stream.back_id, None)
        self._discard(stream.request)
        self._discard(stream.response)
        self._wake(stream)

    def _discard(self, leg: Leg) -> None:
        """Empty ``leg``, acknowledging what its sender is still owed."""
        owed = leg.pending + sum(len(data) for data, owed in leg.outbox if owed)
        leg.inbox.clear()
        leg.inbox_pos = 0
        leg.outbox.clear()
        leg.dst.stalled.pop(leg, None)
        if owed and leg.src_id is not None:
            # (The body of an h2c upgrade request was never counted: h2 caps the credit.)
            leg.src.conn.acknowledge_received_data(owed, leg.src_id)

    def _reset_stream(self, side: Side, stream_id: int, error_code: int) -> None:
        try:
            side.conn.reset_stream(stream_id, error_code)
        except StreamClosedError:
            pass  # closed meanwhile: nothing to reset

    def _write_goaway(self, side: Side, last: int, error_code: int, debug: bytes = b"") -> None:
        side.out += side.conn.data_to_send()
        side.out += goaway_frame(last, error_code, debug)

    def _back_id(self, front_id: int) -> int:
        stream = self.client.streams.get(front_id)
        return stream.back_id if stream is not None and stream.back_id is not None else 0

    def _wake(self, stream: Stream) -> None:
        waiter = stream.waiter
        if waiter is not None:
            waiter.set()
