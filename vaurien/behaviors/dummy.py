"""dummy: the data passes untouched."""

from vaurien.behaviors import Behavior
from vaurien.behaviors.base import BaseBehavior


@Behavior.register
class Dummy(BaseBehavior):
    """Pass the data through untouched.

    The share of traffic that a ``--behavior`` spec leaves to no other behavior goes here.
    """

    name = "dummy"
    client_sees = "Nothing changes: the data passes as it is, in both directions."
