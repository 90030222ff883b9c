"""postgres: PostgreSQL's frontend/backend protocol, query by query.

The framing is in :mod:`vaurien.protocols.postgres.framing`, the messages, the events and the
error form in :mod:`vaurien.protocols.postgres.messages`.
"""

from __future__ import annotations

import logging
from typing import Any

from vaurien.protocols import Protocol
from vaurien.protocols.framed import (
    BUFFER_OPTION,
    NO_ANSWER,
    PARTIAL,
    REUSE_SOCKET_OPTION,
    UNSOLICITED,
    AnswerVerdict,
    ErrorReply,
    FramedProtocol,
    RequestVerdict,
)
from vaurien.protocols.postgres.framing import (
    CAPTURES,
    AnswerFramer,
    RequestFramer,
    framers,
    split_name,
    sql_text,
)
from vaurien.protocols.postgres.messages import (
    ADMIN_SHUTDOWN,
    CONNECTION_FAILURE,
    ERROR_MESSAGE,
    Answer,
    Conversation,
    Event,
    Request,
    error_response,
    sqlstate,
)
from vaurien.rules import Field, statement_type

log = logging.getLogger(__name__)


@Protocol.register
class Postgres(FramedProtocol):
    """PostgreSQL (protocol version 3): one query is one exchange.

    The start-up and the authentication (SCRAM included) pass untouched, as bytes, and no
    behavior applies to them. Then each simple Query, each extended-protocol batch up to its
    Sync (a prepared statement's execution, a whole pipeline up to its Sync) and each
    FunctionCall is one exchange, answered up to its ReadyForQuery. In a COPY FROM STDIN the
    client's data is part of the exchange and goes to the server as it comes; a behavior that
    reads the answer itself (``bandwidth``, ``slicer`` ...) passes the CopyInResponse on
    before the client sends it. Notifications, notices and parameter changes the server sends
    between queries pass at once. Traffic that is not PostgreSQL ends its session with one
    log line.

    An SSLRequest (or GSSENCRequest) is answered by the backend: when it accepts, the session
    is a plain encrypted stream from there on, and behaviors apply to its chunks as with the
    ``tcp`` protocol. libpq's default (``sslmode=prefer``) asks for TLS whenever the server
    offers it, so connect through the proxy with ``sslmode=disable`` to get query-level chaos.
    Replication connections become a stream too, at their CopyBothResponse.

    ``error`` answers a query with an ErrorResponse then a ReadyForQuery, so the client's
    connection goes on. The ReadyForQuery says ``E`` (a failed transaction) when the session
    was in a transaction block, as a real error would leave it; the proxy knows that from the
    last ReadyForQuery it passed, so a client that pipelines a BEGIN and the query that fails
    may be told ``I`` instead. The server never knew of the failure: after the client's
    ROLLBACK both agree again. With ``inject`` the query runs and its answer is replaced,
    except a COPY's (the server would wait for data the client never sends). With ``fatal``
    the error is a FATAL one and the proxy closes the connection after it, as a server that
    ends the session does: the connection-level form of the error, ``08006``
    (connection_failure) unless ``sqlstate`` says otherwise.

    ``blackout``, ``reset`` and ``abort`` stay network faults: they close the connection
    without a word, as a broken link does, and psycopg raises ``OperationalError`` without a
    SQLSTATE ("server closed the connection unexpectedly"). ``abort`` closes once the server
    has run the query and starts answering it: whether a COMMIT went through, the client
    cannot tell.
    """

    name = "postgres"
    event_unit = (
        "One simple Query, or one extended-protocol batch up to its Sync (a prepared "
        "statement's execution, a pipeline), and its answer up to ReadyForQuery; the start-up, "
        "the authentication and COPY data are no events."
    )
    error_form = (
        "An ErrorResponse with SQLSTATE ``57P01`` (psycopg raises ``errors.AdminShutdown``; "
        "the ``sqlstate`` option picks another), then a ReadyForQuery, so the same connection "
        "runs the next query; the server never runs the failed one (with ``inject`` it does, "
        "and its answer is replaced). With ``fatal`` the error is FATAL (``08006`` by default) "
        "and the connection ends. Messages that get no answer (Terminate) are dropped silently."
    )
    options = {
        "sqlstate": (
            "SQLSTATE of the injected error (not set: 57P01 admin_shutdown, or 08006 "
            "connection_failure with fatal)",
            sqlstate,
            None,
        ),
        "message": ("Message of the injected error", str, ERROR_MESSAGE),
        "fatal": (
            "Make the injected error FATAL and close the connection after it",
            bool,
            False,
        ),
        "buffer": BUFFER_OPTION,
        "reuse_socket": REUSE_SOCKET_OPTION,
    }

    rule_fields = {
        "sql": Field(
            "The SQL text of a simple Query, or of the statement an extended-protocol batch "
            "parses or binds (its first 4096 bytes)"
        ),
        "statement": Field(
            "The SQL's first keyword, upper-cased: SELECT, INSERT, UPDATE, BEGIN ...",
            ignore_case=True,
        ),
    }
    request_name = ("sql",)

    def new_session_state(self, session: Any) -> Conversation:
        return Conversation()

    def peek(self, state: Conversation, data: Any, pos: int, end: int) -> dict[str, str] | None:
        if end - pos < 5:
            return None
        kind = data[pos]
        want = CAPTURES.get(kind)
        if want is None or kind == 0x43:  # no SQL in it (a Close names no new statement)
            return {}
        length = int.from_bytes(data[pos + 1 : pos + 5], "big")
        stop = pos + 5 + min(max(length - 4, 0), want)
        if end < stop:
            return None
        body = bytes(data[pos + 5 : stop])
        if kind == 0x51:  # Query: the SQL
            sql: str | None = sql_text(body)
        else:
            name, rest = split_name(body)  # Parse: a statement; Bind: a portal
            if kind == 0x50:
                sql = sql_text(rest) if name is not None else None
            else:
                statement, _ = split_name(rest) if rest is not None else (None, None)
                sql = state.statements.get(statement) if statement is not None else None
        if sql is None:
            return {}
        return {"sql": sql, "statement": statement_type(sql)}

    def framers(self, state: Conversation) -> tuple[RequestFramer, AnswerFramer]:
        return framers(state)

    def error_reply(
        self, state: Conversation, request: Any, answered: bool, forwarded: bool
    ) -> ErrorReply | None:
        if not answered:
            return None  # Terminate: the client reads no answer
        code, message = self.settings["sqlstate"], self.settings["message"]
        if self.settings["fatal"]:
            data = error_response(code or CONNECTION_FAILURE, message, "FATAL", status=None)
            return ErrorReply(data, close=True)
        status = state.error_status
        return ErrorReply(error_response(code or ADMIN_SHUTDOWN, message, status=status))

    def request_end(
        self, state: Conversation, message: Request, forwarded: bool
    ) -> RequestVerdict | None:
        if message.stream is not None:
            return self._stream(message, _STREAM_REQUEST)
        if not message.expects:
            return NO_ANSWER  # Terminate, a batch without Sync, start-up and COPY data
        if message.statement == "COPY":
            return _REAL_ANSWER
        return None

    def answer_end(self, state: Conversation, request: Any, message: Event) -> Any:
        if message.stream is not None:
            return self._stream(message, _STREAM_ANSWER)
        if isinstance(message, Answer):
            # A CopyInResponse is only part of the answer: the client sends its data now.
            return None if message.final else PARTIAL
        return UNSOLICITED  # the start-up's messages, and what the server says unasked

    def _stream(self, message: Event, verdict: Any) -> Any:
        log.debug("PostgreSQL session uses %s: a plain stream from now on", message.stream)
        return verdict


_STREAM_REQUEST = RequestVerdict(answered=False, stream=True)
_STREAM_ANSWER = AnswerVerdict(stream=True)
#: A COPY's answer is never replaced by an ``inject`` error: after a CopyInResponse the server
#: waits for the data the client would never send.
_REAL_ANSWER = RequestVerdict(real_answer=True)
