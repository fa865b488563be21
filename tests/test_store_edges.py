"""The history at its edges: odd bytes, malformed rows, read-only and locked files, modes."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jobwrap.run.record import write_summary
from jobwrap.store import lock
from jobwrap.store.history import DB_NAME, RunRecord, open_history
from tests.fakes import Reply
from tests.helpers import jobwrap


def history_json(*args: str) -> list[dict]:
    result = jobwrap("history", "--json", *args)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


# --- arguments that are not UTF-8 ------------------------------------------------------------

def test_an_argument_that_is_not_utf8_is_recorded_losslessly_and_reported(idlemon, env, state_dir):
    arg = b"caf\xe9"
    result = subprocess.run([sys.executable, "-m", "jobwrap", "run", "-m", "bar", "--",
                             b"printf", b"%s", arg], capture_output=True)
    assert result.returncode == 0 and result.stdout == arg
    assert result.stderr == b""
    [run] = history_json()
    assert [os.fsencode(a) for a in run["argv"]] == [b"printf", b"%s", arg]
    assert run["command"] == "printf %s 'caf\\xe9'"
    assert run["report_status"] == "sent"
    assert len(idlemon.logs) == 1


# --- malformed rows ---------------------------------------------------------------------------

def spoil(state_dir: Path, sql: str) -> str:
    """Run three jobs, spoil the middle one with ``sql`` (``?`` is its run id); its id."""
    for code in (0, 1, 2):
        jobwrap("run", "-m", "bar", "--report", "never", "--", "sh", "-c", f"exit {code}")
    with sqlite3.connect(state_dir / DB_NAME) as db:
        run_id = db.execute("SELECT run_id FROM runs WHERE exit_code = 1").fetchone()[0]
        db.execute(sql, (run_id,))
    return run_id


@pytest.mark.parametrize("sql", [
    "UPDATE runs SET metas = '{not json' WHERE run_id = ?",
    "UPDATE runs SET metas = '[1, 2]' WHERE run_id = ?",
    "UPDATE runs SET started_at = 'yesterday' WHERE run_id = ?",
])
def test_a_malformed_row_is_skipped_and_named_by_history_and_show(state_dir, sql):
    run_id = spoil(state_dir, sql)
    result = jobwrap("history", "--json")
    assert result.returncode == 0
    assert [r["exit_code"] for r in json.loads(result.stdout)] == [2, 0]
    assert run_id[:8] in result.stderr.decode() and "skipped" in result.stderr.decode()
    table = jobwrap("history")
    assert table.returncode == 0 and len(table.stdout.splitlines()) == 3
    shown = jobwrap("show", run_id)
    assert shown.returncode == 1 and b"malformed" in shown.stderr
    assert b"Traceback" not in shown.stderr + table.stderr


def test_a_malformed_pending_report_does_not_stop_flush(idlemon, env, state_dir):
    run_id = spoil(state_dir, "UPDATE runs SET metas = 'x' WHERE run_id = ?")
    with sqlite3.connect(state_dir / DB_NAME) as db:
        db.execute("UPDATE runs SET report_status = 'pending'")
    result = jobwrap("flush")
    assert b"Traceback" not in result.stderr
    assert run_id[:8] in result.stdout.decode() + result.stderr.decode()
    assert len(idlemon.logs) == 2  # the other two were delivered


def add_pending(state_dir: Path, count: int, monitor: str = "bar") -> None:
    with open_history(state_dir) as store:
        for i in range(count):
            store.add(RunRecord(run_id=f"run-{i:04d}", job=monitor, monitor=monitor,
                                command="true", host="h",
                                started_at=f"2030-01-01T00:00:{i % 60:02d}.{i:03d}+00:00",
                                duration_ms=1, exit_code=0, metas=(), report_status="pending"))


def test_a_killed_flush_leaves_few_short_claims(idlemon, env, state_dir):
    add_pending(state_dir, 100)
    idlemon.fail_next(1000, Reply.slow(60))  # the first request hangs: kill the flush there
    flush = subprocess.Popen([sys.executable, "-m", "jobwrap", "flush"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while idlemon.hits == 0 and time.monotonic() < deadline:
            time.sleep(0.02)  # the request arriving is the event (the server has no hook)
        assert idlemon.hits == 1
    finally:
        flush.kill()
        flush.wait()
    with sqlite3.connect(state_dir / DB_NAME) as db:
        claims = db.execute("SELECT report_claimed_until FROM runs WHERE report_claimed_until"
                            " > ?", (time.time(),)).fetchall()
    assert 0 < len(claims) <= 10
    assert max(c for (c,) in claims) - time.time() <= 35  # not the report budget's 330 s


# --- read-only and locked histories -------------------------------------------------------

needs_unshare = pytest.mark.skipif(
    shutil.which("unshare") is None
    or subprocess.run(["unshare", "-rm", "true"], capture_output=True).returncode != 0,
    reason="needs unprivileged user and mount namespaces (unshare -rm)")


def read_only(state_dir: Path, *args: str) -> subprocess.CompletedProcess:
    """`jobwrap ARGS` with the state dir on a read-only filesystem (a bind mount)."""
    d = str(state_dir)
    script = (f'mount --bind "{d}" "{d}" && mount -o remount,ro,bind "{d}" && '
              f'exec "{sys.executable}" -m jobwrap "$@"')
    return subprocess.run(["unshare", "-rm", "sh", "-c", script, "sh", *args],
                          capture_output=True, timeout=60)


@needs_unshare
def test_history_show_and_flush_read_a_history_on_a_read_only_filesystem(state_dir):
    jobwrap("run", "-m", "bar", "--", "sh", "-c", "echo hello")
    jobwrap("run", "-m", "bar", "--", "sh", "-c", "exit 3")
    assert not (state_dir / f"{DB_NAME}-shm").exists()  # so it cannot be made either
    listed = read_only(state_dir, "history", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [r["exit_code"] for r in json.loads(listed.stdout)] == [3, 0]
    shown = read_only(state_dir, "show")
    assert shown.returncode == 0 and b"exit status 3" in shown.stdout
    flushed = read_only(state_dir, "flush")
    assert flushed.returncode == 0, flushed.stderr  # nothing pending: nothing to write
    ran = read_only(state_dir, "run", "--", "sh", "-c", "echo out; exit 4")
    assert ran.returncode == 4 and ran.stdout == b"out\n"
    assert b"not recorded" in ran.stderr and b"Traceback" not in ran.stderr


def test_a_write_locked_history_delays_the_run_a_few_seconds_and_keeps_the_record(state_dir):
    jobwrap("run", "--", "true")
    holder = sqlite3.connect(state_dir / DB_NAME, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # a stuck writer
    try:
        began = time.monotonic()
        result = jobwrap("run", "--", "sh", "-c", "echo kept; exit 5")
        took = time.monotonic() - began
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert result.returncode == 5 and result.stdout == b"kept\n"
    assert took < 8, took  # was 30 s after the job (60 s with the start)
    assert b"spool" in result.stderr
    jobwrap("run", "--", "true")  # the next run moves it in
    runs = history_json()
    assert [r["exit_code"] for r in runs] == [0, 5, 0]
    assert runs[1]["state"] == "finished"
    assert not list((state_dir / "spool").iterdir())


# --- file modes and symlinks -------------------------------------------------------------------

def test_every_file_is_0600_and_every_directory_0700_whatever_the_umask(state_dir, tmp_path):
    summary = tmp_path / "summary.json"
    result = jobwrap("run", "--lock=job", "--summary-json", str(summary), "--", "true",
                     umask=0)
    assert result.returncode == 0, result.stderr
    holder = sqlite3.connect(state_dir / DB_NAME)  # keeps -wal and -shm in place to look at
    holder.execute("SELECT count(*) FROM runs").fetchone()
    try:
        jobwrap("run", "--", "true", umask=0)
        paths = [state_dir, *state_dir.rglob("*")]
        modes = {str(p.relative_to(state_dir.parent)): stat.S_IMODE(p.stat().st_mode)
                 for p in paths}
    finally:
        holder.close()
    assert f"state/{DB_NAME}-wal" in modes and f"state/{DB_NAME}-shm" in modes
    assert any(name.startswith("state/locks/") for name in modes)
    wrong = {n: oct(m) for n, m in modes.items()
             if m != (0o700 if (state_dir.parent / n).is_dir() else 0o600)}
    assert wrong == {}
    assert stat.S_IMODE(summary.stat().st_mode) == 0o600


def test_a_symlink_planted_at_the_lock_file_is_not_followed(state_dir, tmp_path):
    target = tmp_path / "precious"
    target.write_text("keep me\n")
    path = lock.lock_path(state_dir, "job")
    path.parent.mkdir(parents=True)
    path.symlink_to(target)
    result = jobwrap("run", "--lock=job", "--", "true")
    assert b"Traceback" not in result.stderr
    assert target.read_text() == "keep me\n"


def test_the_summary_temp_file_cannot_be_redirected_by_a_symlink(tmp_path):
    target = tmp_path / "precious"
    target.write_text("keep me\n")
    summary = tmp_path / "summary.json"
    (tmp_path / f".{summary.name}.{os.getpid()}.tmp").symlink_to(target)  # the old name
    record = RunRecord(run_id="r", job="j", monitor=None, command="true", host="h",
                       started_at="2030-01-01T00:00:00+00:00", duration_ms=1, exit_code=0,
                       metas=())
    write_summary(summary, record, lambda message: None)
    assert target.read_text() == "keep me\n"
    assert json.loads(summary.read_text())["run_id"] == "r"


# --- the lock names its run -------------------------------------------------------------------

def test_the_lock_file_names_the_run_that_holds_it(state_dir):
    path = lock.lock_path(state_dir, "job")
    result = jobwrap("run", "--lock=job", "--", "cat", str(path))
    assert result.returncode == 0, result.stderr
    [run] = history_json()
    assert json.loads(result.stdout)["run_id"] == run["run_id"]
