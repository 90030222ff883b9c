"""bandwidth: the throughput is capped."""

import time

import gevent

from vaurien.behaviors import Behavior
from vaurien.behaviors.base import BaseBehavior
from vaurien.options import at_least

#: The bucket holds this many seconds' worth of data: the largest burst, and the slice size.
BURST = 0.05


class _Bucket:
    __slots__ = ("tokens", "stamp")

    def __init__(self):
        self.tokens = 0.0
        self.stamp = time.monotonic()


@Behavior.register
class Bandwidth(BaseBehavior):
    """Forward the data at ``rate`` KiB per second at most, smoothly.

    A token bucket per connection and direction: the data leaves in slices of a twentieth of a
    second's worth, each as soon as the bucket holds enough tokens, so the cap holds over any
    window of a second and no burst is larger than one slice. A rate of 0 leaves the
    throughput alone.
    """

    name = "bandwidth"
    options = {"rate": ("Throughput cap in KiB per second (0: no cap)", float, 100.0, at_least(0))}
    client_sees = (
        "The data arrives at ``rate`` KiB per second at most, evenly paced: a transfer "
        "takes as long as it would on a slow link. A ``rate`` of 0 changes nothing."
    )

    def new_state(self):
        return _Bucket()

    def on_before_handle(self, protocol, source, dest, to_backend):
        rate = self.settings["rate"] * 1024
        if not rate:
            dest.sendall(protocol.read(source))
            return False
        # At most a second's worth per event: a slow transfer is a series of events, not one
        # long event the idle timeout would take for silence.
        data = protocol.read(source, max(1, min(int(rate), protocol.buffer_size)))
        bucket = self.state(source)
        capacity = max(1.0, rate * BURST)
        step = int(capacity)
        view = memoryview(data)
        while view:
            piece, view = view[:step], view[step:]
            now = time.monotonic()
            bucket.tokens = min(capacity, bucket.tokens + (now - bucket.stamp) * rate)
            bucket.stamp = now
            if bucket.tokens < len(piece):
                gevent.sleep((len(piece) - bucket.tokens) / rate)
                now = time.monotonic()
                # Not capped: a late wake-up is made up by the slices that follow.
                bucket.tokens += (now - bucket.stamp) * rate
                bucket.stamp = now
            bucket.tokens -= len(piece)
            dest.sendall(piece)
        return False
