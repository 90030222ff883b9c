"""lines: a protocol for services that answer each request line with one line.

Many small text services work this way (a key-value store, a game server, a chat bot). With
this protocol one event is a request and its answer, so the behavior mix applies per request,
and an error is an error line that the client's own parser understands.
"""

from vaurien.errors import ProtocolError
from vaurien.protocols import Protocol
from vaurien.protocols.base import BaseProtocol


@Protocol.register
class Lines(BaseProtocol):
    """One request line from the client, one answer line from the backend."""

    name = "lines"
    options = {
        "max_line": ("Longest line accepted, in bytes", int, 65536),
        "error_line": ("What the client gets instead of an answer", str, "ERROR unavailable"),
    }
    # Each event reads the answer to its request, so the events of a session run one at a time.
    duplex = False
    # Errors answer requests: the error behaviors count and fail requests, not answers.
    errors_on_request = True

    def _handle(self, source, dest, to_backend):
        line = self.read_line(source)
        if line:
            dest.sendall(line)
            if to_backend:
                self._between(source, dest, to_backend)  # the request reached the backend
                source.sendall(self.read_line(dest))
        return True

    def send_error(self, source, dest, to_backend, inject=False):
        """Answer the request with the error line; the backend never sees it."""
        if self.read_line(source):
            source.sendall(self.option("error_line").encode() + b"\r\n")

    def read_line(self, sock):
        """Read one line, its end included; what follows stays for the next read."""
        limit = self.option("max_line")
        data = b""
        while b"\n" not in data:
            if len(data) > limit:
                raise ProtocolError(f"a line longer than {limit} bytes")
            more = self.read(sock)
            if not more:
                return data  # the end of the stream, maybe after an unfinished line
            data += more
        end = data.index(b"\n") + 1
        sock.unread(data[end:])
        return data[:end]
