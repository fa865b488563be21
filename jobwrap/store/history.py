"""The local history: one SQLite database in the state directory, safe under concurrency.

Many cron jobs start in the same second, so every connection uses WAL, a long busy timeout and
short immediate transactions (:func:`jobwrap.store.sqlite.immediate`).  The schema is a list
of migration steps (``STEPS``); ``PRAGMA user_version`` says how many a file has had.

A run is written twice: :meth:`History.begin` inserts it as ``running`` (with jobwrap's pid
and the boot id) before the command starts, and :meth:`History.add` writes its outcome.  A row
still ``running`` whose jobwrap is gone (pid dead, or the machine rebooted since) is read as
``abandoned``: jobwrap was killed, crashed or lost power while its command ran.

The same table is the durable spool of reports: a run whose report could not be delivered is
``report_status = 'pending'`` until a later run or ``jobwrap flush`` delivers it.  When the
history itself cannot be written in time, the run waits in a spool file instead
(:mod:`jobwrap.store.spool`) until the next writer moves it in.  Claiming, settling and
discarding reports is :mod:`jobwrap.store.reports`.

A malformed row (a hand edit, a disk error) is skipped, never fatal: readers name it in
:attr:`History.bad_rows`.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from jobwrap.errors import StateError, UsageError
from jobwrap.store import spool
from jobwrap.store import sqlite as sqlitedb
from jobwrap.store.files import private_dir
from jobwrap.store.liveness import Here, boot_id
from jobwrap.store.record import (  # noqa: F401  (RunRecord: also imported from here)
    STORED,
    Malformed,
    RunRecord,
    from_row,
    row_values,
    storable,
)
from jobwrap.store.reports import UNDELIVERED_SQL, Reports
from jobwrap.store.schema import ABANDONED, FINISHED, RUNNING, SCHEMA_VERSION, STEPS

DB_NAME = "history.sqlite3"
BUSY_TIMEOUT_MS = 30_000
KEEP_OUTPUT_RUNS = 20  # per job: older runs keep their record but drop their captured output
KEEP_DAYS = 90  # delivered or unreported runs older than this are pruned



class History(Reports):
    """The run store.  Open it with :func:`open_history`; close it (or use ``with``) when done."""

    def __init__(self, conn: sqlite3.Connection, path: Path, read_only: bool = False) -> None:
        self.conn = conn
        self.path = path
        self.read_only = read_only  # opened read-only (read-only or full filesystem)
        self.bad_rows: list[tuple[str, str]] = []  # (run id, what is wrong) of skipped rows
        self._here: Here | None = None
        self.claim_cursor: tuple[str, str] | None = None  # see claim_reports
        self._state_column: bool | None = None  # False: a schema-1 file opened read-only

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> History:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def set_busy_timeout(self, ms: int) -> None:
        """How long each statement waits for other writers from now on."""
        self.conn.execute(f"PRAGMA busy_timeout = {int(ms)}")

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """A short immediate transaction: waits for other writers instead of failing."""
        try:
            with sqlitedb.immediate(self.conn) as db:
                yield db
        except sqlite3.Error as exc:
            raise StateError(f"cannot write the history {self.path}: {exc}") from None

    def begin(self, rec: RunRecord) -> None:
        """Insert a run as ``running`` before its command starts: one short transaction."""
        values = row_values(rec)
        values.update(state=RUNNING, pid=os.getpid(), boot_id=boot_id())
        with self.write() as db:
            db.execute(f"INSERT INTO runs ({', '.join(values)}) VALUES "
                       f"({', '.join(':' + c for c in values)})", values)

    def add(self, rec: RunRecord, claim: str | None = None, lease_s: float = 0.0) -> None:
        """Insert a run, or write the outcome of one :meth:`begin` inserted.

        ``claim``: the inserting process will deliver its report itself.
        """
        values = row_values(rec)
        values.update(state=FINISHED, pid=None)
        values["report_claim"] = claim
        values["report_claimed_until"] = time.time() + lease_s if claim else None
        with self.write() as db:
            _upsert(db, values)
            _drop_old_output(db, rec.job)
            db.execute(
                "DELETE FROM runs WHERE started_at < datetime('now', ?) "
                f"AND report_status NOT IN ({UNDELIVERED_SQL})",
                (f"-{KEEP_DAYS} days",),
            )

    def take_spool(self, state_dir: Path) -> int:
        """Move the runs spooled while the history could not be written into it."""
        moved = 0
        for path, found in spool.waiting(state_dir, self.bad_rows):
            values = {k: v for k, v in found.items() if k in STORED}
            try:
                with self.write() as db:
                    _upsert(db, values)
            except StateError:
                break  # still locked or read-only: the next writer tries again
            spool.remove(path)
            moved += 1
        return moved

    def add_metas(self, run_id: str, metas: list[tuple[str, str]]) -> None:
        """Append metas to a stored run (what happened after it, such as its hook)."""
        with self.write() as db:
            row = db.execute("SELECT metas FROM runs WHERE run_id = ?", (run_id,)).fetchone()
            if row is None:
                return
            try:
                old = json.loads(row[0])
            except ValueError:
                old = []  # a malformed row: keep what can be said now
            stored = (old if isinstance(old, list) else []) + [
                {"name": n, "value": v} for n, v in metas]
            db.execute("UPDATE runs SET metas = ? WHERE run_id = ?", (json.dumps(stored), run_id))

    def job_counts(self, job: str) -> dict[str, int]:
        """The job's runs in the history by result: success, failure, timeout, skipped."""
        rows = self._read(
            "SELECT CASE WHEN skipped IS NOT NULL THEN 'skipped' WHEN timed_out THEN 'timeout'"
            " WHEN exit_code = 0 THEN 'success' ELSE 'failure' END AS result, count(*) AS n"
            f" FROM runs WHERE job = ?{self._done} GROUP BY result",
            (job,),
        )
        return {row["result"]: row["n"] for row in rows}

    def last_run(self, job: str, *, success: bool = False) -> RunRecord | None:
        """The job's newest run that started (``success``: that exited 0)."""
        where = " AND exit_code = 0" if success else ""
        rows = self._read(
            f"SELECT * FROM runs WHERE job = ? AND skipped IS NULL{where}{self._done}"
            " ORDER BY started_at DESC, rowid DESC LIMIT 1",
            (job,),
        )
        records = self._parse(rows)
        return records[0] if records else None

    def latest_by_monitor(self) -> dict[str, RunRecord]:
        records = self._records(
            "SELECT * FROM runs WHERE rowid IN (SELECT max(rowid) FROM runs"
            " WHERE monitor IS NOT NULL GROUP BY monitor)"
        )
        return {rec.monitor: rec for rec in records if rec.monitor is not None}

    def outcomes(self, monitor: str, limit: int = 200) -> list[tuple[str, int, bool]]:
        """(run id, duration ms, succeeded) of a monitor's recent runs that ran to completion
        (not skipped), newest first: for its usual duration and its sparkline."""
        rows = self._read(
            "SELECT run_id, duration_ms, exit_code, timed_out FROM runs WHERE monitor = ?"
            f" AND skipped IS NULL{self._done} ORDER BY started_at DESC, rowid DESC LIMIT ?",
            (monitor, limit),
        )
        return [(str(row["run_id"]), row["duration_ms"], row["exit_code"] == 0
                 and not row["timed_out"])
                for row in rows if isinstance(row["duration_ms"], int)]

    def recent(self, *, monitor: str | None = None, limit: int = 20, failed: bool = False,
               since: datetime | None = None) -> list[RunRecord]:
        """Newest first.  ``failed``: only runs that failed (a non-zero exit, a timeout, a
        signal) or were abandoned; ``since``: only runs started at or after it."""
        conds, args = [], []
        if monitor:
            conds.append("monitor = ?")
            args.append(monitor)
        if since is not None:
            conds.append("started_at >= ?")  # stored as UTC ISO 8601: compares as text
            args.append(since.astimezone(UTC).isoformat(timespec="milliseconds"))
        if failed:
            # A row still 'running' may be abandoned: read, then filtered below.
            conds.append("skipped IS NULL AND (exit_code != 0" +
                         (" OR state = 'running')" if self._has_state else ")"))
        where = f"WHERE {' AND '.join(conds)}" if conds else ""
        sql = f"SELECT * FROM runs {where} ORDER BY started_at DESC, rowid DESC LIMIT ?"
        records = self._records(sql, (*args, limit if not failed else limit * 4 + 100))
        if failed:
            records = [r for r in records if r.state != RUNNING]
        return records[:limit]

    def abandoned(self, since_days: float = 7) -> list[RunRecord]:
        """Recent runs whose jobwrap was killed or lost while their command ran."""
        records = self._records(
            "SELECT * FROM runs WHERE state = 'running' AND started_at >= datetime('now', ?)"
            " ORDER BY started_at", (f"-{since_days:g} days",)
        ) if self._has_state else []
        return [rec for rec in records if rec.state == ABANDONED]

    def get(self, run_id_prefix: str | None = None,
            monitor: str | None = None) -> RunRecord | None:
        """The run whose id starts with the prefix (None: the newest run, of ``monitor``)."""
        if not run_id_prefix and monitor:
            rows = self._read("SELECT * FROM runs WHERE monitor = ?"
                              " ORDER BY started_at DESC, rowid DESC LIMIT 1", (monitor,))
        elif not run_id_prefix:
            rows = self._read("SELECT * FROM runs ORDER BY started_at DESC, rowid DESC LIMIT 1")
        else:
            escaped = run_id_prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            rows = self._read(
                "SELECT * FROM runs WHERE run_id LIKE ? ESCAPE '\\' LIMIT 2", (escaped + "%",)
            )
            if len(rows) > 1:
                raise StateError(f"run id {run_id_prefix!r} is ambiguous: give more characters")
        records = self._parse(rows)
        if rows and not records:
            raise StateError(f"run {rows[0]['run_id']} is malformed in the history: "
                             f"{self.bad_rows[-1][1]}")
        return records[0] if records else None

    @property
    def _done(self) -> str:
        """A filter for runs that have ended ('' on a file of schema 1, read-only)."""
        return " AND state = 'finished'" if self._has_state else ""

    @property
    def _has_state(self) -> bool:
        if self._state_column is None:
            names = {row[1] for row in self._read("PRAGMA table_info(runs)")}
            self._state_column = "state" in names
        return self._state_column

    def _records(self, sql: str, args: tuple = ()) -> list[RunRecord]:
        return self._parse(self._read(sql, args))

    def _parse(self, rows: list[sqlite3.Row]) -> list[RunRecord]:
        """The rows as records; a malformed one is skipped and named in ``bad_rows``."""
        if self._here is None:
            self._here = Here()
        records = []
        for row in rows:
            try:
                records.append(from_row(row, self._here))
            except Malformed as exc:
                entry = (str(row["run_id"]), str(exc))
                if entry not in self.bad_rows:
                    self.bad_rows.append(entry)
        return records

    def _read(self, sql: str, args: tuple = ()) -> list[sqlite3.Row]:
        try:
            return self.conn.execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            raise StateError(f"cannot read the history {self.path}: {exc}") from None
        except UnicodeEncodeError:  # a run id or slug from argv holding non-UTF-8 bytes
            raise UsageError("the run id or monitor to look up is not UTF-8 text: no run "
                             "can match it") from None


