"""slow_close: a close reaches the other side late."""

import gevent

from vaurien.behaviors import Behavior
from vaurien.behaviors.base import BaseBehavior
from vaurien.options import at_least


@Behavior.register
class SlowClose(BaseBehavior):
    """Hold the end of stream for ``delay`` seconds before it reaches the other side.

    The data passes untouched; when a side closes, the proxy passes the close on to the other
    side only after the delay: on a plain stream when the event that reads the close gets this
    behavior, on a protocol of exchanges when the last exchange before the close got it.
    """

    name = "slow_close"
    options = {"delay": ("Seconds a close waits before it is passed on", float, 1.0, at_least(0))}
    client_sees = (
        "The data passes unchanged, but when one side closes its connection, the other "
        "side sees the close ``delay`` seconds late."
    )

    def on_close(self, protocol, source, dest, to_backend):
        gevent.sleep(self.settings["delay"])
