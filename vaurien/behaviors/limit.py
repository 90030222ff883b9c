"""limit: the connection is closed after a number of bytes."""

from vaurien.behaviors import Behavior
from vaurien.behaviors.base import BaseBehavior
from vaurien.options import at_least


class _Count:
    __slots__ = ("sent",)

    def __init__(self):
        self.sent = 0


@Behavior.register
class Limit(BaseBehavior):
    """Let ``bytes`` bytes through, then close the connection.

    The count is kept per connection and direction, over the events the behavior is picked
    for: the other side receives exactly ``bytes`` bytes, then the end of the connection.
    """

    name = "limit"
    options = {
        "bytes": ("Bytes let through in each direction before the close", int, 65536, at_least(0)),
    }
    client_sees = (
        "Exactly ``bytes`` bytes get through in each direction (counted per connection over "
        "the events it is picked for), then the connection is closed: the client reads a "
        "truncated answer, then end of file."
    )

    def new_state(self):
        return _Count()

    def on_before_handle(self, protocol, source, dest, to_backend):
        count = self.state(source)
        allowed = self.settings["bytes"] - count.sent
        data = protocol.read(source)
        if allowed > 0 and data:
            dest.sendall(data[:allowed])
            count.sent += min(allowed, len(data))
        if count.sent >= self.settings["bytes"]:
            source.session.close()
        return False
