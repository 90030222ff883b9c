"""blackout: the connection is closed at once."""

from vaurien.behaviors import Behavior
from vaurien.behaviors.base import BaseBehavior


@Behavior.register
class Blackout(BaseBehavior):
    """Close the client's connection at once; the data never reaches the other side."""

    name = "blackout"
    client_sees = (
        "The connection is closed at once, cleanly: the client reads end of file, and the "
        "data of the event never reaches the other side."
    )

    def on_before_handle(self, protocol, source, dest, to_backend):
        # Reading what arrived first makes the close a clean one rather than a reset.
        protocol.read(source)
        source.session.close()
        return False
