"""delay: the data is held for a while."""

import gevent

from vaurien.behaviors import Behavior
from vaurien.behaviors.base import BaseBehavior


@Behavior.register
class Delay(BaseBehavior):
    """Hold the data of the event for ``sleep`` seconds.

    With ``before`` (the default) the data waits before it is forwarded. Without it, the event
    is handled at once and the delay comes after it: the answer already went through, and what
    follows on that side waits.
    """

    name = "delay"
    options = {
        "sleep": ("Delay in seconds", float, 1.0),
        "before": (
            "Delay before forwarding the data; false delays after the exchange",
            bool,
            True,
        ),
    }

    def on_before_handle(self, protocol, source, dest, to_backend):
        if self.settings["before"]:
            gevent.sleep(self.settings["sleep"])
        return True

    def on_after_handle(self, protocol, source, dest, to_backend):
        if not self.settings["before"]:
            gevent.sleep(self.settings["sleep"])
        return True
