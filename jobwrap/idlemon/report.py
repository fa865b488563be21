"""Reporting runs to Idlemon: the policy, the request, and delivery that never loses a report.

Order of events for a run that reports: the run is stored as ``pending`` (claimed by this
process) *before* anything is sent, so a crash or an outage cannot lose it; then it is sent
within the report budget; then, and only when it was delivered, older pending reports of the
same monitor are delivered too.  Idlemon treats any log as activity *now*, so a run that sends
nothing (a failure under the default policy) must never deliver a backlog: that would hide the
failure.  ``jobwrap flush`` delivers the rest.

Monitoring never changes the job's outcome: nothing here raises for an HTTP problem; the
outcome is a status stored in the history and at most one line on stderr.

This module is what every run needs (the policy and the body); :mod:`jobwrap.idlemon.delivery`, the
sending, is imported only by a run that reports and by ``flush``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from jobwrap.store.history import RunRecord
from jobwrap.store.record import ReportStatus

LEASE_MARGIN_S = 30.0  # a claim outlives the budget by this much before others may take it
BACKLOG_PER_RUN = 20  # bounded work per run: the oldest pending reports of its monitor
LATE_AFTER_S = 60.0  # a report delivered later than this after the run ends says so


@dataclass(frozen=True)
class ReportSettings:
    """How (and whether) to report.  ``token`` None means reports cannot be sent."""

    policy: str = "success"  # success | always | never
    base_url: str = "https://www.idlemon.net/api"
    token: str | None = None
    budget_s: float = 30.0
    dry_run: bool = False


def wants_report(policy: str, record: RunRecord) -> bool:
    """success: only runs that exited 0; always: every run that started; never: none."""
    if record.skipped or policy == "never":
        return False
    return policy == "always" or record.exit_code == 0


def ended_at(record: RunRecord) -> datetime:
    return datetime.fromisoformat(record.started_at) + timedelta(milliseconds=record.duration_ms)


def log_body(record: RunRecord, now: datetime | None = None) -> tuple[int, list[tuple[str, str]]]:
    """Duration in whole seconds and the metas; a late report adds ``ran_at``/``delayed_s``."""
    duration_s = max(0, int(record.duration_ms / 1000 + 0.5))
    metas = list(record.metas)
    now = now or datetime.now(UTC)
    delay = (now - ended_at(record)).total_seconds()
    if delay > LATE_AFTER_S:
        metas += [("ran_at", record.started_at), ("delayed_s", str(int(delay)))]
    return duration_s, metas


# Why a run sent nothing, kept as its ``report_error`` while its ``report_status`` is "none":
# a short word for the history's REPORT column, and the sentence ``show``/``status`` say.
NOT_SENT = {
    "failed": "the run failed, and report=success sends nothing on failure",
    "skipped": "the run was skipped (skipped runs are never reported)",
    "report=never": "report=never",
    "no monitor": "no monitor (--monitor SLUG)",
    "no token": "no Idlemon token",
    "dry run": "--dry-run sends nothing",
}


def not_sent_reason(policy: str, monitor: str | None, record: RunRecord) -> str | None:
    """Why this run sends no report (a key of :data:`NOT_SENT`), None when it sends one."""
    if not monitor:
        return "no monitor"
    if record.skipped:
        return "skipped"
    if policy == "never":
        return "report=never"
    if not wants_report(policy, record):
        return "failed"
    return None


def why_not_sent(record: RunRecord) -> str | None:
    """The sentence for a run that sent nothing and says why (None: it did, or older run)."""
    if record.report_status != ReportStatus.NONE or not record.report_error:
        return None
    return NOT_SENT.get(record.report_error, record.report_error)
