"""After the child: store the run, hand its report over to Idlemon's delivery, write the summary.

Everything here is contained: a broken state directory, an unwritable summary file or a
failing API produces one warning line on stderr and never changes the run's exit status.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from jobwrap.errors import JobwrapError
from jobwrap.idlemon.report import BACKLOG_PER_RUN, LEASE_MARGIN_S, NOT_SENT, not_sent_reason
from jobwrap.run.options import RunSettings, Warn
from jobwrap.run.record import write_summary
from jobwrap.run.signals import Sending, SignalGuard
from jobwrap.store.history import History, RunRecord, open_history

# How long a run waits for a history another process holds write-locked after the command;
# past it the run waits in the spool for the next writer.
END_WAIT_MS = 3_000


def finish_run(settings: RunSettings, record: RunRecord, warn: Warn,
               guard: SignalGuard | None = None, history: History | None = None) -> RunRecord:
    """Everything after the child: contained, so the run's exit status always stands.

    ``history``: the one the run's start was written to (closed here).
    """
    try:
        record = _store_and_report(settings, record, warn, guard, history)
    except Exception as exc:  # a bug here must not cost the job its exit status
        warn(f"warning: internal error after the run ({type(exc).__name__}); "
             "its exit status is unaffected")
    if settings.summary_json is not None:
        write_summary(settings.summary_json, record, warn)
    return record


def _store_and_report(settings: RunSettings, record: RunRecord, warn: Warn,
                      guard: SignalGuard | None, opened: History | None) -> RunRecord:
    report = settings.report
    reason = not_sent_reason(report.policy, settings.monitor, record)
    to_send = reason is None
    if report.dry_run:  # recorded like any run; says what it would send, or why nothing
        if reason is None:
            warn("dry run: would send\n" + _describe_request(settings, record))
        else:
            warn(f"dry run: nothing would be sent: {NOT_SENT[reason]}")
        record = replace(record, report_error=reason or "dry run")
        _store(settings.state_dir, record, warn, opened, claim=False, lease=report.budget_s)
        return record
    if reason is not None:
        record = replace(record, report_error=reason)  # history/show/status say why
    if to_send and settings.report_problem:
        # Where to report is broken, not the run: keep the report with the reason, so
        # `jobwrap flush` sends it once the configuration is fixed.
        warn(f"warning: cannot report to Idlemon: {settings.report_problem}; the report is "
             "kept for `jobwrap flush`")
        record = replace(record, report_status="pending", report_error=settings.report_problem)
        _store(settings.state_dir, record, warn, opened, claim=False, lease=report.budget_s)
        return record
    if to_send and not report.token:
        warn(
            f"warning: no Idlemon token (JOBWRAP_IDLEMON_TOKEN or the config file): "
            f"the run of {settings.monitor!r} is recorded locally only "
            "(JOBWRAP_REPORT=never silences this)"
        )
        to_send = False
        record = replace(record, report_error="no token")
    if to_send:
        record = replace(record, report_status="pending")
    history = _store(settings.state_dir, record, warn, opened, claim=to_send,
                     lease=report.budget_s)
    if not to_send:
        return record
    try:
        if guard is not None and guard.stopping:
            warn("warning: stopped by a signal: the report is kept for `jobwrap flush`")
            return record
        record = _deliver(settings, record, history, warn, guard)
        if history is None:
            _spool(settings.state_dir, record, warn, quiet=True)  # the delivery's outcome
        return record
    finally:
        if history is not None:
            try:
                history.release_claims(record.run_id)  # whatever happened, others may send it
            finally:
                history.close()


def _store(state_dir: Path, record: RunRecord, warn: Warn, opened: History | None, *,
           claim: bool, lease: float) -> History | None:
    """Store the run (claimed for delivery by this process); None if the store is unusable.

    The wait for a locked history is bounded (``END_WAIT_MS``): past it the run goes to the
    spool, which the next writer moves into the history.
    """
    history = opened
    try:
        if history is not None:
            history.set_busy_timeout(END_WAIT_MS)
        else:
            history = open_history(state_dir, busy_timeout_ms=END_WAIT_MS)
        history.add(record, claim=record.run_id if claim else None,
                    lease_s=lease + LEASE_MARGIN_S)
        if opened is not None:
            history.take_spool(state_dir)  # runs that waited for a locked history
    except JobwrapError as exc:
        if history is not None:
            history.close()
        _spool(state_dir, record, warn, problem=str(exc))
        return None
    if not claim:
        history.close()
        return None
    return history


def _spool(state_dir: Path, record: RunRecord, warn: Warn, problem: str = "",
           quiet: bool = False) -> None:
    from jobwrap.store.history import spool_run

    try:
        path = spool_run(state_dir, record)
    except OSError as exc:
        warn(f"warning: {problem or 'cannot write the history'}; this run is not recorded "
             f"(cannot spool it either: {exc.strerror}; its exit status is unaffected)")
        return
    if not quiet:
        warn(f"warning: {problem}; the run waits in {path} for the next jobwrap")


def _deliver(settings: RunSettings, record: RunRecord, history: History | None,
             warn: Warn, guard: SignalGuard | None) -> RunRecord:
    from jobwrap.idlemon.client import IdlemonClient
    from jobwrap.idlemon.delivery import Deliverer, DeliveryOutcome

    report = settings.report
    outcome = DeliveryOutcome(pending=[(record.run_id, "interrupted by a signal")])
    with Sending(guard), IdlemonClient(report.base_url, report.token or "") as client:
        deliverer = Deliverer(history, lambda _slug: client, report.budget_s)
        # Older reports of this monitor first, then this run's, so Idlemon's latest log is
        # the newest run.  They cannot hide a failure: this run reports, so it tells Idlemon
        # the job is active right after them.
        claimed = [] if history is None else history.claim_reports(
            record.run_id, report.budget_s + LEASE_MARGIN_S,
            monitor=settings.monitor, limit=BACKLOG_PER_RUN,
        )  # with this run's own, which it already holds
        backlog = [r for r in claimed if r.run_id != record.run_id]
        done = deliverer.deliver([*backlog, record], owner=record.run_id)
        outcome = _own_outcome(done, record.run_id)
        for note in deliverer.notes:  # delivered, but Idlemon's answer was odd: said once
            warn(f"warning: {note}")
    if outcome.last_problem:
        kept = "kept for `jobwrap flush`" if history is not None else "lost: no history"
        warn(f"warning: report not delivered ({kept}): {outcome.last_problem}")
    status = "sent" if outcome.sent else ("refused" if outcome.refused else "pending")
    return replace(record, report_status=status, report_error=outcome.last_problem)


def _own_outcome(done, run_id: str):
    """The delivery outcome of this run's own report, out of one with its backlog's."""
    from jobwrap.idlemon.delivery import DeliveryOutcome

    return DeliveryOutcome(
        sent=[r for r in done.sent if r == run_id],
        refused=[(r, why) for r, why in done.refused if r == run_id],
        pending=[(r, why) for r, why in done.pending if r == run_id],
    )


def _describe_request(settings: RunSettings, record: RunRecord) -> str:
    from jobwrap.idlemon.client import IdlemonClient
    from jobwrap.idlemon.report import log_body

    duration_s, metas = log_body(record)
    client = IdlemonClient(settings.report.base_url, settings.report.token or "<token>")
    return client.log_request(settings.monitor or "", duration_s, metas).describe(masked=True)
