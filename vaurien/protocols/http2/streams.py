"""The relay's bookkeeping: each side's h2 connection, and each stream with its two legs."""

from __future__ import annotations

import collections
from typing import TYPE_CHECKING, Any

from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.settings import SettingCodes

from vaurien.protocols.http2.frames import FrameScanner

if TYPE_CHECKING:
    from vaurien.protocols.http2.relay import Relay

#: The backend's settings advertised to the client as the relay's own, and the client's
#: advertised to the backend. Push is never relayed (the relay refuses it).
TO_CLIENT = (
    SettingCodes.INITIAL_WINDOW_SIZE,
    SettingCodes.MAX_CONCURRENT_STREAMS,
    SettingCodes.MAX_FRAME_SIZE,
    SettingCodes.MAX_HEADER_LIST_SIZE,
    SettingCodes.ENABLE_CONNECT_PROTOCOL,
)
TO_BACKEND = (
    SettingCodes.INITIAL_WINDOW_SIZE,
    SettingCodes.MAX_FRAME_SIZE,
    SettingCodes.MAX_HEADER_LIST_SIZE,
)
#: The window every connection starts with (RFC 9113, section 6.9.2).
DEFAULT_WINDOW = 65535


def _config(client_side: bool) -> H2Configuration:
    # Headers pass as they came: bytes, validated once when received, never rewritten.
    return H2Configuration(
        client_side=client_side,
        header_encoding=None,
        validate_outbound_headers=False,
        normalize_outbound_headers=False,
        normalize_inbound_headers=False,
    )


class Side:
    """One of the two connections: ``role`` is ``"client"`` or ``"backend"``, ``conn`` its ``h2``
    connection (None for the client's until its first bytes show how it speaks)."""

    __slots__ = ("role", "conn", "streams", "stalled", "scanner", "out", "advertised", "peer_max")

    def __init__(self, role: str, conn: H2Connection | None, scanner: FrameScanner) -> None:
        self.role = role
        self.conn = conn
        self.streams: dict[int, Stream] = {}  # by stream id on this connection
        self.stalled: dict[Leg, None] = {}  # legs whose data waits for window here (ordered)
        self.scanner = scanner
        self.out = bytearray()  # h2's output with frames the relay wrote itself, in order
        self.advertised = DEFAULT_WINDOW  # the connection window this side was given
        self.peer_max = DEFAULT_WINDOW  # the largest connection window this side's peer gave


class Leg:
    """One direction of a stream: the request (client to backend) or the response.

    ``head`` is the HEADERS block that opens it on the other side, ``inbox`` what arrived
    while the leg is held, ``outbox`` what waits for the other side's window (each chunk with
    whether it is still owed to its sender as flow-control credit).
    """

    __slots__ = (
        "stream",
        "src",
        "dst",
        "src_id",
        "dst_id",
        "head",
        "held",
        "dropped",
        "opened",
        "inbox",
        "inbox_pos",
        "src_ended",
        "trailers",
        "outbox",
        "end_queued",
        "dst_ended",
        "priority",
    )

    def __init__(self, stream: Stream, src: Side, dst: Side, src_id: Any, dst_id: Any) -> None:
        self.stream = stream
        self.src = src
        self.dst = dst
        self.src_id: int | None = src_id
        self.dst_id: int | None = dst_id
        self.head: list[Any] | None = None
        self.held = False
        self.dropped = False  # what arrives is acknowledged and discarded
        self.opened = False  # the head was sent on
        self.inbox = bytearray()
        self.inbox_pos = 0
        self.src_ended = False  # the sender ended its side of the stream
        self.trailers: list[Any] | None = None
        self.outbox: collections.deque[tuple[bytes, bool]] = collections.deque()
        self.end_queued = False  # the end goes on once the outbox is empty
        self.dst_ended = False
        self.priority: Any = None

    @property
    def to_backend(self) -> bool:
        return self.dst.role == "backend"

    @property
    def pending(self) -> int:
        """Bytes received and not taken yet."""
        return len(self.inbox) - self.inbox_pos

    @property
    def consumed(self) -> bool:
        """Whether the sender ended the leg and everything it sent was taken."""
        return self.src_ended and not self.pending


class Stream:
    """One request stream of the client, and the stream it maps to on the backend."""

    __slots__ = (
        "front_id",
        "back_id",
        "request",
        "response",
        "front_closed",
        "back_closed",
        "answered",
        "cut_request",
        "abort",
        "replace",
        "done",
        "waiter",
        "behavior",
    )

    def __init__(self, relay: Relay, front_id: int, head: list[Any]) -> None:
        self.front_id = front_id
        self.back_id: int | None = None
        self.request = Leg(self, relay.client, relay.backend, front_id, None)
        self.request.head = head
        self.response = Leg(self, relay.backend, relay.client, None, front_id)
        self.front_closed = False
        self.back_closed = False
        self.answered = False  # the relay answered the client itself (an error)
        self.cut_request = False  # once the response is sent, the client may stop sending
        self.abort = False  # reset when the response starts
        #: ``(head, body)`` that replaces the response when it starts.
        self.replace: tuple[list[Any], bytes] | None = None
        self.done = False  # closed on both sides
        self.waiter: Any = None  # set() when something about the stream changed
        self.behavior: Any = None  # the behavior picked for it (the protocol's business)

    def __repr__(self) -> str:
        return f"<Stream {self.front_id}->{self.back_id}>"
