"""delay: the data is held for a while."""

import gevent

from vaurien.behaviors import Behavior
from vaurien.behaviors.base import BaseBehavior
from vaurien.options import at_least


@Behavior.register
class Delay(BaseBehavior):
    """Hold the data of the event for ``sleep`` seconds, give or take ``jitter``.

    With ``before`` (the default) the data waits before it is forwarded. Without it, the event
    is handled at once and the delay comes after it: the answer already went through, and what
    follows on that side waits. With ``jitter``, each delay is drawn uniformly from
    ``sleep - jitter`` to ``sleep + jitter`` (never below zero).
    """

    name = "delay"
    options = {
        "sleep": ("Delay in seconds", float, 1.0, at_least(0)),
        "jitter": (
            "Random spread of the delay in seconds: uniform in sleep ± jitter, never negative",
            float,
            0.0,
            at_least(0),
        ),
        "before": (
            "Delay before forwarding the data; false delays after the exchange",
            bool,
            True,
        ),
    }
    client_sees = (
        "The data of the event arrives ``sleep`` seconds late, give or take ``jitter``. With "
        "``before`` false it is forwarded at once, and the next event on the same side waits "
        "instead."
    )

    def on_before_handle(self, protocol, source, dest, to_backend):
        if self.settings["before"]:
            self._wait()
        return True

    def on_after_handle(self, protocol, source, dest, to_backend):
        if not self.settings["before"]:
            self._wait()
        return True

    def acts_after(self):
        return not self.settings["before"]

    def _wait(self):
        sleep, jitter = self.settings["sleep"], self.settings["jitter"]
        if jitter:
            sleep = self.proxy.random.uniform(sleep - jitter, sleep + jitter)
        gevent.sleep(max(0.0, sleep))
