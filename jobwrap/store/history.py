"""The local history: one SQLite database in the state directory, safe under concurrency.

Many cron jobs start in the same second, so every connection uses WAL, a long busy timeout and
short ``BEGIN IMMEDIATE`` transactions (a deferred transaction that later wants to write can
fail with "database is locked" without waiting; an immediate one waits its turn).  The schema
version lives in ``PRAGMA user_version``.

The same table is the durable spool of reports: a run whose report could not be delivered is
``report_status = 'pending'`` until a later run or ``jobwrap flush`` delivers it.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from jobwrap.errors import StateError
from jobwrap.store import sqlite as sqlitedb

SCHEMA_VERSION = 1
DB_NAME = "history.sqlite3"
BUSY_TIMEOUT_MS = 30_000
KEEP_OUTPUT_RUNS = 20  # per job: older runs keep their record but drop their captured output
KEEP_DAYS = 90  # delivered or unreported runs older than this are pruned

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    job TEXT NOT NULL,                 -- monitor slug, else the command: groups a job's runs
    monitor TEXT,
    command TEXT NOT NULL,
    schedule TEXT,
    host TEXT NOT NULL,
    started_at TEXT NOT NULL,          -- ISO 8601, UTC
    duration_ms INTEGER NOT NULL,
    exit_code INTEGER NOT NULL,        -- jobwrap's exit status for the run (128+N, 124, ...)
    signal TEXT,
    timed_out INTEGER NOT NULL DEFAULT 0,
    skipped TEXT,                      -- why the command was not started, if it was not
    error TEXT,                        -- e.g. "command not found: foo"
    stdout_lines INTEGER NOT NULL DEFAULT 0,
    stderr_lines INTEGER NOT NULL DEFAULT 0,
    metas TEXT NOT NULL,               -- JSON [{"name": ..., "value": ...}], as reported
    cpu_user_s REAL,
    cpu_sys_s REAL,
    max_rss_kb INTEGER,
    output_head BLOB,
    output_tail BLOB,
    output_omitted_lines INTEGER,
    report_status TEXT NOT NULL DEFAULT 'none',  -- none | pending | sent | refused
    report_error TEXT,
    report_attempts INTEGER NOT NULL DEFAULT 0,
    report_claim TEXT,                 -- who is delivering it now (see claim_pending)
    report_claimed_until REAL,
    report_sent_at TEXT
);
CREATE INDEX IF NOT EXISTS runs_by_time ON runs (started_at);
CREATE INDEX IF NOT EXISTS runs_by_job ON runs (job, started_at);
CREATE INDEX IF NOT EXISTS runs_by_report ON runs (report_status, started_at)
    WHERE report_status IN ('pending', 'refused');
"""


@dataclass(frozen=True)
class RunRecord:
    """One row of the history, as stored and as shown by ``history``/``show``/``--summary-json``."""

    run_id: str
    job: str
    monitor: str | None
    command: str
    host: str
    started_at: str
    duration_ms: int
    exit_code: int
    metas: tuple[tuple[str, str], ...]
    schedule: str | None = None
    signal: str | None = None
    timed_out: bool = False
    skipped: str | None = None
    error: str | None = None
    stdout_lines: int = 0
    stderr_lines: int = 0
    cpu_user_s: float | None = None
    cpu_sys_s: float | None = None
    max_rss_kb: int | None = None
    output_head: bytes | None = None
    output_tail: bytes | None = None
    output_omitted_lines: int | None = None
    report_status: str = "none"
    report_error: str | None = None
    report_attempts: int = 0
    report_sent_at: str | None = None

    def to_json(self, with_output: bool = False) -> dict:
        """A JSON-ready dict; metas as the ``[{"name", "value"}]`` list Idlemon receives."""
        data = {k: getattr(self, k) for k in _COLUMNS if not k.startswith("output_")}
        data["metas"] = [{"name": n, "value": v} for n, v in self.metas]
        data["timed_out"] = bool(self.timed_out)
        if with_output:
            data["output_head"] = _text(self.output_head)
            data["output_tail"] = _text(self.output_tail)
            data["output_omitted_lines"] = self.output_omitted_lines
        return data


_COLUMNS = tuple(RunRecord.__dataclass_fields__)


def _text(data: bytes | None) -> str | None:
    return None if data is None else data.decode("utf-8", "replace")


def default_state_dir(env: Mapping[str, str] = os.environ) -> Path:
    """Where the state lives when nothing says otherwise (``JOBWRAP_STATE_DIR`` and the config
    files are config's business): ``$XDG_STATE_HOME/jobwrap``, else the user's or root's."""
    if env.get("XDG_STATE_HOME"):
        return Path(env["XDG_STATE_HOME"]) / "jobwrap"
    if os.geteuid() == 0:
        return Path("/var/lib/jobwrap")
    return Path.home() / ".local" / "state" / "jobwrap"


