"""transient: the first calls fail, the later ones pass."""

from vaurien.behaviors import Behavior
from vaurien.behaviors.error import Error
from vaurien.options import at_least


@Behavior.register
class Transient(Error):
    """Fail the first ``agitate`` calls as ``error`` does, then let every call pass.

    A service that errors while it warms up, then recovers: the retry logic under test must
    get through. Calls are counted as for ``error``; the count belongs to the proxy and starts
    again when the behavior is set anew.
    """

    name = "transient"
    options = {
        "inject": Error.options["inject"],
        "agitate": ("Number of calls that fail before the others pass", int, 1, at_least(0)),
    }
    client_sees = (
        "The first ``agitate`` calls it is picked for fail, and the later ones pass "
        "unchanged. {protocol.error_form}"
    )

    def fails(self, call):
        """Whether call number ``call`` (counted from 1, for this proxy) fails."""
        return call <= self.settings["agitate"]
