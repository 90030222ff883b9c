"""The plugin contract: read is the public way to read, _get_data its 1.x name; no-op hooks."""

import socket

import pytest

from vaurien.behaviors import Behavior
from vaurien.behaviors.base import BaseBehavior
from vaurien.contract import does_nothing
from vaurien.protocols.base import BaseProtocol
from vaurien.protocols.tcp import TCP

HOOKS = ("on_before_handle", "on_between_handle", "on_after_handle")


class _Session:
    """What an endpoint needs of a session."""

    def close(self):
        pass

    def reset(self):
        pass


@pytest.fixture
def endpoint():
    from vaurien.endpoint import Endpoint

    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    yield Endpoint(ours, "client", _Session()), theirs
    ours.close()
    theirs.close()


def test_the_default_hooks_do_nothing_and_overrides_do_something():
    base = BaseBehavior()
    assert all(does_nothing(getattr(base, hook)) for hook in HOOKS)
    assert all(does_nothing(getattr(BaseBehavior, hook)) for hook in HOOKS)
    delay = Behavior.get("delay")()
    assert not does_nothing(delay.on_before_handle) and not does_nothing(delay.on_after_handle)
    assert does_nothing(delay.on_between_handle)
    assert does_nothing(None)
    assert not does_nothing(lambda *args: True)


def test_read_and_get_data_read_the_same(endpoint):
    side, peer = endpoint
    protocol = TCP()
    protocol.settings = {"buffer": 4}
    peer.sendall(b"abcdefgh")
    assert protocol.read(side) == b"abcd"
    assert protocol._get_data(side) == b"efgh"
    peer.shutdown(socket.SHUT_WR)
    assert protocol.read(side) == b""


def test_a_1x_protocol_overriding_get_data_is_read_through_it(endpoint):
    class Upper(BaseProtocol):
        name = "upper_for_the_test"

        def _get_data(self, sock, size=None):
            return super()._get_data(sock, size).upper()  # the base, not this again

    class Modern(BaseProtocol):
        def read(self, endpoint, size=None):
            return b"modern"

    side, peer = endpoint
    peer.sendall(b"quiet")
    assert Upper().read(side, 3) == b"QUI"
    assert Upper()._get_data(side) == b"ET"
    assert Modern()._get_data(side) == b"modern"


def test_transient_declares_the_options_it_uses():
    from vaurien.behaviors.transient import Transient

    assert set(Transient.options) == {"inject", "agitate"}
    assert Transient.options["inject"] == Behavior.get("error").options["inject"]