class History:
    """The run store.  Open it with :func:`open_history`; close it when done."""

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self.conn = conn
        self.path = path

    def close(self) -> None:
        self.conn.close()

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """A short immediate transaction: waits for other writers instead of failing."""
        try:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield self.conn
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            self.conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise StateError(f"cannot write the history {self.path}: {exc}") from None

    def add(self, rec: RunRecord, claim: str | None = None, lease_s: float = 0.0) -> None:
        """Insert a run.  ``claim``: the inserting process will deliver its report itself."""
        values = {k: getattr(rec, k) for k in _COLUMNS}
        values["metas"] = json.dumps([{"name": n, "value": v} for n, v in rec.metas])
        values["timed_out"] = int(rec.timed_out)
        values["report_claim"] = claim
        values["report_claimed_until"] = time.time() + lease_s if claim else None
        cols = ", ".join(values)
        marks = ", ".join(f":{c}" for c in values)
        with self.write() as db:
            db.execute(f"INSERT INTO runs ({cols}) VALUES ({marks})", values)
            _drop_old_output(db, rec.job)
            db.execute(
                "DELETE FROM runs WHERE started_at < datetime('now', ?) "
                "AND report_status NOT IN ('pending', 'refused')",
                (f"-{KEEP_DAYS} days",),
            )

    def add_metas(self, run_id: str, metas: list[tuple[str, str]]) -> None:
        """Append metas to a stored run (what happened after it, such as its hook)."""
        with self.write() as db:
            row = db.execute("SELECT metas FROM runs WHERE run_id = ?", (run_id,)).fetchone()
            if row is None:
                return
            stored = json.loads(row[0]) + [{"name": n, "value": v} for n, v in metas]
            db.execute("UPDATE runs SET metas = ? WHERE run_id = ?", (json.dumps(stored), run_id))

    def job_counts(self, job: str) -> dict[str, int]:
        """The job's runs in the history by result: success, failure, timeout, skipped."""
        rows = self._read(
            "SELECT CASE WHEN skipped IS NOT NULL THEN 'skipped' WHEN timed_out THEN 'timeout'"
            " WHEN exit_code = 0 THEN 'success' ELSE 'failure' END AS result, count(*) AS n"
            " FROM runs WHERE job = ? GROUP BY result",
            (job,),
        )
        return {row["result"]: row["n"] for row in rows}

    def last_run(self, job: str, *, success: bool = False) -> RunRecord | None:
        """The job's newest run that started (``success``: that exited 0)."""
        where = " AND exit_code = 0" if success else ""
        rows = self._read(
            f"SELECT * FROM runs WHERE job = ? AND skipped IS NULL{where}"
            " ORDER BY started_at DESC, rowid DESC LIMIT 1",
            (job,),
        )
        return _record(rows[0]) if rows else None

    # The spool ---------------------------------------------------------------------------
    # A report is delivered by whoever holds its claim.  A claim is a lease: if its holder dies
    # mid-delivery, the lease runs out and a later run or flush takes the report over (it may
    # then be delivered twice, which the run_id meta makes recognisable).  Two live processes
    # never hold the same report, so two flushes never send a report twice.

    def claim_reports(
        self,
        owner: str,
        lease_s: float,
        *,
        monitor: str | None = None,
        statuses: tuple[str, ...] = ("pending",),
        limit: int = 100,
    ) -> list[RunRecord]:
        """Claim up to ``limit`` unclaimed reports, oldest first, and return them."""
        now = time.time()
        marks = ", ".join("?" for _ in statuses)
        where = f"report_status IN ({marks}) AND coalesce(report_claimed_until, 0) < ?"
        args: list = [*statuses, now]
        if monitor is not None:
            where += " AND monitor = ?"
            args.append(monitor)
        with self.write() as db:
            db.execute(
                "UPDATE runs SET report_claim = ?, report_claimed_until = ? WHERE run_id IN ("
                f" SELECT run_id FROM runs WHERE {where} ORDER BY started_at LIMIT ?)",
                (owner, now + lease_s, *args, limit),
            )
        return [
            _record(row)
            for row in self._read(
                "SELECT * FROM runs WHERE report_claim = ? AND report_status IN "
                f"({marks}) ORDER BY started_at",
                (owner, *statuses),
            )
        ]

    def settle_report(
        self, run_id: str, owner: str, status: str, error: str | None = None
    ) -> None:
        """Record a delivery attempt's outcome and release the claim."""
        sent_at = datetime.now(UTC).isoformat(timespec="seconds") if status == "sent" else None
        with self.write() as db:
            db.execute(
                "UPDATE runs SET report_status = ?, report_error = ?, report_sent_at = ?,"
                " report_attempts = report_attempts + 1, report_claim = NULL,"
                " report_claimed_until = NULL WHERE run_id = ? AND report_claim = ?",
                (status, error, sent_at, run_id, owner),
            )

    def release_claims(self, owner: str) -> None:
        with self.write() as db:
            db.execute(
                "UPDATE runs SET report_claim = NULL, report_claimed_until = NULL"
                " WHERE report_claim = ?",
                (owner,),
            )

    def report_backlog(self) -> dict[tuple[str, str], int]:
        """(monitor, status) → count, for pending and refused reports."""
        rows = self._read(
            "SELECT monitor, report_status, count(*) AS n FROM runs"
            " WHERE report_status IN ('pending', 'refused') GROUP BY monitor, report_status"
        )
        return {(row["monitor"], row["report_status"]): row["n"] for row in rows}

    def latest_by_monitor(self) -> dict[str, RunRecord]:
        rows = self._read(
            "SELECT * FROM runs WHERE rowid IN (SELECT max(rowid) FROM runs"
            " WHERE monitor IS NOT NULL GROUP BY monitor)"
        )
        return {row["monitor"]: _record(row) for row in rows}

    def durations(self, monitor: str, limit: int = 200) -> list[int]:
        """Recent durations (ms) of a monitor's runs that ran to completion."""
        rows = self._read(
            "SELECT duration_ms FROM runs WHERE monitor = ? AND skipped IS NULL"
            " ORDER BY started_at DESC LIMIT ?",
            (monitor, limit),
        )
        return [row["duration_ms"] for row in rows]

    def recent(self, *, monitor: str | None = None, limit: int = 20) -> list[RunRecord]:
        """Newest first."""
        where, args = ("WHERE monitor = ?", [monitor]) if monitor else ("", [])
        sql = f"SELECT * FROM runs {where} ORDER BY started_at DESC, rowid DESC LIMIT ?"
        return [_record(row) for row in self._read(sql, (*args, limit))]

    def get(self, run_id_prefix: str | None = None) -> RunRecord | None:
        """The run whose id starts with the prefix (None: the newest run)."""
        if not run_id_prefix:
            rows = self._read("SELECT * FROM runs ORDER BY started_at DESC, rowid DESC LIMIT 1")
        else:
            escaped = run_id_prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            rows = self._read(
                "SELECT * FROM runs WHERE run_id LIKE ? ESCAPE '\\' LIMIT 2", (escaped + "%",)
            )
            if len(rows) > 1:
                raise StateError(f"run id {run_id_prefix!r} is ambiguous: give more characters")
        return _record(rows[0]) if rows else None

    def _read(self, sql: str, args: tuple = ()) -> list[sqlite3.Row]:
        try:
            return self.conn.execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            raise StateError(f"cannot read the history {self.path}: {exc}") from None


