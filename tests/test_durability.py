"""Nothing lost: a run is on disk before its command starts, and kill -9 leaves a trace."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess

from jobwrap.store.history import open_history
from tests.helpers import JOBWRAP, jobwrap


def start_run(*args: str, child: str) -> tuple[subprocess.Popen, int]:
    """Start `jobwrap run ARGS -- sh -c CHILD`; CHILD's first line is its pid, then it runs."""
    proc = subprocess.Popen([*JOBWRAP, "run", *args, "--", "sh", "-c", f"echo $$; {child}"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert proc.stdout is not None
    child_pid = int(proc.stdout.readline())
    return proc, child_pid


def history_json(*args: str) -> list[dict]:
    result = jobwrap("history", "--json", "--limit", "500", *args)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def test_a_running_job_is_visible_and_a_killed_jobwrap_leaves_an_abandoned_run(state_dir):
    proc, child = start_run("-m", "nightly", child="exec sleep 30")
    try:
        [run] = history_json()
        assert run["state"] == "running" and run["pid"] == proc.pid
        row = jobwrap("history").stdout.decode().splitlines()[1]
        assert "nightly" in row and "running" in row
        proc.kill()  # kill -9 of jobwrap: its child runs on, unsupervised
        proc.wait()
    finally:
        kill(child)
        proc.kill()
        proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()
    [run] = history_json()
    assert run["state"] == "abandoned"
    assert "abandoned" in jobwrap("history").stdout.decode().splitlines()[1]
    assert "abandoned" in jobwrap("show").stdout.decode()
    status = jobwrap("status").stdout.decode()
    assert "nightly" in status and "abandoned" in status
    doctor = jobwrap("doctor").stdout.decode()
    assert "abandoned" in doctor and run["run_id"][:8] in doctor


def test_a_run_from_before_a_reboot_is_abandoned(state_dir):
    jobwrap("run", "-m", "nightly", "--", "true")
    # As a power cut would leave it: running, written during an earlier boot.
    with open_history(state_dir) as store, store.write() as db:
        db.execute("UPDATE runs SET state = 'running', pid = ?, boot_id = 'before'",
                   (os.getpid(),))
    [run] = history_json()
    assert run["state"] == "abandoned"


def test_kill_9_of_jobwrap_at_random_moments_always_leaves_a_record(state_dir, tmp_path):
    """Every run whose command started is in the history, whenever jobwrap was killed."""
    rng = random.Random(9)
    runs = 30
    procs = []
    for i in range(runs):
        marker = tmp_path / f"started-{i}"
        # The command says it started (the marker), then takes a moment to finish.
        child = f"touch {marker}; sleep 0.2"
        procs.append((marker, subprocess.Popen(
            [*JOBWRAP, "run", "--", "sh", "-c", child],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)))
        if len(procs) % 6 == 0 or i == runs - 1:
            for _, proc in procs[-6:]:
                try:
                    proc.wait(timeout=rng.uniform(0.05, 0.6))
                except subprocess.TimeoutExpired:
                    proc.kill()
                proc.wait()
    commands = {r["command"] for r in history_json()}
    started = [marker for marker, _ in procs if marker.exists()]
    assert len(started) >= runs // 3  # the moments cover the command's run, not only start-up
    missing = [m.name for m in started if not any(str(m) in c for c in commands)]
    assert missing == []
