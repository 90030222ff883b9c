"""corrupt: bits of the data are flipped."""

import math

from vaurien.behaviors import Behavior
from vaurien.behaviors.base import BaseBehavior
from vaurien.options import between


@Behavior.register
class Corrupt(BaseBehavior):
    """Flip one random bit in some of the forwarded bytes, each with chance ``probability``.

    The length of the data is unchanged. Which bytes and bits are hit comes from the proxy's
    random source, so ``--seed`` reproduces the damage.
    """

    name = "corrupt"
    options = {
        "probability": ("Chance that a byte gets one bit flipped", float, 0.001, between(0, 1)),
    }
    client_sees = (
        "The data arrives with its length unchanged but some bits flipped, each byte hit "
        "with chance ``probability``: a checksum or a parser on the client's side reports "
        "corrupt data, unless nothing checks."
    )

    def on_before_handle(self, protocol, source, dest, to_backend):
        data = protocol.read(source)
        probability = self.settings["probability"]
        if data and probability:
            data = bytearray(data)
            random, randrange = self.proxy.random.random, self.proxy.random.randrange
            # Jump from hit to hit: the gaps between hit bytes are geometric.
            scale = 0.0 if probability >= 1 else 1 / math.log(1 - probability)
            index = int(math.log(1 - random()) * scale)
            while index < len(data):
                data[index] ^= 1 << randrange(8)
                index += 1 + int(math.log(1 - random()) * scale)
        dest.sendall(data)
        return False
