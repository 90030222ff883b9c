"""abort: the request goes through, the answer never comes back."""

from vaurien.behaviors import Behavior
from vaurien.behaviors.base import BaseBehavior


@Behavior.register
class Abort(BaseBehavior):
    """Forward the request to the backend, then close the connection before any answer arrives.

    The backend did the work (a write may have happened), the client never learns it: the case
    that idempotent retries exist for.
    """

    name = "abort"
    client_sees = (
        "The request reaches the backend, then the connection is closed before its answer "
        "comes back: the backend did the work, the client reads end of file. Picked for data "
        "coming from the backend, that data is dropped and the connection closed."
    )

    def on_before_handle(self, protocol, source, dest, to_backend):
        # The protocol knows when "before the answer" is: for a plain stream, at once.
        protocol.abort(source, dest, to_backend)
        return False
