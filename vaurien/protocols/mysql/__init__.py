"""mysql: the MySQL / MariaDB client protocol, command by command."""

from __future__ import annotations

import logging
from typing import Any

from vaurien.errors import ProtocolError
from vaurien.protocols import Protocol
from vaurien.protocols.framed import (
    NO_ANSWER,
    AnswerVerdict,
    ErrorReply,
    FramedProtocol,
    RequestVerdict,
)
from vaurien.protocols.mysql.framing import (
    CLIENT_QUERY_ATTRIBUTES,
    COM_QUERY,
    COMMAND_NAMES,
    SILENT,
    SQL_PEEK,
    STREAMING,
    WITH_SQL,
    Answer,
    Command,
    CommandFramer,
    Conversation,
    ResultFramer,
    lenenc,
)
from vaurien.rules import Field, statement_type

log = logging.getLogger(__name__)

#: The injected error: ER_UNKNOWN_ERROR, SQLSTATE HY000.
ERROR_CODE = 1105
ERROR_STATE = b"HY000"
ERROR_MESSAGE = b"Error injected by vaurien"


@Protocol.register
class MySQL(FramedProtocol):
    """MySQL and MariaDB: one command is one exchange.

    Packets are framed by their 3-byte length and sequence id, 16 MiB packets followed to the
    end of their logical packet. The handshake and the authentication pass untouched (no
    behavior applies to them); then each command packet and its whole answer (OK, ERR, result
    sets, several of them for multi-statements and procedures, LOCAL INFILE requests and the
    file the client sends, prepared statements, cursors' fetches) are one exchange; rows are
    counted through, never kept. With ``error`` the client gets an ERR packet (1105, HY000)
    with the sequence id its command expects. Sessions that use TLS, compression or metadata
    caching become a plain stream once those start; replication streams too. Traffic that is
    not MySQL ends the session.
    """

    name = "mysql"
    event_unit = (
        "One command packet and its whole answer (all its result sets, a LOCAL INFILE "
        "transfer); the handshake and the authentication are no events."
    )
    error_form = (
        "An ERR packet (1105, SQLSTATE HY000) with the sequence id the client expects "
        "(PyMySQL raises ``OperationalError``) and the server never runs the command (with "
        "``inject`` it does, and its answer is replaced). Commands that get no answer "
        "(COM_STMT_CLOSE, COM_QUIT) are dropped silently."
    )

    rule_fields = {
        "command": Field(
            "The command: query, prepare, execute, ping, init_db, quit ...", ignore_case=True
        ),
        "sql": Field(
            "The SQL text of a query or a prepare (its first 4096 bytes); a prepared "
            "statement's execute carries none"
        ),
        "statement": Field(
            "The SQL's first keyword, upper-cased: SELECT, INSERT, UPDATE, BEGIN ...",
            ignore_case=True,
        ),
    }
    request_name = ("command", "sql")

    def new_session_state(self, session: Any) -> Conversation:
        return Conversation()

    def framers(self, state: Conversation) -> tuple[CommandFramer, ResultFramer]:
        return CommandFramer(state), ResultFramer(state)

    def peek(self, state: Conversation, data: Any, pos: int, end: int) -> dict[str, str] | None:
        if end - pos < 5:
            return None
        length = data[pos] | data[pos + 1] << 8 | data[pos + 2] << 16
        code = data[pos + 4]
        fields = {"command": COMMAND_NAMES.get(code, f"0x{code:02x}")}
        if code not in WITH_SQL:
            return fields
        stop = pos + 4 + min(length, 1 + SQL_PEEK)
        if end < stop:
            return None
        start = pos + 5
        if code == COM_QUERY and (state.client_caps or 0) & state.server_caps & (
            CLIENT_QUERY_ATTRIBUTES
        ):
            # Query attributes come first: a parameter count and a parameter set count.
            payload = bytes(data[start:stop])
            try:
                count, at = lenenc(payload, 0)
                _, at = lenenc(payload, at)
            except ProtocolError:
                return fields
            if count:  # the attributes' values come before the text: it is not looked for
                return fields
            start += at
        sql = bytes(data[start:stop]).decode("utf-8", "replace")
        fields["sql"] = sql
        fields["statement"] = statement_type(sql)
        return fields

    def error_reply(
        self, state: Conversation, command: Any, answered: bool, forwarded: bool
    ) -> ErrorReply | None:
        if not isinstance(command, Command) or not answered:
            return None  # COM_STMT_CLOSE and the like: the client reads no answer
        payload = b"\xff" + ERROR_CODE.to_bytes(2, "little") + b"#" + ERROR_STATE + ERROR_MESSAGE
        header = len(payload).to_bytes(3, "little") + bytes(((command.seq + 1) & 0xFF,))
        return ErrorReply(header + payload)

    def request_end(self, state: Conversation, message: Any, forwarded: bool) -> Any:
        if self._streaming(state):
            return _STREAM
        if not isinstance(message, Command):
            return None  # the handshake
        if message.code in SILENT:
            return NO_ANSWER
        if message.code in STREAMING and forwarded:
            return _STREAM
        return None

    def answer_end(self, state: Conversation, command: Any, answer: Answer) -> Any:
        return _STREAMING_ANSWER if self._streaming(state) else None

    def _streaming(self, state: Conversation) -> bool:
        if state.stream:
            log.debug("MySQL session uses %s: a plain stream from now on", state.stream)
            return True
        return False


_STREAM = RequestVerdict(answered=False, stream=True)
_STREAMING_ANSWER = AnswerVerdict(stream=True)
