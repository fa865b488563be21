"""Issue 9.1: an output jobwrap could not write fails the run, as it fails the bare command."""

from __future__ import annotations

import json
import os
import resource
import subprocess
from pathlib import Path

import pytest

from tests.helpers import JOBWRAP, jobwrap


def history() -> list[dict]:
    return json.loads(jobwrap("history", "--json").stdout)


def run_to(path: str, *command: str, stream: int = 1, limit: int | None = None,
           summary: Path | None = None) -> subprocess.CompletedProcess:
    """``jobwrap run -- command`` with its ``stream`` (1 or 2) going to ``path``."""
    extra = ["--summary-json", str(summary)] if summary else []

    def limit_file_size() -> None:
        if limit is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    with open(path, "wb") as sink:
        other = {"stderr": subprocess.PIPE} if stream == 1 else {"stdout": subprocess.PIPE}
        dest = {"stdout": sink} if stream == 1 else {"stderr": sink}
        return subprocess.run([*JOBWRAP, "run", *extra, "--", *command], **dest, **other,
                              preexec_fn=limit_file_size, timeout=60)


def test_a_file_size_limit_on_stdout_fails_the_run_with_one_line(tmp_path):
    # (ulimit -f 2048; jobwrap run -- seq 1 400000 > f): plain seq dies of SIGXFSZ.  The limit
    # also binds jobwrap's own files, so it leaves room for the history (its WAL), not for 2.7 MB.
    summary = tmp_path / "s.json"
    result = run_to(str(tmp_path / "f"), "seq", "1", "400000", limit=1 << 20, summary=summary)
    assert result.returncode == 1
    lines = result.stderr.decode().splitlines()
    assert lines == ["jobwrap: cannot write the command's stdout: File too large; the run fails"]
    record = json.loads(summary.read_text())
    assert record["exit_code"] == 1
    assert "File too large" in record["error"]


def test_a_full_disk_on_stdout_is_recorded_as_failed():
    result = run_to("/dev/full", "seq", "1", "1000")
    assert result.returncode == 1
    assert b"stdout: No space left on device" in result.stderr
    [run] = history()
    assert run["exit_code"] == 1
    assert "No space left on device" in run["error"]


def test_a_failing_child_keeps_its_own_status_when_the_output_is_lost_too():
    result = run_to("/dev/full", "sh", "-c", "seq 1 1000; exit 3")
    assert result.returncode == 3
    assert b"No space left on device" in result.stderr


def test_a_full_disk_on_stderr_fails_the_run_even_if_the_line_cannot_be_written():
    result = run_to("/dev/full", "sh", "-c", "echo oops >&2", stream=2)
    assert result.returncode == 1
    [run] = history()
    assert run["exit_code"] == 1
    assert "stderr: No space left on device" in run["error"]


@pytest.mark.parametrize("fd", [1, 2])
def test_a_closed_output_fails_as_the_bare_command_does(fd):
    # `jobwrap run -- echo hi >&-` exits as `echo hi >&-` does (1: write error, EBADF).
    target = "1" if fd == 1 else "2"
    command = ["sh", "-c", f"echo hi >&{target} && exit 0 || exit 9"]

    def close_fd() -> None:
        os.close(fd)

    bare = subprocess.run(command, preexec_fn=close_fd, capture_output=False,
                          stdin=subprocess.DEVNULL, timeout=60)
    wrapped = subprocess.run([*JOBWRAP, "run", "--", *command], preexec_fn=close_fd,
                             stdin=subprocess.DEVNULL, timeout=60)
    assert wrapped.returncode == bare.returncode != 0


def test_echo_with_stdout_closed_exits_as_bare_echo():
    def close_stdout() -> None:
        os.close(1)

    bare = subprocess.run(["echo", "hi"], preexec_fn=close_stdout, stderr=subprocess.PIPE,
                          timeout=60)
    wrapped = subprocess.run([*JOBWRAP, "run", "--", "echo", "hi"], preexec_fn=close_stdout,
                             stderr=subprocess.PIPE, timeout=60)
    assert bare.returncode == 1
    assert wrapped.returncode == bare.returncode


def test_a_closed_stdout_never_sends_the_output_into_the_lock_file(state_dir):
    def close_stdout() -> None:
        os.close(1)

    wrapped = subprocess.run([*JOBWRAP, "run", "--lock", "--", "echo", "OUTPUT"],
                             preexec_fn=close_stdout, stderr=subprocess.PIPE, timeout=60)
    assert wrapped.returncode == 1  # as `echo hi >&-`
    [lock] = (state_dir / "locks").iterdir()
    assert not lock.read_bytes().startswith(b"OUTPUT")
