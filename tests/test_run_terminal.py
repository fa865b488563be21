"""Interactive use on a real pseudo-terminal: Ctrl-C reaches the child, reading the tty works."""

from __future__ import annotations

import os
import pty
import select
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from tests.helpers import JOBWRAP

CHILD = """
import signal, sys
signal.signal(signal.SIGINT, lambda *a: (print('child got SIGINT', flush=True), sys.exit(5)))
print('name?', flush=True)
line = sys.stdin.readline()
print('hello ' + line.strip(), flush=True)
signal.pause()
"""


def read_until(fd: int, needle: bytes, timeout: float = 30) -> bytes:
    seen = b""
    deadline = time.monotonic() + timeout
    while needle not in seen:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
            raise AssertionError(f"did not see {needle!r}; saw {seen!r}")
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            break
        if not chunk:
            break
        seen += chunk
    return seen


@contextmanager
def jobwrap_on_a_pty(code: str) -> Iterator[tuple[int, int]]:
    """`jobwrap run -- python -c CODE` in a new session whose controlling tty is a pty."""
    pid, master = pty.fork()
    if pid == 0:
        os.execv(sys.executable, [*JOBWRAP, "run", "--", sys.executable, "-c", code])
    try:
        yield pid, master
    finally:
        try:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
        os.close(master)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux pty semantics")
def test_child_reads_the_terminal_and_ctrl_c_reaches_it():
    with jobwrap_on_a_pty(CHILD) as (pid, master):
        read_until(master, b"name?")
        os.write(master, b"ada\n")  # a child in a background group would be stopped here
        read_until(master, b"hello ada")
        os.write(master, b"\x03")  # Ctrl-C from the terminal
        read_until(master, b"child got SIGINT")
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 5


def wait_stopped(pid: int, timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got, status = os.waitpid(pid, os.WUNTRACED | os.WNOHANG)
        if got == pid:
            return os.WIFSTOPPED(status)
        time.sleep(0.02)  # waitpid has no timeout; a short poll bounds the wait
    return False


STOPPABLE = """
import sys, time
print('ready', flush=True)
for line in sys.stdin:
    print('got ' + line.strip(), flush=True)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux pty semantics")
def test_ctrl_z_stops_jobwrap_with_its_child_and_sigcont_resumes_both():
    with jobwrap_on_a_pty(STOPPABLE) as (pid, master):
        read_until(master, b"ready")
        os.write(master, b"\x1a")  # Ctrl-Z: the child's group stops, then jobwrap stops itself
        assert wait_stopped(pid), "jobwrap did not stop with its child"
        # what a shell's `fg` does: give the terminal back to jobwrap's group and continue it
        os.kill(pid, signal.SIGCONT)
        os.write(master, b"again\n")
        read_until(master, b"got again")
        os.write(master, b"\x04")  # EOF ends the child normally
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
