"""Reporting runs to Idlemon: the policy, the request, and delivery that never loses a report.

Order of events for a run that reports: the run is stored as ``pending`` (claimed by this
process) *before* anything is sent, so a crash or an outage cannot lose it; then it is sent
within the report budget; then, and only when it was delivered, older pending reports of the
same monitor are delivered too.  Idlemon treats any log as activity *now*, so a run that sends
nothing (a failure under the default policy) must never deliver a backlog: that would hide the
failure.  ``jobwrap flush`` delivers the rest.

Monitoring never changes the job's outcome: nothing here raises for an HTTP problem; the
outcome is a status stored in the history and at most one line on stderr.

This module is what every run needs (the policy, :func:`plan_report`, and the body);
:mod:`jobwrap.idlemon.delivery`, the sending (a run with its backlog: ``deliver_run``), is
imported only by a run that reports and by ``flush``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
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


def may_report(report: ReportSettings, monitor: str | None) -> bool:
    """Whether a run of ``monitor`` may send a report at all (so the HTTP stack is worth
    warming up while the job runs)."""
    return bool(monitor and report.token and report.policy != "never" and not report.dry_run)


@dataclass(frozen=True)
class RunReport:
    """What a run's report does: the record as stored, whether it is sent now, what to say."""

    record: RunRecord  # with the report status and error the history keeps
    send: bool  # stored claimed by this process and delivered now, with its backlog
    say: str | None = None  # one line (or a dry run's request) for stderr


def plan_report(report: ReportSettings, monitor: str | None, record: RunRecord,
                problem: str | None = None) -> RunReport:
    """What a run sends and when.  ``problem``: why reports cannot be sent (token, URL).

    A run that sends nothing keeps why as its ``report_error`` (a key of :data:`NOT_SENT`);
    one that cannot be sent now for a reason of configuration is kept ``pending`` with the
    reason, so ``jobwrap flush`` sends it once the configuration is fixed.
    """
    reason = not_sent_reason(report.policy, monitor, record)
    if report.dry_run:  # recorded like any run; says what it would send, or why nothing
        if reason is None:
            say = "dry run: would send\n" + describe_request(report, monitor, record)
        else:
            say = f"dry run: nothing would be sent: {NOT_SENT[reason]}"
        return RunReport(replace(record, report_error=reason or "dry run"), False, say)
    if reason is not None:  # history/show/status say why
        return RunReport(replace(record, report_error=reason), False)
    if problem:  # where to report is broken, not the run
        kept = replace(record, report_status=ReportStatus.PENDING, report_error=problem)
        return RunReport(kept, False, f"warning: cannot report to Idlemon: {problem}; the "
                                      "report is kept for `jobwrap flush`")
    if not report.token:
        return RunReport(replace(record, report_error="no token"), False, (
            f"warning: no Idlemon token (JOBWRAP_IDLEMON_TOKEN or the config file): "
            f"the run of {monitor!r} is recorded locally only "
            "(JOBWRAP_REPORT=never silences this)"
        ))
    return RunReport(replace(record, report_status=ReportStatus.PENDING), True)


def describe_request(report: ReportSettings, monitor: str | None, record: RunRecord) -> str:
    """The request a run's report is (token masked), as ``--dry-run`` shows it."""
    from jobwrap.idlemon.client import IdlemonClient

    duration_s, metas = log_body(record)
    client = IdlemonClient(report.base_url, report.token or "<token>")
    return client.log_request(monitor or "", duration_s, metas).describe(masked=True)


def why_not_sent(record: RunRecord) -> str | None:
    """The sentence for a run that sent nothing and says why (None: it did, or older run)."""
    if record.report_status != ReportStatus.NONE or not record.report_error:
        return None
    return NOT_SENT.get(record.report_error, record.report_error)
