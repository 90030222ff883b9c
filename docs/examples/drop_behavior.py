"""drop: a behavior that loses data but keeps the connection open.

A peer that receives a truncated message and then nothing more is a good test of read
timeouts and length checks.
"""

from vaurien.behaviors import Behavior
from vaurien.behaviors.base import BaseBehavior
from vaurien.options import at_least


@Behavior.register
class Drop(BaseBehavior):
    """Forward only the first ``keep`` bytes of the event's data and drop the rest."""

    name = "drop"
    options = {"keep": ("Bytes of each event's data that still go through", int, 0, at_least(0))}

    def on_before_handle(self, protocol, source, dest, to_backend):
        data = protocol.read(source)
        keep = self.option("keep")
        if keep:
            dest.sendall(data[:keep])
        return False  # handled here: the protocol must not forward the data again
