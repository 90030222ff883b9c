"""reset: the connection is torn down with a TCP RST."""

import gevent

from vaurien.behaviors import Behavior
from vaurien.behaviors.base import BaseBehavior
from vaurien.options import at_least


@Behavior.register
class Reset(BaseBehavior):
    """Drop the data, wait ``timeout`` seconds, then reset both connections.

    The sockets are closed with ``SO_LINGER`` 0, so the peers get a TCP RST and see
    "connection reset by peer", not a clean end of stream.
    """

    name = "reset"
    options = {
        "timeout": (
            "Seconds between the data's arrival and the reset (0: at once)",
            float,
            0.0,
            at_least(0),
        ),
    }
    client_sees = (
        "The data is dropped and, after ``timeout`` seconds, both connections are reset: "
        'the client gets "connection reset by peer" (``ECONNRESET``), not a clean end of file.'
    )

    def on_before_handle(self, protocol, source, dest, to_backend):
        protocol.read(source)
        if self.settings["timeout"]:
            gevent.sleep(self.settings["timeout"])
        source.session.reset()
        return False
