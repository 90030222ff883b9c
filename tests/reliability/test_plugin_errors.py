"""A plugin that raises ends its own session, logged with the traceback, never the server."""

from __future__ import annotations

import logging
import os
import socket

import gevent.event
import pytest

from control import GreetingServer
from support import recv_exactly, wait_until
from vaurien.behaviors import Behavior
from vaurien.behaviors.base import BaseBehavior
from vaurien.errors import ProtocolError
from vaurien.protocols import Protocol
from vaurien.protocols.tcp import TCP

TRIGGER = b"boom"


class Broken(RuntimeError):
    """What the plugins of these tests raise."""


def behavior_failing_in(hook: str) -> type:
    """A behavior that raises in ``hook`` on events whose data holds TRIGGER."""

    class Failing(BaseBehavior):
        """Raises in one hook when the client sends the trigger."""

        name = f"fails_{hook}"

        def new_state(self):
            return {"triggered": False}  # per connection and direction: see state(source)

        def on_before_handle(self, protocol, source, dest, to_backend):
            data = source.read()
            source.unread(data)
            self.state(source)["triggered"] = TRIGGER in data
            if hook == "on_before_handle":
                self._maybe_fail(source)
            return True

        def on_between_handle(self, protocol, source, dest, to_backend):
            if hook == "on_between_handle":
                self._maybe_fail(source)
            return True

        def on_after_handle(self, protocol, source, dest, to_backend):
            if hook == "on_after_handle":
                self._maybe_fail(source)
            return True

        def _maybe_fail(self, source):
            if self.state(source)["triggered"]:
                raise Broken(f"{hook} broke on purpose")

    return Failing


def ended(sock: socket.socket) -> bool:
    """Whether the proxy ended this connection (end of stream or reset) within 5 seconds."""
    sock.settimeout(5)
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        pass
    return True


def echo_works(sock: socket.socket, data: bytes = b"still fine") -> bool:
    sock.sendall(data)
    return recv_exactly(sock, len(data)) == data


@pytest.mark.parametrize("hook", ["on_before_handle", "on_between_handle", "on_after_handle"])
def test_an_exception_in_a_behavior_hook_ends_only_its_session(
    hook, echo_backend, start_proxy, caplog
):
    behaviors = Behavior.copy()
    failing = behaviors.register(behavior_failing_in(hook))
    proxy = start_proxy(echo_backend.address, behavior=f"100:{failing.name}", behaviors=behaviors)
    with proxy.connect() as bystander, proxy.connect() as victim:
        assert echo_works(bystander)
        assert echo_works(victim)
        victim.sendall(b"here goes " + TRIGGER)
        assert ended(victim)
        assert echo_works(bystander)
    with proxy.connect() as later:
        assert echo_works(later)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert errors[0].exc_info is not None and errors[0].exc_info[0] is Broken
    assert "closing the session" in errors[0].getMessage()
    wait_until(lambda: proxy.call(proxy.proxy.stats)["live_sessions"] == 0)


class FailingSetup(TCP):
    """A tcp protocol whose backend socket setup fails while ``fail_next`` is set."""

    name = "failing_setup"
    fail_next = False

    def setup_socket(self, sock, role):
        if role == "backend" and self.fail_next:
            raise Broken("setup_socket broke on purpose")


def test_an_exception_while_setting_up_a_session_is_logged_and_leaks_nothing(
    echo_backend, start_proxy, caplog
):
    protocols = Protocol.copy()
    protocols.register(FailingSetup)
    proxy = start_proxy(echo_backend.address, protocol="failing_setup", protocols=protocols)
    instance = proxy.proxy.protocol
    instance.fail_next = False
    with proxy.connect() as first:
        assert echo_works(first)
    wait_until(lambda: proxy.call(proxy.proxy.stats)["live_sessions"] == 0)
    baseline = len(os.listdir("/proc/self/fd"))
    instance.fail_next = True
    for _ in range(10):
        with proxy.connect() as victim:
            assert ended(victim)
    wait_until(lambda: echo_backend.connections == 11)
    instance.fail_next = False
    with proxy.connect() as later:
        assert echo_works(later)
    wait_until(lambda: proxy.call(proxy.proxy.stats)["live_sessions"] == 0)
    # The backend sockets of the failed sessions were closed, not left to the collector.
    wait_until(lambda: len(os.listdir("/proc/self/fd")) <= baseline)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 10
    assert all(r.exc_info and r.exc_info[0] is Broken for r in errors)


class TwoFaced(TCP):
    """Fails both directions of a session: the backend's greeting waits until the client's
    request has failed, then fails too, as a framer fed garbage both ways would."""

    name = "two_faced"

    def __init__(self):
        super().__init__()
        self.requests_failed = {}

    def _handle(self, source, dest, to_backend):
        source.read()
        failed = self.requests_failed.setdefault(source.session, gevent.event.Event())
        if to_backend:
            failed.set()  # wakes the other direction before the session's close reaches it
            raise ProtocolError("not a request")
        failed.wait()
        raise ProtocolError("not a reply")


def test_a_session_failing_both_ways_logs_one_line(start_proxy, caplog):
    greeting = GreetingServer(b"220 hello\r\n")
    protocols = Protocol.copy()
    protocols.register(TwoFaced)
    proxy = start_proxy(greeting.address, protocol="two_faced", protocols=protocols)
    try:
        with proxy.connect() as client:
            wait_until(lambda: len(proxy.proxy.protocol.requests_failed) == 1)
            client.sendall(b"garbage")
            assert ended(client)
        wait_until(lambda: proxy.call(proxy.proxy.stats)["live_sessions"] == 0)
    finally:
        greeting.close()
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, warnings
    assert "not a request" in warnings[0]
