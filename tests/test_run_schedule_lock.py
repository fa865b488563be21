"""`jobwrap run --schedule/--lock`, `jobwrap next`, doctor's schedule check, context metas."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from tests.helpers import JOBWRAP, jobwrap, py


def test_schedule_is_validated_up_front_and_stored_with_the_run(tmp_path):
    marker = tmp_path / "ran"
    result = jobwrap("run", "--schedule", "61 * * * *", "--", "touch", str(marker))
    assert result.returncode == 2 and not marker.exists()
    assert result.stderr.decode().strip() == (
        "jobwrap: invalid cron expression '61 * * * *': minute 61 is out of range 0-59")
    assert jobwrap("run", "--schedule", "@hourly", "--", "true").returncode == 0
    [run] = json.loads(jobwrap("history", "--json").stdout)
    assert run["schedule"] == "@hourly"


def test_next_prints_fire_times():
    result = jobwrap("next", "CRON_TZ=UTC 0 9 * * 1-5", "-n", "3")
    assert result.returncode == 0
    lines = result.stdout.decode().splitlines()
    assert len(lines) == 3 and all(" 09:00:00+00:00" in line for line in lines)
    bad = jobwrap("next", "0 25 * * *")
    assert bad.returncode == 2 and b"hour 25" in bad.stderr


HOLD = "import sys, time; print('holding', flush=True); time.sleep(float(sys.argv[1]))"


def test_lock_skips_an_overlapping_run_and_records_it(tmp_path):
    cmd = [*JOBWRAP, "run", "-m", "job", "--report", "never", "--lock", "--", *py(HOLD), "30"]
    with subprocess.Popen(cmd, stdout=subprocess.PIPE) as first:
        assert first.stdout.readline() == b"holding\n"
        second = jobwrap("run", "-m", "job", "--report", "never", "--lock", "--", "echo", "x")
        assert second.returncode == 75
        assert second.stdout == b""
        assert b"still holds lock 'job'" in second.stderr
        first.send_signal(signal.SIGTERM)
        first.wait(timeout=30)
    skipped, held = json.loads(jobwrap("history", "--json").stdout)  # newest start first
    assert skipped["skipped"] and skipped["exit_code"] == 75
    assert held["exit_code"] == 143 and not held["skipped"]
    assert jobwrap("run", "-m", "job", "--report", "never", "--lock", "--", "true").returncode == 0


def test_lock_wait_waits_for_the_previous_run():
    cmd = [*JOBWRAP, "run", "--lock=shared", "--", *py(HOLD), "0.5"]
    with subprocess.Popen(cmd, stdout=subprocess.PIPE) as first:
        assert first.stdout.readline() == b"holding\n"
        second = jobwrap("run", "--lock=shared", "--lock-wait", "30s", "--", "echo", "second")
        assert second.returncode == 0 and second.stdout == b"second\n"
        assert first.wait(timeout=30) == 0


def test_the_lock_outlives_a_killed_jobwrap_while_its_job_runs(tmp_path):
    pid_file = tmp_path / "child.pid"
    code = f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); " \
           "print('holding', flush=True); time.sleep(60)"
    with subprocess.Popen([*JOBWRAP, "run", "--lock=db", "--", *py(code)],
                          stdout=subprocess.PIPE) as first:
        assert first.stdout.readline() == b"holding\n"
        first.kill()  # kill -9 jobwrap itself; the job keeps running and keeps the lock
        first.wait()
        assert jobwrap("run", "--lock=db", "--", "true").returncode == 75
        os.kill(int(pid_file.read_text()), signal.SIGKILL)
    # the whole tree is gone: the kernel released the lock, nothing stale remains
    for _ in range(100):
        result = jobwrap("run", "--lock=db", "--", "true")
        if result.returncode == 0:
            break
    assert result.returncode == 0


def test_doctor_compares_each_schedule_with_the_monitors_interval(idlemon, env, tmp_path):
    config = tmp_path / "config" / "jobwrap" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text('[monitors.bar]\nschedule = "0 9 * * 1-5"\n')  # Idlemon expects 60 min
    out = jobwrap("doctor").stdout.decode()
    assert ("FAIL  monitor 'bar': schedule '0 9 * * 1-5' leaves gaps of up to 3 d but Idlemon "
            "expects activity every 1 h") in out
    config.write_text('[monitors.bar]\nschedule = "*/5 * * * *"\n')
    out = jobwrap("doctor").stdout.decode()
    assert "ok    monitor 'bar': schedule '*/5 * * * *' (longest gap 5 min) fits" in out


def test_ci_and_systemd_metas_are_added(tmp_path):
    path = tmp_path / "s.json"
    env = {"GITHUB_ACTIONS": "true", "GITHUB_SERVER_URL": "https://github.com",
           "GITHUB_REPOSITORY": "acme/etl", "GITHUB_RUN_ID": "42", "GITHUB_SHA": "a" * 40,
           "INVOCATION_ID": "abc", "JOBWRAP_SYSTEMD_UNIT": "jobwrap@backup.service"}
    jobwrap("run", "--summary-json", str(path), "--", "true", env=env)
    metas = {m["name"]: m["value"] for m in json.loads(path.read_text())["metas"]}
    assert metas["ci"] == "github-actions"
    assert metas["ci_job_url"] == "https://github.com/acme/etl/actions/runs/42"
    assert metas["commit"] == "a" * 40
    assert metas["systemd_unit"] == "jobwrap@backup.service"


def _lock_dir_is_a_file(state: Path) -> None:
    state.mkdir(parents=True, exist_ok=True)
    (state / "locks").write_text("")


def _lock_path_is_a_directory(state: Path) -> None:
    from jobwrap.store.lock import lock_path

    lock_path(state, "job").mkdir(parents=True)


@pytest.mark.parametrize("break_it", [_lock_dir_is_a_file, _lock_path_is_a_directory])
def test_a_lock_that_cannot_be_taken_skips_the_run_as_flock_n_would(state_dir, tmp_path,
                                                                    break_it):
    break_it(state_dir)
    marker = tmp_path / "ran"
    result = jobwrap("run", "--lock=job", "--", "touch", str(marker))
    assert result.returncode == 75 and not marker.exists()
    lines = result.stderr.decode().splitlines()
    assert len(lines) == 1 and "cannot take lock 'job'" in lines[0], lines
    record = json.loads(jobwrap("show", "--json").stdout)
    assert record["skipped"] and "cannot take lock" in record["skipped"]


def test_a_lock_in_an_unusable_state_dir_skips_the_run(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = jobwrap("run", "--lock", "--", "sh", "-c", "echo ran; exit 3",
                     env={"JOBWRAP_STATE_DIR": str(blocker / "state")})
    assert result.returncode == 75 and result.stdout == b""
    assert b"cannot take lock" in result.stderr


def test_lock_wait_without_lock_is_a_usage_error(tmp_path):
    marker = tmp_path / "ran"
    result = jobwrap("run", "--lock-wait", "5s", "--", "touch", str(marker))
    assert result.returncode == 2 and b"--lock-wait needs --lock" in result.stderr
    assert not marker.exists()
