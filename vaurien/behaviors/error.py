"""error: the client gets an error instead of the backend's answer."""

from vaurien.behaviors import Behavior
from vaurien.behaviors.base import BaseBehavior
from vaurien.options import at_least


@Behavior.register
class Error(BaseBehavior):
    """Answer with an error instead of the backend's answer, after ``warmup`` calls.

    The protocol decides what an error is: an HTTP client gets a real 5xx, a Redis client a
    ``-ERR`` reply. A plain stream has no error form, so the backend's answer is replaced by
    random bytes, or, with ``inject``, random bytes are inserted in the middle of it. A call is
    an event the error can act on: a request for protocols that answer requests with errors,
    a chunk of the answer on a plain stream.
    """

    name = "error"
    options = {
        "inject": (
            "Insert random bytes into the real answer instead of replacing it",
            bool,
            False,
        ),
        "warmup": ("Number of calls passed through before the errors start", int, 0, at_least(0)),
    }
    client_sees = (
        "The first ``warmup`` calls it is picked for pass unchanged, and each later call "
        "fails. {protocol.error_form}"
    )

    def __init__(self):
        super().__init__()
        self.calls = 0

    def fails(self, call):
        """Whether call number ``call`` (counted from 1, for this proxy) fails."""
        return call > self.settings["warmup"]

    def on_before_handle(self, protocol, source, dest, to_backend):
        if to_backend != protocol.errors_on_request:
            return True
        self.calls += 1
        if not self.fails(self.calls):
            return True
        protocol.send_error(source, dest, to_backend, inject=self.settings["inject"])
        return False
