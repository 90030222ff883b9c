"""The ``vaurien_proxy`` fixture, loaded by pytest through the ``pytest11`` entry point."""

from __future__ import annotations

import importlib.metadata
import os
import socket

import pytest

from control import option_values
from support import recv_exactly
from vaurien.pytest_plugin import command_line

pytest_plugins = ["pytester"]


def test_the_plugin_is_registered_for_pytest():
    [entry_point] = [
        ep for ep in importlib.metadata.entry_points(group="pytest11") if ep.name == "vaurien"
    ]
    assert entry_point.value == "vaurien.pytest_plugin"


def test_the_fixture_starts_a_proxy_with_its_control_api(vaurien_proxy, echo_backend):
    proxy = vaurien_proxy(backend=echo_backend.address)
    assert proxy.host == "127.0.0.1"
    assert proxy.address == f"127.0.0.1:{proxy.port}"
    assert proxy.client.get_behavior() == "dummy"
    assert proxy.client.get_backend() == echo_backend.address
    with socket.create_connection((proxy.host, proxy.port), timeout=10) as sock:
        sock.sendall(b"ping")
        assert recv_exactly(sock, 4) == b"ping"
    with proxy.client.with_behavior("blackout"):
        with socket.create_connection((proxy.host, proxy.port), timeout=10) as sock:
            sock.sendall(b"ping")
            assert sock.recv(10) == b""
    assert proxy.client.get_behavior() == "dummy"


def test_the_fixture_takes_a_behavior_and_options_as_flags(vaurien_proxy, echo_backend):
    proxy = vaurien_proxy(
        backend=(echo_backend.host, echo_backend.port),
        behavior="50:delay",
        behavior_delay_sleep=0.25,
        stay_connected=True,
    )
    assert proxy.client.get_behavior() == "50:delay,50:dummy"
    assert proxy.client.get_behavior_options()["delay"] == option_values("delay", sleep=0.25)
    assert "--stay-connected" in proxy.argv


def test_two_proxies_in_one_test(vaurien_proxy, echo_backend):
    first = vaurien_proxy(echo_backend.address)
    second = vaurien_proxy(echo_backend.address, behavior="100:hang")
    assert first.port != second.port
    assert (first.client.get_behavior(), second.client.get_behavior()) == ("dummy", "hang")


def test_a_proxy_that_cannot_start_fails_the_test_with_its_error(vaurien_proxy):
    with pytest.raises(ValueError, match="unknown behavior 'nope'"):
        vaurien_proxy("127.0.0.1:1", behavior="100:nope")


@pytest.mark.parametrize(
    ("options", "argv"),
    [
        ({"stay_connected": True}, ["--stay-connected"]),
        ({"stay_connected": False}, ["--no-stay-connected"]),
        ({"seed": None}, []),
        (
            {"behavior_delay_sleep": 1.5, "seed": 4},
            ["--behavior-delay-sleep", "1.5", "--seed", "4"],
        ),
    ],
)
def test_keyword_options_become_flags(options, argv):
    assert command_line(**options) == argv


def test_everything_started_is_stopped_at_the_end_of_the_test(pytester, echo_backend):
    pid_file = pytester.path / "pids"
    pytester.makepyfile(
        f"""
        import pathlib

        def test_uses_two_proxies(vaurien_proxy):
            pids = [vaurien_proxy({echo_backend.address!r}).pid for _ in range(2)]
            pathlib.Path({str(pid_file)!r}).write_text(" ".join(map(str, pids)))
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    pids = [int(pid) for pid in pid_file.read_text().split()]
    assert len(pids) == 2
    for pid in pids:
        with pytest.raises(ChildProcessError):  # stopped and reaped
            os.waitpid(pid, os.WNOHANG)


def test_a_proxy_that_dies_during_the_test_fails_it_with_its_log(pytester, echo_backend):
    pytester.makepyfile(
        f"""
        import os, signal, time

        def test_kills_its_proxy(vaurien_proxy):
            proxy = vaurien_proxy({echo_backend.address!r})
            os.kill(proxy.pid, signal.SIGKILL)
            deadline = time.monotonic() + 30
            while proxy.poll() is None and time.monotonic() < deadline:
                time.sleep(0.01)
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*vaurien proxy 127.0.0.1:* exited with status -9*"])


def test_a_named_proxy_is_driven_by_its_name(vaurien_proxy, echo_backend):
    proxy = vaurien_proxy(backend=echo_backend.address, name="cache", behavior="100:delay",
                          behavior_delay_sleep=0.01)  # fmt: skip
    assert proxy.client.proxy == "cache"
    assert list(proxy.client.list_proxies()) == ["cache"]
    assert proxy.client.get_behavior() == "delay"
    proxy.client.set_behavior("blackout")
    with socket.create_connection((proxy.host, proxy.port), timeout=10) as sock:
        sock.sendall(b"ping")
        assert sock.recv(10) == b""


def test_the_fixture_takes_rules_and_a_scenario(vaurien_proxy, echo_backend):
    proxy = vaurien_proxy(
        echo_backend.address,
        rules=["far: client=10.0.0.0/8 => 100:reset"],
        scenario="1req 100:dummy; 100:blackout",
    )
    assert [rule["name"] for rule in proxy.client.get_rules()] == ["far"]
    assert proxy.client.get_scenario()["step"] == 1
    with proxy.rules(["here: client=127.0.0.0/8 => 100:dummy"]):
        assert [rule["name"] for rule in proxy.client.get_rules()] == ["here"]
    assert [rule["name"] for rule in proxy.client.get_rules()] == ["far"]


def test_a_scenario_for_a_block(vaurien_proxy, echo_backend):
    proxy = vaurien_proxy(echo_backend.address)
    with proxy.scenario("2req 100:dummy; 100:blackout"):
        with socket.create_connection((proxy.host, proxy.port), timeout=10) as sock:
            sock.sendall(b"ping")
            assert recv_exactly(sock, 4) == b"ping"  # two picks: there and back
            sock.sendall(b"ping")
            assert sock.recv(10) == b""  # then the blackout
        assert proxy.client.get_scenario()["step"] == 2
    assert proxy.client.get_scenario() == {"scenario": None}
