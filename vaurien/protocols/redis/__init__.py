"""redis: Redis commands and replies, RESP2 and RESP3."""

from __future__ import annotations

from typing import Any

from vaurien.protocols import Protocol
from vaurien.protocols.framed import (
    NO_ANSWER,
    UNSOLICITED,
    AnswerVerdict,
    ErrorReply,
    FramedProtocol,
    RequestVerdict,
)
from vaurien.protocols.redis.framing import (
    ARRAY_HEAD,
    BULK_HEAD,
    MAX_COUNT,
    MAX_LINE,
    PUBSUB_KINDS,
    SHAPED_ARGS,
    SHAPED_SIZE,
    SIMPLE_KINDS,
    SIMPLE_RUN,
    SUBSCRIBE_COMMANDS,
    Command,
    CommandFramer,
    RedisState,
    Reply,
    ReplyFramer,
    same_bulk,
    shape_pattern,
    whole_reply,
)
from vaurien.rules import NO_FIELDS, Field

#: Where the first key is among a command's arguments, for the commands whose first argument is
#: not it: after the subcommand, or (None) after numkeys, when there is a key.
KEY_AT: dict[str, int | None] = {
    **dict.fromkeys(("object", "memory", "xinfo"), 2),
    **dict.fromkeys(("eval", "evalsha", "eval_ro", "evalsha_ro", "fcall", "fcall_ro"), None),
}
PEEKED_ARG = 1024  # bytes; a longer argument before the key leaves the key unknown


