"""The history's reports: claims, leases, settling, discarding and the backlog.

The runs table is the durable spool of reports (``report_status``): a report that could not be
delivered stays ``pending`` until a later run or ``jobwrap flush`` delivers it, ``refused``
until someone discards it.  :class:`Reports` is the part of :class:`~jobwrap.store.history.History`
that hands them out and records what became of them.

A report is delivered by whoever holds its claim.  A claim is a lease: if its holder dies
mid-delivery, the lease runs out and a later run or flush takes the report over (it may then be
delivered twice, which the run_id meta makes recognisable).  Two live processes never hold the
same report, so two flushes never send a report twice.
"""

from __future__ import annotations

import time
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jobwrap.errors import StateError
from jobwrap.store.record import UNDELIVERED, ReportStatus, RunRecord


def sql_list(statuses: tuple[ReportStatus, ...]) -> str:
    """Statuses as SQL literals.  Written into the query's text, not bound: only then can
    SQLite use the partial index on undelivered reports (``runs_by_report``)."""
    return ", ".join(f"'{status}'" for status in statuses)


UNDELIVERED_SQL = sql_list(UNDELIVERED)  # 'pending', 'refused'


class Reports:
    """Report methods of the history (a mixin: :class:`History` supplies the connection)."""

    if TYPE_CHECKING:  # what History provides
        path: Path
        read_only: bool
        claim_cursor: tuple[str, str] | None

        def write(self) -> AbstractContextManager[Any]: ...
        def get(self, run_id_prefix: str | None = None,
                monitor: str | None = None) -> RunRecord | None: ...
        def _read(self, sql: str, args: tuple = ()) -> list[Any]: ...
        def _parse(self, rows: list[Any]) -> list[RunRecord]: ...

    def claim_reports(
        self,
        owner: str,
        lease_s: float,
        *,
        monitor: str | None = None,
        statuses: tuple[ReportStatus, ...] = (ReportStatus.PENDING,),
        limit: int = 100,
        after: tuple[str, str] | None = None,
    ) -> list[RunRecord]:
        """Claim up to ``limit`` unclaimed reports, oldest first, and return them.

        ``after``: only reports after this (started_at, run_id), the previous batch's
        :attr:`claim_cursor`, which this call moves past every row it claimed.
        """
        now = time.time()
        marks = ", ".join("?" for _ in statuses)
        where = f"report_status IN ({marks}) AND coalesce(report_claimed_until, 0) < ?"
        args: list = [*statuses, now]
        if monitor is not None:
            where += " AND monitor = ?"
            args.append(monitor)
        if after is not None:
            where += " AND (started_at, run_id) > (?, ?)"
            args += list(after)
        if self.read_only:  # nothing can be claimed: fine when there is nothing to claim
            if self._read(f"SELECT 1 FROM runs WHERE {where} LIMIT 1", tuple(args)):
                raise StateError(f"the history {self.path} is read-only: its pending "
                                 "reports cannot be delivered from here")
            return []
        with self.write() as db:
            db.execute(
                "UPDATE runs SET report_claim = ?, report_claimed_until = ? WHERE run_id IN ("
                f" SELECT run_id FROM runs WHERE {where} ORDER BY started_at, run_id LIMIT ?)",
                (owner, now + lease_s, *args, limit),
            )
        rows = self._read(
            "SELECT * FROM runs WHERE report_claim = ? AND report_status IN "
            f"({marks}) ORDER BY started_at, run_id",
            (owner, *statuses),
        )
        if rows:
            self.claim_cursor = (rows[-1]["started_at"], rows[-1]["run_id"])
        return self._parse(rows)

    def settle_report(
        self, run_id: str, owner: str, status: ReportStatus, error: str | None = None
    ) -> None:
        """Record a delivery attempt's outcome and release the claim."""
        sent = status == ReportStatus.SENT
        sent_at = datetime.now(UTC).isoformat(timespec="seconds") if sent else None
        with self.write() as db:
            db.execute(
                "UPDATE runs SET report_status = ?, report_error = ?, report_sent_at = ?,"
                " report_attempts = report_attempts + 1, report_claim = NULL,"
                " report_claimed_until = NULL WHERE run_id = ? AND report_claim = ?",
                (status, error, sent_at, run_id, owner),
            )

    def release_claims(self, owner: str) -> None:
        if self.read_only:
            return  # nothing was claimed
        with self.write() as db:
            db.execute(
                "UPDATE runs SET report_claim = NULL, report_claimed_until = NULL"
                " WHERE report_claim = ?",
                (owner,),
            )

    def discard_reports(self, *, run_id_prefix: str | None = None,
                        monitor: str | None = None) -> list[str]:
        """Give up on reports: one run's (pending or refused, by id prefix), else every
        refused one (of ``monitor``).  They become ``discarded``; the runs stay.  Returns the
        run ids discarded; a report another process is sending now is left alone."""
        args: list[object]
        if run_id_prefix is not None:
            rec = self.get(run_id_prefix)
            if rec is None:
                raise StateError(f"no run {run_id_prefix!r} in the history")
            where = f"run_id = ? AND report_status IN ({UNDELIVERED_SQL})"
            args = [rec.run_id]
        else:
            where, args = f"report_status = '{ReportStatus.REFUSED}'", []
            if monitor is not None:
                where += " AND monitor = ?"
                args.append(monitor)
        where += " AND coalesce(report_claimed_until, 0) < ?"
        args.append(time.time())
        with self.write() as db:
            ids = [row[0] for row in db.execute(f"SELECT run_id FROM runs WHERE {where}", args)]
            db.executemany("UPDATE runs SET report_status = ? WHERE run_id = ?",
                           [(ReportStatus.DISCARDED, i) for i in ids])
        return ids

    def report_backlog(self) -> dict[tuple[str, str], int]:
        """(monitor, status) → count, for pending and refused reports."""
        rows = self._read(
            "SELECT monitor, report_status, count(*) AS n FROM runs"
            f" WHERE report_status IN ({UNDELIVERED_SQL}) GROUP BY monitor, report_status"
        )
        return {(row["monitor"], row["report_status"]): row["n"] for row in rows}
