"""HTTP/2 frames the relay handles itself: GOAWAY, found in the byte stream before ``h2`` sees it.

``h2`` closes its connection object as soon as it sends or receives a GOAWAY frame, so a
connection could not finish the streams in flight, which is what a graceful GOAWAY asks for
(RFC 9113, section 6.8). The relay therefore takes GOAWAY frames out of what each peer sends
(:class:`FrameScanner`), and writes its own (:func:`goaway_frame`) without telling ``h2``.

Sans-IO and without ``h2``: bytes in, bytes and :class:`GoAway` values out.
"""

from __future__ import annotations

import dataclasses
import struct

from vaurien.errors import ProtocolError

#: What an HTTP/2 client sends first, before any frame (RFC 9113, section 3.4).
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
FRAME_HEADER = 9
GOAWAY_TYPE = 0x7
#: The largest frame a peer may send until it is told otherwise (RFC 9113, section 4.2).
DEFAULT_MAX_FRAME = 16384


@dataclasses.dataclass(frozen=True, slots=True)
class GoAway:
    """A GOAWAY frame: the last stream the sender may have processed, why, and its debug data."""

    last_stream_id: int
    error_code: int
    debug: bytes = b""

    @classmethod
    def parse(cls, payload: bytes) -> GoAway:
        """The frame whose payload (at least 8 bytes) is ``payload``."""
        last, code = struct.unpack_from("!II", payload)
        return cls(last & 0x7FFFFFFF, code, bytes(payload[8:]))


def goaway_frame(last_stream_id: int, error_code: int, debug: bytes = b"") -> bytes:
    """The bytes of a GOAWAY frame."""
    payload = struct.pack("!II", last_stream_id & 0x7FFFFFFF, error_code) + debug
    # The header: a 24-bit length, the type, no flags, stream 0.
    return len(payload).to_bytes(3, "big") + bytes((GOAWAY_TYPE, 0)) + bytes(4) + payload


class FrameScanner:
    """Splits what one peer sends into the bytes ``h2`` gets and the GOAWAY frames it does not.

    ``feed(data)`` returns, in order, ``bytes`` to hand to ``h2`` and :class:`GoAway` values.
    Frames are not copied unless a GOAWAY is cut out of a read or a frame header straddles two
    reads (its first bytes are kept until the header is complete). ``skip`` bytes at the start
    pass without being read as frames: the client's connection preface. A frame longer than
    ``limit`` (the largest the peer was allowed) is a :class:`ProtocolError` as soon as its
    header is read: ``h2`` would only notice once it had buffered the whole frame.
    """

    __slots__ = ("limit", "_left", "_header", "_goaway", "_goaway_left")

    def __init__(self, skip: int = 0, limit: int = DEFAULT_MAX_FRAME) -> None:
        self.limit = limit
        self._left = skip  # bytes of the current frame (or the preface) still to pass
        self._header = bytearray()  # the first bytes of a frame header cut by a read
        self._goaway: bytearray | None = None  # the payload of a GOAWAY being collected
        self._goaway_left = 0

    def feed(self, data: bytes) -> list[bytes | GoAway]:
        """Scan ``data``: the bytes for ``h2`` and the GOAWAY frames found, in order."""
        out: list[bytes | GoAway] = []
        end = len(data)
        pos = start = 0  # data[start:pos] goes to h2
        while pos < end:
            if self._left:
                step = min(self._left, end - pos)
                self._left -= step
                pos += step
                continue
            goaway = self._goaway
            if goaway is not None:
                step = min(self._goaway_left, end - pos)
                goaway += data[pos : pos + step]
                self._goaway_left -= step
                pos += step
                start = pos
                if not self._goaway_left:
                    out.append(GoAway.parse(bytes(goaway)))
                    self._goaway = None
                continue
            header = self._header
            if header or end - pos < FRAME_HEADER:
                # A header cut by the end of a read: keep its bytes until it is complete.
                if pos > start:
                    out.append(data[start:pos])
                step = min(FRAME_HEADER - len(header), end - pos)
                header += data[pos : pos + step]
                pos += step
                start = pos
                if len(header) < FRAME_HEADER:
                    break
                held = bytes(header)
                header.clear()
                length, type_, stream_id = self._parse_header(held)
                if type_ == GOAWAY_TYPE and stream_id == 0 and length >= 8:
                    self._goaway, self._goaway_left = bytearray(), length
                else:
                    out.append(held)
                    self._left = length
                continue
            length, type_, stream_id = self._parse_header(data[pos : pos + FRAME_HEADER])
            if type_ == GOAWAY_TYPE and stream_id == 0 and length >= 8:
                if pos > start:
                    out.append(data[start:pos])
                pos += FRAME_HEADER
                start = pos
                self._goaway, self._goaway_left = bytearray(), length
            else:
                pos += FRAME_HEADER
                self._left = length
        if pos > start:
            out.append(data[start:pos] if start or pos < end else data)
        return out

    def _parse_header(self, header: bytes) -> tuple[int, int, int]:
        length = int.from_bytes(header[:3], "big")
        if length > self.limit:
            raise ProtocolError(
                f"a frame of {length} bytes, more than the {self.limit} allowed "
                f"(frame header {header.hex()})"
            )
        stream_id = int.from_bytes(header[5:9], "big") & 0x7FFFFFFF
        return length, header[3], stream_id