def _drop_old_output(db: sqlite3.Connection, job: str) -> None:
    db.execute(
        "UPDATE runs SET output_head = NULL, output_tail = NULL WHERE rowid IN ("
        " SELECT rowid FROM runs WHERE job = ? AND output_head IS NOT NULL"
        " ORDER BY started_at DESC LIMIT -1 OFFSET ?)",
        (job, KEEP_OUTPUT_RUNS),
    )


def _record(row: sqlite3.Row) -> RunRecord:
    data = {k: row[k] for k in _COLUMNS}
    data["metas"] = tuple((m["name"], m["value"]) for m in json.loads(row["metas"]))
    data["timed_out"] = bool(row["timed_out"])
    return RunRecord(**data)


def open_history(state_dir: Path) -> History:
    """Open (creating if needed) the history in ``state_dir``; StateError if that fails."""
    path = state_dir / DB_NAME
    try:
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        conn = sqlitedb.connect(path, BUSY_TIMEOUT_MS)
    except (OSError, sqlite3.Error) as exc:
        raise StateError(f"cannot open the history in {state_dir}: {_reason(exc)}") from None
    try:
        conn.row_factory = sqlite3.Row
        sqlitedb.prepare(conn, path, _SCHEMA, SCHEMA_VERSION, BUSY_TIMEOUT_MS / 1000)
    except (OSError, sqlite3.Error) as exc:
        conn.close()
        raise StateError(f"cannot use the history {path}: {_reason(exc)}") from None
    except BaseException:  # StateError (a newer schema, the set-up lock) or an interrupt
        conn.close()
        raise
    return History(conn, path)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return str(exc)