def _drop_old_output(db: sqlite3.Connection, job: str) -> None:
    db.execute(
        "UPDATE runs SET output_head = NULL, output_tail = NULL WHERE rowid IN ("
        " SELECT rowid FROM runs WHERE job = ? AND output_head IS NOT NULL"
        " ORDER BY started_at DESC LIMIT -1 OFFSET ?)",
        (job, KEEP_OUTPUT_RUNS),
    )


def spool_run(state_dir: Path, rec: RunRecord) -> Path:
    """Keep a run that the history could not take now for the next writer (OSError)."""
    values = row_values(rec)
    values.update(state=FINISHED, pid=None)
    return spool.write(state_dir, rec.run_id, values)


def _upsert(db: sqlite3.Connection, values: dict) -> None:
    cols = ", ".join(values)
    marks = ", ".join(f":{c}" for c in values)
    updates = ", ".join(f"{c} = excluded.{c}" for c in values if c != "run_id")
    db.execute(f"INSERT INTO runs ({cols}) VALUES ({marks}) "
               f"ON CONFLICT (run_id) DO UPDATE SET {updates}", values)


def open_history(state_dir: Path, *, busy_timeout_ms: int = BUSY_TIMEOUT_MS,
                 take_spool: bool = True) -> History:
    """Open (creating or migrating if needed) the history in ``state_dir``; StateError if not.

    Where it cannot be written (a read-only or full filesystem) an existing history is opened
    read-only: reading works, writing raises StateError.  ``take_spool``: also move in runs
    that waited in the spool.  ``busy_timeout_ms`` bounds each wait for other writers.
    """
    path = state_dir / DB_NAME
    try:
        private_dir(state_dir)
        conn = sqlitedb.connect(path, busy_timeout_ms)
    except (OSError, sqlite3.Error) as exc:
        return _open_read_only(path, exc, busy_timeout_ms)
    try:
        conn.row_factory = sqlite3.Row
        sqlitedb.prepare(conn, path, STEPS, busy_timeout_ms / 1000)
    except (OSError, sqlite3.Error) as exc:
        conn.close()
        return _open_read_only(path, exc, busy_timeout_ms)
    except BaseException:  # StateError (a newer schema, the set-up lock) or an interrupt
        conn.close()
        raise
    history = History(conn, path)
    if take_spool and spool.has_waiting(state_dir):
        history.take_spool(state_dir)
    return history


def _open_read_only(path: Path, cause: BaseException, busy_timeout_ms: int) -> History:
    """The history read-only, or StateError naming why it could not be opened at all."""
    if not sqlitedb.unwritable(cause) or not path.is_file():
        raise StateError(f"cannot open the history in {path.parent}: {sqlitedb.reason(cause)}")
    try:
        conn = sqlitedb.connect_read_only(path, busy_timeout_ms)
    except sqlite3.Error:
        raise StateError(f"cannot use the history {path}: {sqlitedb.reason(cause)}") from None
    conn.row_factory = sqlite3.Row
    found = conn.execute("PRAGMA user_version").fetchone()[0]
    if found > SCHEMA_VERSION:
        conn.close()
        raise StateError(f"{path} was written by a newer jobwrap (schema {found})")
    return History(conn, path, read_only=True)

