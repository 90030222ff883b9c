"""HTTP/2 for the tests, with h2: a threaded server, a raw client on a blocking socket, and
the frames and headers they send."""

from __future__ import annotations

import hashlib
import socket
import threading

import h2.config
import h2.connection
import h2.events
import h2.exceptions


def frame(type_: int, payload: bytes, stream_id: int = 0, flags: int = 0) -> bytes:
    """The bytes of one HTTP/2 frame."""
    return (
        len(payload).to_bytes(3, "big")
        + bytes((type_, flags))
        + stream_id.to_bytes(4, "big")
        + payload
    )


def h2_connection(client_side: bool) -> h2.connection.H2Connection:
    """A started h2 connection, headers as bytes."""
    config = h2.config.H2Configuration(client_side=client_side, header_encoding=None)
    conn = h2.connection.H2Connection(config)
    conn.initiate_connection()
    return conn


def request_head(path: bytes, method: bytes = b"POST", extra=()) -> list:
    """The headers of a request for ``path``."""
    return [
        (b":method", method),
        (b":scheme", b"http"),
        (b":authority", b"test"),
        (b":path", path),
        *extra,
    ]


class H2Backend:
    """A threaded h2 server on a free port. It answers each request with its body (``/echo``)
    or its SHA-256 (``/sha``) and, for ``/slow``, never gives back the stream's window: the
    request stalls there while the connection's window stays open."""

    #: The connection window it gives: larger than a stream's, as real servers do.
    WINDOW = 16 << 20

    def __init__(self, settings=None):
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address = "{}:{}".format(*self.listener.getsockname())
        self.settings = settings or {}
        self.connections = 0
        self.received = {}  # path -> bytes received on it, over every connection
        self.peer_settings = {}  # the client's settings, as the last connection got them
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    def _serve(self, sock):
        conn = h2_connection(client_side=False)
        conn.increment_flow_control_window(self.WINDOW - 65535)
        if self.settings:
            conn.update_settings(self.settings)
        paths, bodies, answers = {}, {}, {}
        with sock:
            try:
                sock.sendall(conn.data_to_send())
                while data := sock.recv(65536):
                    for event in conn.receive_data(data):
                        self._event(conn, event, paths, bodies, answers)
                    self._answer(conn, answers)
                    sock.sendall(conn.data_to_send())
            except (OSError, h2.exceptions.H2Error):
                pass  # the client went away (a GOAWAY closes h2's connection at once)

    def _event(self, conn, event, paths, bodies, answers):
        stream_id = getattr(event, "stream_id", 0)
        if isinstance(event, h2.events.RemoteSettingsChanged):
            self.peer_settings = dict(conn.remote_settings)
        elif isinstance(event, h2.events.RequestReceived):
            paths[stream_id] = dict(event.headers)[b":path"]
            bodies[stream_id] = bytearray()
        elif isinstance(event, h2.events.DataReceived):
            path = paths[stream_id]
            bodies[stream_id] += event.data
            self.received[path] = self.received.get(path, 0) + len(event.data)
            if path == b"/slow":
                conn.increment_flow_control_window(event.flow_controlled_length)
            else:
                conn.acknowledge_received_data(event.flow_controlled_length, stream_id)
        elif isinstance(event, h2.events.StreamReset):
            answers.pop(stream_id, None)
        elif isinstance(event, h2.events.StreamEnded):
            body = bytes(bodies.pop(stream_id))
            if paths[stream_id] == b"/sha":
                body = hashlib.sha256(body).hexdigest().encode()
            conn.send_headers(stream_id, [(b":status", b"200"), (b"x-length", b"%d" % len(body))])
            answers[stream_id] = bytearray(body)

    def _answer(self, conn, answers):
        for stream_id, rest in list(answers.items()):
            while rest:
                size = min(conn.local_flow_control_window(stream_id), len(rest), 16384)
                if not size:
                    break
                conn.send_data(stream_id, bytes(rest[:size]))
                del rest[:size]
            if not rest:
                conn.end_stream(stream_id)
                del answers[stream_id]

    def close(self):
        """Stop accepting connections."""
        self.listener.close()


class Answer:
    """What a client got on one stream."""

    def __init__(self):
        self.status = None
        self.body = bytearray()
        self.reset = None
        self.ended = False


class H2Client:
    """A raw h2 client on a blocking socket: ``exchange`` sends requests on concurrent streams,
    as flow control allows, and reads the answers."""

    def __init__(self, address, timeout=30.0, upgrade=False, settings=None):
        self.sock = socket.create_connection(address, timeout=timeout)
        self.conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding=None)
        )
        self.answers = {}
        if not upgrade:
            self.conn.initiate_connection()
            if settings:
                self.conn.update_settings(settings)
            self.sock.sendall(self.conn.data_to_send())

    def upgrade(self, path: bytes, body: bytes = b"") -> bytes:
        """Start with an HTTP/1.1 ``Upgrade: h2c`` request for ``path`` (a POST of ``body``,
        if any, else a GET); return the 101 head."""
        settings = self.conn.initiate_upgrade_connection()
        method = b"POST" if body else b"GET"
        self.sock.sendall(
            b"%s %s HTTP/1.1\r\nHost: test\r\nConnection: Upgrade, HTTP2-Settings\r\n"
            b"Upgrade: h2c\r\nHTTP2-Settings: %s\r\nContent-Length: %d\r\n\r\n%s"
            % (method, path, settings, len(body), body)
        )
        head = b""
        while b"\r\n\r\n" not in head:
            head += self.sock.recv(1)
        self.answers[1] = Answer()
        self.sock.sendall(self.conn.data_to_send())
        return head

    def exchange(self, requests, until=None):
        """Send ``requests`` (``(path, body)``) each on its stream; return their answers."""
        conn = self.conn
        sending = {}
        for path, body in requests:
            stream_id = conn.get_next_available_stream_id()
            conn.send_headers(stream_id, request_head(path), end_stream=not body)
            self.answers[stream_id] = Answer()
            if body:
                sending[stream_id] = memoryview(body)
        done = until or (lambda: all(a.ended or a.reset is not None for a in self.answers.values()))
        while not done():
            for stream_id, rest in list(sending.items()):
                try:
                    size = min(conn.local_flow_control_window(stream_id), len(rest), 16384)
                except h2.exceptions.StreamClosedError:
                    del sending[stream_id]
                    continue
                while size:
                    conn.send_data(stream_id, bytes(rest[:size]), end_stream=size == len(rest))
                    rest = rest[size:]
                    size = min(conn.local_flow_control_window(stream_id), len(rest), 16384)
                sending[stream_id] = rest
                if not rest:
                    del sending[stream_id]
            self.sock.sendall(conn.data_to_send())
            data = self.sock.recv(262144)
            if not data:
                break
            self.read(data)
        return self.answers

    def read(self, data):
        for event in self.conn.receive_data(data):
            answer = self.answers.get(getattr(event, "stream_id", 0))
            if isinstance(event, h2.events.ResponseReceived):
                answer.status = int(dict(event.headers)[b":status"])
            elif isinstance(event, h2.events.DataReceived):
                answer.body += event.data
                self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.StreamEnded):
                answer.ended = True
            elif isinstance(event, h2.events.StreamReset):
                answer.reset = event.error_code
        self.sock.sendall(self.conn.data_to_send())

    def close(self):
        self.sock.close()
