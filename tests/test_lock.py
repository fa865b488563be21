"""The no-overlap lock, with real processes holding it, dying, and handing it to their child."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jobwrap.errors import StateError
from jobwrap.store import lock

# Takes the lock, says so, and keeps it until its stdin closes.
HOLDER = """
import sys
from pathlib import Path
from jobwrap.store.lock import acquire
held = acquire(Path(sys.argv[1]), sys.argv[2], run_id="run-holder")
print("locked" if held else "busy", flush=True)
sys.stdin.read()
"""

# Plays `jobwrap run --lock`: takes the lock and runs a child that inherits it (pass_fds).
# The child prints its pid, then waits for its stdin (the test's pipe) to close.
JOBWRAP_LIKE = """
import sys
from pathlib import Path
from jobwrap.store.lock import acquire
from jobwrap.process.spawn import RunSpec, run_command
held = acquire(Path(sys.argv[1]), "job", run_id="run-a")
child = "import os, sys; print(os.getpid(), flush=True); sys.stdin.read()"
run_command(RunSpec(argv=(sys.executable, "-c", child), pass_fds=(held.fd,), capture=False))
"""


def start(code: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )


@pytest.fixture
def holder(state_dir: Path):
    proc = start(HOLDER, str(state_dir), "backup")
    assert proc.stdout.readline().strip() == "locked"
    with proc:
        yield proc
        proc.kill()


def test_lock_paths_take_any_name_and_stay_apart(tmp_path: Path) -> None:
    names = ["backup", "/usr/bin/backup --all", "a b", "a_b", "..", "", "日本", "x" * 500]
    paths = [lock.lock_path(tmp_path, name) for name in names]
    assert len(set(paths)) == len(names)
    for path in paths:
        assert path.parent == tmp_path / "locks"
        assert path.suffix == ".lock" and "/" not in path.name and len(path.name) < 80
    assert paths[0].name.startswith("backup-")


def test_a_running_holder_makes_the_second_acquire_fail_and_is_named(
    state_dir: Path, holder: subprocess.Popen
) -> None:
    assert lock.acquire(state_dir, "backup") is None
    named = lock.holder(state_dir, "backup")
    assert (named.pid, named.run_id) == (holder.pid, "run-holder")
    assert named.started_at
    message = named.skip_message()
    assert message.startswith(f"skipped: previous run (pid {holder.pid}, started ")
    assert message.endswith("still holds lock 'backup'")
    assert lock.acquire(state_dir, "another job") is not None  # locks are per name


def test_a_holder_killed_with_sigkill_frees_the_lock_at_once(
    state_dir: Path, holder: subprocess.Popen
) -> None:
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    taken = lock.acquire(state_dir, "backup", run_id="run-2")
    assert taken is not None
    named = taken.holder()
    assert (named.pid, named.run_id) == (os.getpid(), "run-2")
    taken.release()


def test_the_lock_outlives_a_killed_jobwrap_while_its_child_runs(state_dir: Path) -> None:
    with start(JOBWRAP_LIKE, str(state_dir)) as jobwrap_like:
        child_pid = int(jobwrap_like.stdout.readline())
        jobwrap_like.send_signal(signal.SIGKILL)  # jobwrap dies; its child keeps running
        jobwrap_like.wait()
        assert lock.acquire(state_dir, "job") is None, "the running child must hold the lock"
        assert lock.holder(state_dir, "job").run_id == "run-a"
        jobwrap_like.stdin.close()  # the child's stdin: it reads EOF and exits
    taken = lock.acquire(state_dir, "job", wait_s=10)
    assert taken is not None, f"the lock was not released when child {child_pid} exited"
    taken.release()


def test_waiting_takes_the_lock_when_the_holder_exits_in_time(
    state_dir: Path, holder: subprocess.Popen
) -> None:
    holder.stdin.close()  # the holder exits soon, while we wait
    started = time.monotonic()
    taken = lock.acquire(state_dir, "backup", wait_s=10)
    assert taken is not None
    assert time.monotonic() - started < 5
    holder.wait()


def test_waiting_gives_up_after_wait_s_with_growing_polls(
    state_dir: Path, holder: subprocess.Popen
) -> None:
    clock = [0.0]
    naps: list[float] = []

    def sleep(seconds: float) -> None:
        naps.append(seconds)
        clock[0] += seconds

    result = lock.acquire(state_dir, "backup", 2.0, monotonic=lambda: clock[0], sleep=sleep)
    assert result is None
    assert clock[0] == pytest.approx(2.0)
    assert naps[0] == lock.POLL_MIN_S and max(naps) == lock.POLL_MAX_S
    assert naps == sorted(naps[:-1]) + naps[-1:]  # grows, the last nap cut to the deadline


def test_no_wait_means_one_attempt(state_dir: Path, holder: subprocess.Popen) -> None:
    def no_sleep(seconds: float) -> None:
        raise AssertionError("must not wait")

    assert lock.acquire(state_dir, "backup", 0, sleep=no_sleep) is None
    assert lock.acquire(state_dir, "backup", None, sleep=no_sleep) is None


def test_release_frees_the_lock_and_is_idempotent(state_dir: Path) -> None:
    with lock.acquire(state_dir, "job") as first:
        assert first is not None and first.fd is not None
        assert lock.acquire(state_dir, "job") is None  # another open file description
    assert first.fd is None
    first.release()
    second = lock.acquire(state_dir, "job")
    assert second is not None
    second.release()
    assert lock.lock_path(state_dir, "job").exists(), "lock files are never deleted"


def test_an_unusable_state_dir_is_a_state_error(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    with pytest.raises(StateError, match="cannot open lock file"):
        lock.acquire(not_a_dir, "job")


def test_an_unreadable_or_foreign_lock_file_gives_an_unknown_holder(state_dir: Path) -> None:
    path = lock.lock_path(state_dir, "job")
    path.parent.mkdir(parents=True)
    path.write_text("not json")
    assert lock.holder(state_dir, "job") == lock.LockHolder("job")
    assert lock.LockHolder("job").skip_message() == (
        "skipped: a previous run still holds lock 'job'"
    )
