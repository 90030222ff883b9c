"""The command line, end to end in a subprocess, and its errors."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from support import free_port, recv_exactly, wait_until
from vaurien.cli import main

ROOT = Path(__file__).parent.parent


def vaurien(*args, **kwargs):
    env = dict(os.environ, PYTHONPATH=f"{ROOT}{os.pathsep}{ROOT / 'tests'}")
    return subprocess.Popen(
        [sys.executable, "-m", "vaurien", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
        **kwargs,
    )


def accepting(port):
    def check():
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            return False

    return check


def run_to_error(*args):
    process = vaurien(*args)
    out, err = process.communicate(timeout=30)
    return process.returncode, err


@pytest.mark.parametrize(
    "spec, message",
    [
        ("20delay", "'20delay': missing ':'"),
        ("abc:delay", "percent must be a number"),
        ("-5:delay", "percent must be a number"),
        ("80:delay,30:error", "percents add up to 110, over 100"),
        ("20:dlay", "unknown behavior 'dlay' (known: abort, bandwidth, blackout, corrupt, delay"),
        ("20:nowhere.Chaos", "cannot import behavior 'nowhere.Chaos': No module named 'nowhere'"),
        ("30:delay+dlay", "unknown behavior 'dlay'"),
    ],
)
def test_bad_spec_exits_2_with_one_line(spec, message):
    status, err = run_to_error("--backend", "127.0.0.1:1", f"--behavior={spec}")
    assert status == 2
    assert err.startswith("vaurien: error: ") and message in err
    assert err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.parametrize(
    "args, message",
    [
        (["--behavior-delay-sleep", "abc"], "--behavior-delay-sleep: sleep: expected float"),
        (["--timeout", "soon"], "argument --timeout: expected a number"),
        (["--protocol", "gopher"], "unknown protocol 'gopher' (known: "),
        (["--proxy", "8000"], "argument --proxy: '8000': expected HOST:PORT"),
        (["--log-level", "loud"], "argument --log-level: expected debug, info"),
        (["--no-such-flag"], "unrecognized arguments: --no-such-flag"),
    ],
)
def test_bad_flag_exits_2_naming_it(args, message, capsys):
    assert main(["--backend", "127.0.0.1:1", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_missing_backend(capsys):
    assert main([]) == 2
    assert "no backend" in capsys.readouterr().err


def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("vaurien 2.")


def test_help_lists_plugin_flags(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "--behavior-delay-sleep" in out and "--no-behavior-delay-before" in out
    assert "--protocol-tcp-buffer" in out


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_serves_then_stops_on_signal(echo_backend, signum):
    port = free_port()
    process = vaurien(
        "--proxy", f"127.0.0.1:{port}", "--backend", echo_backend.address,
        "--behavior", "10:delay", "--behavior-delay-sleep", "0.01",
    )  # fmt: skip
    try:
        wait_until(accepting(port))
        with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
            client.sendall(b"through the subprocess")
            assert recv_exactly(client, 22) == b"through the subprocess"
            start = time.monotonic()
            process.send_signal(signum)
            out, err = process.communicate(timeout=10)
            assert time.monotonic() - start < 2.5
    finally:
        process.kill()
        process.wait()
    assert process.returncode == 0, err
    assert "Traceback" not in err
    for line in (f"listening on 127.0.0.1:{port}", "backend:  127.0.0.1:", "protocol: tcp",
                 "behavior: 10:delay,90:dummy", "closed after 30s idle"):  # fmt: skip
        assert line in err


def test_debug_log_to_a_file_names_the_behavior_of_each_event(echo_backend, tmp_path):
    port = free_port()
    log = tmp_path / "vaurien.log"
    process = vaurien(
        "--proxy", f"127.0.0.1:{port}", "--backend", echo_backend.address,
        "--behavior", "100:delay", "--behavior-delay-sleep", "0",
        "--log-level", "DEBUG", "--log-output", str(log), "--stay-connected",
    )  # fmt: skip
    try:
        wait_until(accepting(port))
        with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
            client.sendall(b"x")
            assert recv_exactly(client, 1) == b"x"
        wait_until(lambda: "session closed" in log.read_text())
    finally:
        process.terminate()
        process.communicate(timeout=10)
    text = log.read_text()
    assert "session opened" in text and "client -> delay" in text and "backend -> delay" in text
    assert "idle sessions" not in text and "kept open" in text


def test_backend_down_warns_once_per_client(tmp_path):
    port, dead = free_port(), free_port()
    process = vaurien("--proxy", f"127.0.0.1:{port}", "--backend", f"127.0.0.1:{dead}")
    try:
        wait_until(accepting(port))
        for _ in range(3):
            with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
                assert client.recv(1) == b""
    finally:
        process.terminate()
        _, err = process.communicate(timeout=10)
    assert err.count(f"cannot reach backend 127.0.0.1:{dead}") >= 2
    assert process.returncode == 0


def test_ipv6_addresses(echo_backend):
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        socket.create_server(("::1", 0), family=socket.AF_INET6).close()
    except OSError:
        pytest.skip("no ::1 on this machine")
    port = free_port()
    process = vaurien("--proxy", f"[::1]:{port}", "--backend", echo_backend.address)
    try:
        wait_until(lambda: _connects(("::1", port)))
        with socket.create_connection(("::1", port), timeout=10) as client:
            client.sendall(b"v6")
            assert recv_exactly(client, 2) == b"v6"
    finally:
        process.terminate()
        process.communicate(timeout=10)


def _connects(address):
    try:
        socket.create_connection(address, timeout=1).close()
        return True
    except OSError:
        return False


def test_demo_shows_the_way():
    port = free_port()
    process = vaurien("--demo", "--proxy", f"127.0.0.1:{port}", "--behavior", "100:dummy")
    try:
        wait_until(accepting(port))
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as answer:
            assert answer.status == 200
            assert b"Hello from the Vaurien demo backend" in answer.read()
    finally:
        process.terminate()
        _, err = process.communicate(timeout=10)
    assert f"curl -i http://127.0.0.1:{port}/" in err
    assert process.returncode == 0


def test_demo_default_mix_is_visible():
    port = free_port()
    process = vaurien("--demo", "--proxy", f"127.0.0.1:{port}")
    try:
        wait_until(accepting(port))
    finally:
        process.terminate()
        _, err = process.communicate(timeout=10)
    assert "behavior mix 20:delay,10:error,10:blackout,60:dummy" in err
    assert "protocol: http" in err  # errors are real 5xx answers


def test_console_script_is_installed():
    script = shutil.which("vaurien")
    if script is None:
        if os.environ.get("CI"):
            pytest.fail("the vaurien console script is not installed")
        pytest.skip("vaurien is not pip-installed here")
    assert subprocess.run([script, "--version"], capture_output=True, text=True).stdout
