"""slicer: the data is cut into small slices sent apart."""

import gevent

from vaurien.behaviors import Behavior
from vaurien.behaviors.base import BaseBehavior
from vaurien.options import at_least


@Behavior.register
class Slicer(BaseBehavior):
    """Forward the data in slices of about ``average_size`` bytes, ``delay`` seconds apart.

    Each slice's size is drawn uniformly from ``average_size ± size_variation`` (one byte at
    least). The bytes arrive unchanged and in order, only in many more reads: what a peer that
    assumes one read is one message gets wrong.
    """

    name = "slicer"
    options = {
        "average_size": ("Average size of a slice in bytes", int, 1024, at_least(1)),
        "size_variation": (
            "Largest difference from the average size, in bytes",
            int,
            512,
            at_least(0),
        ),
        "delay": ("Pause between two slices in seconds", float, 0.001, at_least(0)),
    }
    client_sees = (
        "Every byte arrives, in order, but in many small reads of about ``average_size`` "
        "bytes, ``delay`` seconds apart: a client that takes one read for one message breaks."
    )

    def on_before_handle(self, protocol, source, dest, to_backend):
        average, variation = self.settings["average_size"], self.settings["size_variation"]
        delay = self.settings["delay"]
        randint = self.proxy.random.randint
        view = memoryview(protocol.read(source))
        while view:
            size = max(1, average + randint(-variation, variation))
            dest.sendall(view[:size])
            view = view[size:]
            if view and delay:
                gevent.sleep(delay)
        return False
