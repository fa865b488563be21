"""The local history: every run recorded, concurrency-safe, readable by history and show."""

from __future__ import annotations

import fcntl
import json
import multiprocessing
import os
import shlex
import sqlite3
import subprocess
from contextlib import closing
from pathlib import Path

import pytest

from jobwrap.errors import StateError
from jobwrap.store import sqlite as sqlitedb
from jobwrap.store.history import DB_NAME, SCHEMA_VERSION, RunRecord, open_history
from tests.helpers import JOBWRAP, jobwrap, py


def history_json(*args: str) -> list[dict]:
    result = jobwrap("history", "--json", *args)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_a_run_is_recorded_with_what_history_promises(state_dir):
    jobwrap("run", "-m", "backup", "--meta", "n=(\\d+)", "--", *py("print('done 5'); exit(3)"))
    [run] = history_json()
    for key in ("run_id", "monitor", "command", "started_at", "duration_ms", "exit_code", "metas"):
        assert key in run
    assert run["monitor"] == "backup"
    assert run["exit_code"] == 3
    assert {"name": "n", "value": "5"} in run["metas"]
    assert run["command"] == shlex.join(py("print('done 5'); exit(3)"))
    db = sqlite3.connect(state_dir / DB_NAME)
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()


def test_history_is_newest_first_filtered_and_limited():
    for i in range(3):
        jobwrap("run", "-m", "a" if i % 2 == 0 else "b", "--", "sh", "-c", f"exit {i}")
    codes = [r["exit_code"] for r in history_json()]
    assert codes == [2, 1, 0]
    assert [r["exit_code"] for r in history_json("--monitor", "a")] == [2, 0]
    assert len(history_json("--limit", "1")) == 1


def test_history_table_for_people():
    jobwrap("run", "-m", "nightly", "--", "sh", "-c", "exit 4")
    jobwrap("run", "--timeout", "0.2", "--", "sleep", "5")
    table = jobwrap("history").stdout.decode()
    header, timeout_row, exit_row = table.splitlines()
    assert header.split()[:4] == ["STARTED", "MONITOR", "RESULT", "DURATION"]
    assert "timeout" in timeout_row and "sleep 5" in timeout_row
    assert "nightly" in exit_row and "exit 4" in exit_row


def test_empty_history_says_so():
    result = jobwrap("history")
    assert result.returncode == 0
    assert result.stdout == b"no runs recorded yet\n"


