"""timeout: the data stops flowing, then the connection is closed."""

import time

import gevent

from vaurien.behaviors import Behavior
from vaurien.behaviors.base import BaseBehavior
from vaurien.options import at_least


@Behavior.register
class Timeout(BaseBehavior):
    """Drop the data and, after ``timeout`` seconds, close the connection.

    Until then, everything that arrives on that side is dropped too. With a timeout of 0 the
    connection stays open: the event's data is dropped, and the next event is picked anew, so
    data flows again once the behavior is changed.
    """

    name = "timeout"
    options = {
        "timeout": (
            "Seconds before the close (0: never close, only drop the data)",
            float,
            1.0,
            at_least(0),
        ),
    }
    client_sees = (
        "The data, and everything after it on that side, is dropped; after ``timeout`` "
        "seconds the connection is closed, and the client reads end of file. With a "
        "``timeout`` of 0 the data is dropped and the connection stays open."
    )

    def on_before_handle(self, protocol, source, dest, to_backend):
        timeout = self.settings["timeout"]
        if not timeout:
            protocol.read(source)
            return False
        deadline = time.monotonic() + timeout
        with gevent.Timeout(timeout, False):
            while protocol.read(source):
                pass
        gevent.sleep(max(0.0, deadline - time.monotonic()))
        source.session.close()
        return False