@Protocol.register
class Redis(FramedProtocol):
    """Redis (RESP2 and RESP3): one command is one exchange.

    Commands are RESP arrays or inline lines; replies of every type are followed, nested to any
    depth, bulk strings of any size counted through as they pass. Pipelines and MULTI/EXEC are
    matched reply by reply. Pub/sub messages, subscription confirmations and RESP3 pushes pass
    as they come (a SUBSCRIBE is done once sent); CLIENT REPLY OFF/SKIP are followed; after
    MONITOR, SYNC or PSYNC the connection is a plain stream. With ``error`` the client gets
    ``-ERR`` for that command. Traffic that is not RESP ends the session.
    """

    name = "redis"
    event_unit = (
        "One command and its reply: a pipeline is as many events as commands; pub/sub "
        "messages pass between them."
    )
    error_form = (
        "The command gets ``-ERR ... (error injected by vaurien)`` in its place among the "
        "replies (redis-py raises ``ResponseError``) and the server never runs it (with "
        "``inject`` it does, and its reply is replaced). A command the client expects no "
        "reply to (CLIENT REPLY OFF or SKIP) is dropped silently."
    )

    skims_fields = True
    rule_fields = {
        "command": Field("The command's name: get, set, hgetall ...", ignore_case=True),
        "key": Field(
            "The command's first key: its first argument for most commands (EVAL, EVALSHA and "
            "FCALL: the first key after numkeys; OBJECT, MEMORY and XINFO: the argument after "
            "the subcommand)"
        ),
    }
    request_name = ("command", "key")

    def request_framer(self) -> CommandFramer:
        return CommandFramer()

    def answer_framer(self) -> ReplyFramer:
        return ReplyFramer()

    def new_session_state(self, session: Any) -> RedisState:
        return RedisState()

    def peek(self, state: RedisState, data: Any, pos: int, end: int) -> dict[str, str] | None:
        if data[pos] != 42:  # "*": an inline command, one line
            eol = data.find(b"\n", pos, end)
            if eol < 0:
                return None if end - pos <= MAX_LINE else NO_FIELDS
            return _command_fields([bytes(word) for word in data[pos:eol].split()[:4]])
        match = ARRAY_HEAD.match(data, pos, end)
        if match is None:
            return None if data.find(b"\n", pos, min(end, pos + 16)) < 0 else NO_FIELDS
        argc = int(match[1])
        at = match.end()
        args: list[bytes] = []
        wanted = min(argc, 2)  # the name, then up to where its first key is
        while len(args) < wanted:
            match = BULK_HEAD.match(data, at, end)
            if match is None:
                return None if data.find(b"\n", at, min(end, at + 20)) < 0 else NO_FIELDS
            start = match.end()
            size = int(match[1])
            if size > PEEKED_ARG:
                break  # a long argument: what comes after it is not looked at
            at = start + size + 2
            if at > end:
                return None
            args.append(bytes(data[start : start + size]))
            if len(args) == 1:
                where = KEY_AT.get(args[0].decode("latin-1").lower(), 1)
                wanted = min(argc, 4 if where is None else where + 1)
        return _command_fields(args)

    def error_reply(
        self, state: RedisState, command: Command, answered: bool, forwarded: bool
    ) -> ErrorReply | None:
        if not answered and command.name not in SUBSCRIBE_COMMANDS:
            return None  # the client expects no reply: one would be taken for another's
        name = command.name.decode("ascii", "replace")[:32] or "command"
        return ErrorReply(f"-ERR {name} failed (error injected by vaurien)\r\n".encode())

    def skim(
        self,
        state: RedisState,
        data: Any,
        pos: int,
        end: int,
        untaken: Any = None,
        most: int | None = None,
    ) -> tuple[int, int, Any]:
        if state.replies_off or state.skip_next:
            return pos, 0, None
        first = None
        count = 0
        last = state.last_shape
        if last is not None and last[3] is untaken:
            # Clients repeat a command's shape (the same command, arguments of the same
            # lengths), one at a time or pipelined: the last shape framed is tried first (under
            # the same rules, which let its command's name pass).
            pattern, size, first, _ = last
            stop = end if most is None else min(end, pos + most * size)
            match = pattern.match(data, pos, stop)
            if match is None:
                first = None
            else:
                count = (match.end() - pos) // size
                pos = match.end()
        array, bulk = ARRAY_HEAD.match, BULK_HEAD.match
        passing: dict[bytes, bool] = {}  # command name -> whether the name alone lets it pass
        shapes = state.shapes
        while pos < end and count != most:
            match = array(data, pos, end)
            if match is None:
                break
            argc = int(match[1])
            at = match.end()
            name = raw = b""
            sizes = []
            spans = None  # where the first arguments are, when the rules must see them
            for index in range(argc):
                match = bulk(data, at, end)
                if match is None:
                    break
                start = match.end()
                size = int(match[1])
                at = start + size + 2
                sizes.append(size)
                if index == 0:
                    raw = bytes(data[start : at - 2])
                    name = raw.lower()
                    if name in _NOTED:
                        break
                    if untaken is not None:
                        passes = passing.get(name)
                        if passes is None:
                            passes = passing[name] = untaken.rejected(
                                "command", name.decode("latin-1")
                            )
                        spans = None if passes else []
                if spans is not None and len(spans) == index < 4 and size <= PEEKED_ARG:
                    spans.append((start, at - 2))  # as peek sees them
            else:
                if at <= end and argc <= MAX_COUNT:
                    if spans is not None and not untaken(
                        _command_fields([bytes(data[a:b]) for a, b in spans])
                    ):
                        break  # a rule takes it: it gets a pick of its own
                    command = Command([name], argc)
                    if first is None:
                        first = command
                    count += 1
                    if spans is None and argc <= SHAPED_ARGS and at - pos <= SHAPED_SIZE:
                        # The commands of this shape that follow take one match.
                        size = at - pos
                        pattern = shape_pattern(shapes, raw, sizes)
                        state.last_shape = (pattern, size, command, untaken)
                        stop = min(end, at + (most - count) * size) if most is not None else end
                        match = pattern.match(data, at, stop)
                        if match is not None:
                            count += (match.end() - at) // size
                            at = match.end()
                    pos = at
                    continue
            break
        return pos, count, first

    def skim_answers(
        self, state: RedisState, request: Any, data: Any, pos: int, end: int, most: int
    ) -> tuple[int, int]:
        count = 0
        while count < most and pos < end:
            if data[pos] in SIMPLE_KINDS:
                # Simple values, one line each: a run of them takes one match.
                match = SIMPLE_RUN.match(data, pos, end)
                if match is None:
                    break
                lines = data.count(b"\n", pos, match.end())
                if count + lines <= most:
                    pos, count = match.end(), count + lines
                    continue
                while count < most:
                    pos = data.index(b"\n", pos) + 1
                    count += 1
                break
            whole = whole_reply(data, pos, end)
            if whole is None:
                break
            at = whole[0]
            count += 1
            if count < most and at - pos <= SHAPED_SIZE:
                # Bulk strings of one length (GET's answers to a pipeline): one match.
                length = at - pos
                run = min(
                    (same_bulk(state.shapes, data, pos, at, end) - at) // length, most - count
                )
                at += run * length
                count += run
            pos = at
        return pos, count

    def request_end(
        self, state: RedisState, command: Command, forwarded: bool
    ) -> RequestVerdict | None:
        # What the server knows changes only when the command reaches it (forwarded).
        name = command.name
        if command.argc == 0:
            return NO_ANSWER  # an empty command: Redis says nothing
        if name == b"client" and len(command.args) >= 3 and command.args[1].lower() == b"reply":
            mode = command.args[2].lower()
            if forwarded:
                state.replies_off = mode == b"off"
                state.skip_next = mode == b"skip"
            return None if mode == b"on" else NO_ANSWER
        if state.replies_off or state.skip_next:
            if forwarded:
                state.skip_next = False
            return NO_ANSWER
        if name in SUBSCRIBE_COMMANDS:
            # Their confirmations come as pub/sub messages (RESP3: pushes) and pass as such.
            state.pubsub = state.pubsub or forwarded
            return NO_ANSWER
        if name in (b"sync", b"psync") and forwarded:
            return _REPLICATION  # a replication stream follows
        return None

    def answer_end(self, state: RedisState, command: Command | None, reply: Reply) -> Any:
        if reply.type == b">":
            return UNSOLICITED
        if state.pubsub and reply.type == b"*" and reply.first in PUBSUB_KINDS:
            return UNSOLICITED
        if command is None:
            return UNSOLICITED
        if command.name == b"monitor" and reply.type == b"+":
            return _MONITORING  # every command the server runs follows, as simple strings
        if command.name == b"reset":
            state.pubsub = state.replies_off = state.skip_next = False
        return None


def _command_fields(args: list[bytes]) -> dict[str, str]:
    """The fields of a command from its first arguments (its name first)."""
    if not args:
        return {}
    name = args[0].decode("latin-1").lower()
    where = KEY_AT.get(name, 1)
    if where is None:  # numkeys, then the keys
        where = 3 if len(args) > 2 and args[2].isdigit() and int(args[2]) > 0 else 0
    fields = {"command": name}
    if 0 < where < len(args):
        fields["key"] = args[where].decode("utf-8", "replace")
    return fields


#: Commands whose name matters to the session (the others are framed in runs).
_NOTED = SUBSCRIBE_COMMANDS | {b"client", b"sync", b"psync", b"monitor", b"reset"}
_REPLICATION = RequestVerdict(answered=False, stream=True)
_MONITORING = AnswerVerdict(stream=True)