@pytest.mark.slow
def test_forty_concurrent_runs_are_all_recorded():
    procs = [
        subprocess.Popen(
            [*JOBWRAP, "run", "-m", "burst", "--report", "never", "--", "echo", str(i)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for i in range(40)
    ]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0] * 40
    assert all(err == b"" for _, err in outputs), [e for _, e in outputs if e]
    runs = history_json("--limit", "100")
    assert len(runs) == 40
    assert len({r["run_id"] for r in runs}) == 40


def _open_fresh_history_at_once(state_dir: Path, barrier) -> str | None:
    barrier.wait()  # all processes open the new file at the same instant
    try:
        with closing(open_history(state_dir)) as store:
            store.add(RunRecord(run_id=f"r{os.getpid()}", job="j", monitor=None, command="true",
                                host="h", started_at="2026-11-23T00:00:00Z", duration_ms=1,
                                exit_code=0, metas=()))
    except StateError as exc:
        return str(exc)
    return None


def test_processes_creating_the_history_at_the_same_instant_all_record(tmp_path):
    """Switching a new file to WAL fails at once (no busy wait) if another process reads it:
    the set-up is serialised, so no opener of a fresh history loses its run."""
    # Not fork: a thread another test left behind could hold a lock the children then inherit.
    spawn = multiprocessing.get_context("spawn")
    with spawn.Manager() as manager, spawn.Pool(4) as pool:
        for round_no in range(25):
            state = tmp_path / f"round{round_no}"
            barrier = manager.Barrier(4)
            errors = pool.starmap(_open_fresh_history_at_once, [(state, barrier)] * 4)
            assert errors == [None] * 4, f"round {round_no}: {errors}"
            with closing(open_history(state)) as store:
                assert len(store.recent(limit=10)) == 4


def test_unwritable_state_dir_warns_once_and_keeps_the_status(tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    env = {"JOBWRAP_STATE_DIR": str(blocker / "state")}
    result = jobwrap("run", "--", "sh", "-c", "echo out; exit 6", env=env)
    assert result.returncode == 6
    assert result.stdout == b"out\n"
    warnings = result.stderr.decode().splitlines()
    assert len(warnings) == 1
    assert "not recorded" in warnings[0] and "exit status is unaffected" in warnings[0]


def test_show_defaults_to_the_last_run_and_keeps_head_and_tail_of_output():
    code = "for i in range(1000): print(f'line {i}')"
    jobwrap("run", "--", *py(code))
    text = jobwrap("show").stdout.decode()
    assert "line 0\n" in text and "line 19\n" in text
    assert "line 20\n" not in text and "line 899\n" not in text
    assert "… 880 lines left out …" in text
    assert "line 900\n" in text and "line 999" in text


def test_show_by_id_prefix_and_as_json():
    jobwrap("run", "--", "echo", "first")
    jobwrap("run", "--", "echo", "second")
    first = history_json()[-1]
    result = jobwrap("show", "--json", first["run_id"][:8])
    data = json.loads(result.stdout)
    assert data["run_id"] == first["run_id"]
    assert data["output_head"] == "first\n"


def test_show_unknown_run_is_a_clear_error():
    jobwrap("run", "--", "true")
    result = jobwrap("show", "ffffffff")
    assert result.returncode == 1
    assert result.stderr.decode().strip() == "jobwrap: no run 'ffffffff' in the history"


def test_no_capture_keeps_no_output():
    result = jobwrap("run", "--no-capture", "--", "sh", "-c", "echo secret-$((40 + 2))")
    assert result.stdout == b"secret-42\n"
    data = json.loads(jobwrap("show", "--json").stdout)
    assert data["output_head"] is None and data["output_tail"] is None
    assert b"secret-42" not in jobwrap("show").stdout


def test_summary_json_is_the_record(tmp_path):
    path = tmp_path / "out" / "summary.json"
    path.parent.mkdir()
    jobwrap("run", "--summary-json", str(path), "-m", "ci-step", "--", "true")
    data = json.loads(path.read_text())
    assert data["monitor"] == "ci-step"
    assert data["run_id"] == history_json()[0]["run_id"]


def test_output_is_kept_for_the_twenty_most_recent_runs_of_each_job(state_dir):
    from datetime import UTC, datetime, timedelta

    from jobwrap.store.history import KEEP_OUTPUT_RUNS, RunRecord, open_history

    store = open_history(state_dir)
    start = datetime.now(UTC) - timedelta(days=1)  # well within the 90 days kept
    try:
        for i in range(KEEP_OUTPUT_RUNS + 2):
            for job in ("a", "b") if i < 3 else ("a",):
                store.add(RunRecord(
                    run_id=f"{job}-{i:03d}", job=job, monitor=job, command="x", host="h",
                    started_at=(start + timedelta(minutes=i)).isoformat(), duration_ms=1,
                    exit_code=0, metas=(), output_head=b"out\n", output_tail=b"",
                ))
        kept = {r.run_id for r in store.recent(limit=100) if r.output_head is not None}
    finally:
        store.close()
    assert kept == {f"a-{i:03d}" for i in range(2, KEEP_OUTPUT_RUNS + 2)} | {"b-000", "b-001",
                                                                            "b-002"}


def test_a_stopped_process_holding_the_set_up_lock_delays_others_boundedly(tmp_path):
    """A holder stopped mid-set-up (Ctrl-Z) must not hang every later job."""
    path = tmp_path / DB_NAME
    holder = os.open(f"{path}.setup-lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(holder, fcntl.LOCK_EX)
    try:
        with closing(sqlitedb.connect(path, 1000)) as conn, \
                pytest.raises(StateError, match="set-up lock for 0.2 s"):
            sqlitedb.prepare(conn, path, ("CREATE TABLE t (x)",), wait_s=0.2)
    finally:
        os.close(holder)
    with closing(sqlitedb.connect(path, 1000)) as conn:
        sqlitedb.prepare(conn, path, ("CREATE TABLE t (x)",), wait_s=0.2)
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"



def test_the_undelivered_statuses_are_spelled_as_the_partial_index_expects(tmp_path):
    # runs_by_report covers only undelivered reports.  SQLite uses a partial index only when
    # the query's text names the same statuses (bound parameters cannot prove it applies), so
    # the report queries write UNDELIVERED_SQL into their text.
    from jobwrap.store.record import UNDELIVERED, ReportStatus
    from jobwrap.store.reports import UNDELIVERED_SQL

    assert set(UNDELIVERED) == {"pending", "refused"}
    assert set(ReportStatus) == {"none", "pending", "sent", "refused", "discarded"}
    with open_history(tmp_path) as history:
        sql = ("SELECT monitor, report_status, count(*) FROM runs"
               f" WHERE report_status IN ({UNDELIVERED_SQL}) GROUP BY monitor, report_status")
        plan = " ".join(str(row[3]) for row in history.conn.execute("EXPLAIN QUERY PLAN " + sql))
        assert "runs_by_report" in plan, plan
        bound = sql.replace(UNDELIVERED_SQL, "?, ?")
        plan = " ".join(str(row[3]) for row in
                        history.conn.execute("EXPLAIN QUERY PLAN " + bound, UNDELIVERED))
        assert "runs_by_report" not in plan  # why the statuses go into the text


@pytest.mark.parametrize("args", [["show", "\udcff"], ["show", "-m", "\udcff"],
                                  ["history", "-m", "\udcff"]])
def test_a_lookup_that_is_not_utf8_is_one_line_and_exit_2(args):
    run = jobwrap("run", "--", "true")
    assert run.returncode == 0
    argv = [os.fsencode(a) for a in args]  # the raw bytes, as a shell would pass $'\xff'
    result = subprocess.run([*JOBWRAP, *argv], capture_output=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.count(b"\n") == 1 and b"not UTF-8" in result.stderr
