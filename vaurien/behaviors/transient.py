"""transient: the first calls fail, the later ones pass."""

from vaurien.behaviors import Behavior
from vaurien.behaviors.base import BaseBehavior


@Behavior.register
class Transient(BaseBehavior):
    """Fail the first ``agitate`` calls as ``error`` does, then let every call pass.

    A service that errors while it warms up, then recovers: the retry logic under test must
    get through. Calls are counted as for ``error``; the count belongs to the proxy and starts
    again when the behavior is set anew.
    """

    name = "transient"
    options = {"agitate": ("Number of calls that fail before the others pass", int, 1)}
    client_sees = (
        "The first ``agitate`` calls it is picked for fail, and the later ones pass "
        "unchanged. {protocol.error_form}"
    )

    def __init__(self):
        super().__init__()
        self.calls = 0

    def on_before_handle(self, protocol, source, dest, to_backend):
        if to_backend != protocol.errors_on_request:
            return True
        self.calls += 1
        if self.calls > self.settings["agitate"]:
            return True
        protocol.send_error(source, dest, to_backend)
        return False
