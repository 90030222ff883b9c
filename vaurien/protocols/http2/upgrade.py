"""How the relay finds out how the client speaks: the HTTP/2 preface (prior knowledge), or an
HTTP/1.1 ``Upgrade: h2c`` request whose answer switches the connection to HTTP/2."""

from __future__ import annotations

from typing import Any

import h11
from h2.connection import H2Connection
from h2.exceptions import H2Error

from vaurien.errors import ProtocolError
from vaurien.protocols.http2.frames import PREFACE, FrameScanner
from vaurien.protocols.http2.streams import TO_BACKEND, _config

#: Bytes of an HTTP/1.1 ``Upgrade: h2c`` request, head and body, the relay takes at most.
MAX_UPGRADE_REQUEST = 65536
SWITCHING = b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n"
#: HTTP/1.1 headers that do not carry over to HTTP/2 (RFC 9113, section 8.2.2).
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"upgrade",
        b"http2-settings",
        b"host",
        b"keep-alive",
        b"proxy-connection",
        b"transfer-encoding",
        b"te",
    }
)


class ClientStart:
    """The relay's first steps toward the client (a mixin of :class:`~.relay.Relay`)."""

    client: Any
    backend: Any
    _start: bytearray
    _upgrade: Any
    _upgrade_head: Any
    _upgrade_body: bytearray
    _client_settings: dict

    # -- the client's first bytes --------------------------------------------------------------

    def _first_bytes(self, data: bytes) -> bytes:
        """Find out how the client speaks: the HTTP/2 preface (prior knowledge) or an HTTP/1.1
        ``Upgrade: h2c`` request. Returns the bytes left for the HTTP/2 connection."""
        start = self._start
        if self._upgrade is None:
            start += data
            if PREFACE.startswith(bytes(start[: len(PREFACE)])):
                if len(start) < len(PREFACE):
                    return b""
                self._open_client()
                data = bytes(start)
                start.clear()
                return data
            self._upgrade = h11.Connection(
                h11.SERVER, max_incomplete_event_size=MAX_UPGRADE_REQUEST
            )
            data = bytes(start)
            start.clear()
        return self._upgrade_request(data)

    def _upgrade_request(self, data: bytes) -> bytes:
        parser = self._upgrade
        parser.receive_data(data)
        body = self._upgrade_body
        try:
            while True:
                event = parser.next_event()
                if event is h11.NEED_DATA:
                    return b""
                if isinstance(event, h11.Request):
                    self._upgrade_head = event
                elif isinstance(event, h11.Data):
                    body += event.data
                    if len(body) > MAX_UPGRADE_REQUEST:
                        raise ProtocolError(
                            f"client: an h2c upgrade request with a body of more than "
                            f"{MAX_UPGRADE_REQUEST} bytes"
                        )
                elif isinstance(event, h11.EndOfMessage):
                    break
        except h11.RemoteProtocolError:
            raise ProtocolError(
                f"client: neither HTTP/2 nor HTTP/1.1 (first bytes {data[:24]!r})"
            ) from None
        request = self._upgrade_head
        headers = {name: value for name, value in request.headers}
        upgrade = {token.strip().lower() for token in headers.get(b"upgrade", b"").split(b",")}
        settings = headers.get(b"http2-settings")
        if b"h2c" not in upgrade or settings is None:
            raise ProtocolError(
                f"client: an HTTP/1.1 request without Upgrade: h2c "
                f"({request.method.decode(errors='replace')} "
                f"{request.target.decode(errors='replace')}); this proxy speaks HTTP/2"
            )
        self.client.out += SWITCHING
        conn = self._open_client(settings)
        self._mirror(self.backend, dict(conn.remote_settings), TO_BACKEND)
        head = [
            (b":method", request.method),
            (b":scheme", b"http"),
            (b":authority", headers.get(b"host", b"")),
            (b":path", request.target),
            *((name, value) for name, value in request.headers if name not in HOP_BY_HOP),
        ]
        stream = self._new_stream(1, head)
        request_leg = stream.request
        request_leg.src_ended = True
        request_leg.inbox += body  # sent before the switch, outside HTTP/2 flow control
        body.clear()
        self._started(stream)
        rest, _ = parser.trailing_data
        self._upgrade = None
        return bytes(rest)

    def _open_client(self, upgrade_settings: bytes | None = None) -> H2Connection:
        """Start the connection toward the client: after its preface, or after the switch from
        HTTP/1.1 (``upgrade_settings``: its ``HTTP2-Settings`` header)."""
        client = self.client
        client.conn = conn = H2Connection(_config(client_side=False))
        client.scanner = FrameScanner(skip=len(PREFACE))  # the client sends it in both cases
        if upgrade_settings is None:
            conn.initiate_connection()
        else:
            try:
                conn.initiate_upgrade_connection(upgrade_settings)
            except (H2Error, ValueError) as e:
                raise ProtocolError(f"client: bad HTTP2-Settings header: {e}") from None
        if self._client_settings:
            settings, self._client_settings = self._client_settings, {}
            self._apply(client, settings)
        return conn
