"""The systemd notify protocol, against real AF_UNIX datagram sockets."""

from __future__ import annotations

import os
import socket
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from jobwrap.cron import sdnotify


class Listener:
    """A datagram socket standing in for systemd's notify socket."""

    def __init__(self, sock: socket.socket, env_value: str) -> None:
        self.sock = sock
        self.env = {"NOTIFY_SOCKET": env_value}

    def receive(self) -> str:
        return self.sock.recv(4096).decode()


def _bound_socket(address: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.settimeout(2.0)  # a failure to deliver shows up as a timeout, not a hang
    return sock


@pytest.fixture
def listener() -> Iterator[Listener]:
    # A short directory: socket paths are limited to ~107 bytes, pytest's tmp_path can be long.
    with tempfile.TemporaryDirectory(prefix="jw-") as directory:
        path = str(Path(directory) / "notify")
        with _bound_socket(path) as sock:
            yield Listener(sock, path)


@pytest.fixture
def abstract_listener() -> Iterator[Listener]:
    name = f"jobwrap-test-{uuid.uuid4().hex}"
    with _bound_socket("\0" + name) as sock:
        yield Listener(sock, "@" + name)


def test_ready_reaches_a_path_socket(listener: Listener) -> None:
    assert sdnotify.ready(env=listener.env) is True
    assert listener.receive() == "READY=1"


def test_notify_reaches_an_abstract_socket(abstract_listener: Listener) -> None:
    assert sdnotify.notify("READY=1\nSTATUS=up", abstract_listener.env) is True
    assert abstract_listener.receive() == "READY=1\nSTATUS=up"


def test_each_helper_sends_its_state(listener: Listener) -> None:
    assert sdnotify.watchdog(env=listener.env)
    assert listener.receive() == "WATCHDOG=1"
    assert sdnotify.stopping("draining 2 jobs", env=listener.env)
    assert listener.receive() == "STOPPING=1\nSTATUS=draining 2 jobs"
    assert sdnotify.ready("3 jobs scheduled", env=listener.env)
    assert listener.receive() == "READY=1\nSTATUS=3 jobs scheduled"


def test_reloading_carries_the_monotonic_clock(listener: Listener) -> None:
    before = time.monotonic_ns() // 1000
    assert sdnotify.reloading(env=listener.env)
    first, second = listener.receive().split("\n")
    assert first == "RELOADING=1"
    name, _, value = second.partition("=")
    assert name == "MONOTONIC_USEC"
    assert before <= int(value) <= time.monotonic_ns() // 1000


def test_a_newline_in_status_cannot_inject_another_variable(listener: Listener) -> None:
    assert sdnotify.status("half done\nREADY=1", env=listener.env)
    assert listener.receive() == "STATUS=half done READY=1"


def test_the_default_environment_is_os_environ(
    listener: Listener, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", listener.env["NOTIFY_SOCKET"])
    assert sdnotify.watchdog() is True
    assert listener.receive() == "WATCHDOG=1"


@pytest.mark.parametrize("value", [None, "", "relative/notify", "vsock:2:1234"])
def test_no_usable_socket_is_false_without_an_exception(value: str | None) -> None:
    env = {} if value is None else {"NOTIFY_SOCKET": value}
    assert sdnotify.ready(env=env) is False


def test_a_failed_send_is_false_without_an_exception(tmp_path: Path) -> None:
    assert sdnotify.ready(env={"NOTIFY_SOCKET": str(tmp_path / "nobody-here")}) is False
    with tempfile.TemporaryDirectory(prefix="jw-") as directory:
        stale = str(Path(directory) / "stale")
        _bound_socket(stale).close()  # the file stays, nobody listens: connection refused
        assert os.path.exists(stale)
        assert sdnotify.watchdog(env={"NOTIFY_SOCKET": stale}) is False


@pytest.mark.parametrize(
    ("env", "interval"),
    [
        ({"WATCHDOG_USEC": "30000000"}, 30.0),
        ({"WATCHDOG_USEC": "500000", "WATCHDOG_PID": str(os.getpid())}, 0.5),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid() + 1)}, None),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "not-a-pid"}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "-5"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({}, None),
    ],
)
def test_watchdog_interval(env: dict[str, str], interval: float | None) -> None:
    assert sdnotify.watchdog_interval(env) == interval


def test_watchdog_interval_reads_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "2000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert sdnotify.watchdog_interval() == 2.0
