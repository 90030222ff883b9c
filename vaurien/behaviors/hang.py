"""hang: the data is swallowed and never answered."""

from vaurien.behaviors import Behavior
from vaurien.behaviors.base import BaseBehavior


@Behavior.register
class Hang(BaseBehavior):
    """Read the data and drop it, and everything after it on that side, without answering.

    The connection stays open until the client gives up or the idle timeout (``--timeout``)
    ends the session.
    """

    name = "hang"
    client_sees = (
        "The data of the event, and everything sent after it on that side, is read and dropped: "
        "no answer comes back. The connection stays open until the client gives up or the "
        "idle ``--timeout`` closes it."
    )

    def on_before_handle(self, protocol, source, dest, to_backend):
        hang = getattr(protocol, "hang", None)
        if hang is not None:
            hang(source, dest, to_backend)  # the protocol knows what "unanswered" covers
        else:  # a protocol that does not subclass BaseProtocol
            while protocol._get_data(source):
                pass
        return False
