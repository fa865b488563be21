"""Schema migrations: a history written by an older jobwrap keeps every run and report."""

from __future__ import annotations

import json
import sqlite3

from jobwrap.store.history import DB_NAME, SCHEMA_VERSION
from tests.fakes.idlemon_server import PROJECT_ID, TOKEN, IdlemonServer
from tests.helpers import jobwrap

# The schema jobwrap wrote at user_version 1, as released (a copy: the code's may move on).
SCHEMA_1 = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY, job TEXT NOT NULL, monitor TEXT, command TEXT NOT NULL,
    schedule TEXT, host TEXT NOT NULL, started_at TEXT NOT NULL, duration_ms INTEGER NOT NULL,
    exit_code INTEGER NOT NULL, signal TEXT, timed_out INTEGER NOT NULL DEFAULT 0,
    skipped TEXT, error TEXT, stdout_lines INTEGER NOT NULL DEFAULT 0,
    stderr_lines INTEGER NOT NULL DEFAULT 0, metas TEXT NOT NULL, cpu_user_s REAL,
    cpu_sys_s REAL, max_rss_kb INTEGER, output_head BLOB, output_tail BLOB,
    output_omitted_lines INTEGER, report_status TEXT NOT NULL DEFAULT 'none',
    report_error TEXT, report_attempts INTEGER NOT NULL DEFAULT 0, report_claim TEXT,
    report_claimed_until REAL, report_sent_at TEXT
);
CREATE INDEX IF NOT EXISTS runs_by_time ON runs (started_at);
CREATE INDEX IF NOT EXISTS runs_by_job ON runs (job, started_at);
CREATE INDEX IF NOT EXISTS runs_by_report ON runs (report_status, started_at)
    WHERE report_status IN ('pending', 'refused');
"""

ROWS = [  # run_id, monitor, exit_code, report_status, output_head
    ("r1", "bar", 0, "sent", b"hello\n"),
    ("r2", "bar", 0, "pending", None),
    ("r3", None, 3, "none", b"\xff binary\n"),
    ("r4", "bar", 0, "refused", None),
]


def write_schema_1_history(state_dir) -> None:
    state_dir.mkdir(parents=True)
    db = sqlite3.connect(state_dir / DB_NAME, isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    db.executescript(SCHEMA_1)
    for n, (run_id, monitor, code, report, head) in enumerate(ROWS):
        metas = json.dumps([{"name": "exit_code", "value": str(code)}])
        db.execute(
            "INSERT INTO runs (run_id, job, monitor, command, host, started_at, duration_ms,"
            " exit_code, metas, output_head, report_status) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            (run_id, monitor or "true", monitor, "true", "old-host",
             f"2030-01-0{n + 1}T00:00:00.000+00:00", 1000 + n, code, metas, head, report))
    db.execute("PRAGMA user_version = 1")
    db.close()


def test_a_schema_1_history_is_migrated_with_every_run_and_report(state_dir, monkeypatch):
    write_schema_1_history(state_dir)
    result = jobwrap("history", "--json")
    assert result.returncode == 0, result.stderr
    runs = {r["run_id"]: r for r in json.loads(result.stdout)}
    assert set(runs) == {"r1", "r2", "r3", "r4"}
    for run_id, monitor, code, report, _ in ROWS:
        run = runs[run_id]
        assert (run["monitor"], run["exit_code"], run["report_status"]) == (monitor, code, report)
        assert run["state"] == "finished" and run["metas"] == [
            {"name": "exit_code", "value": str(code)}]
    assert "binary" in jobwrap("show", "r3").stdout.decode()
    db = sqlite3.connect(state_dir / DB_NAME)
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 2
    db.close()

    with IdlemonServer() as idlemon:  # the pending and refused reports still go out
        monkeypatch.setenv("JOBWRAP_IDLEMON_URL", idlemon.api_url)
        monkeypatch.setenv("JOBWRAP_IDLEMON_TOKEN", TOKEN)
        monkeypatch.setenv("JOBWRAP_IDLEMON_PROJECT", PROJECT_ID)
        flushed = jobwrap("flush")
        assert flushed.returncode == 0, flushed.stdout + flushed.stderr
        assert len(idlemon.logs) == 2
        jobwrap("run", "-m", "bar", "--", "true")  # and new runs land next to the old ones
    statuses = {r["run_id"]: r["report_status"] for r in json.loads(
        jobwrap("history", "--json").stdout)}
    assert len(statuses) == 5 and statuses["r2"] == statuses["r4"] == "sent"
