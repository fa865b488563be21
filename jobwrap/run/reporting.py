"""After the child: store the run, hand its report over to Idlemon's delivery, write the summary.

Everything here is contained: a broken state directory, an unwritable summary file or a
failing API produces one warning line on stderr and never changes the run's exit status.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from jobwrap.errors import JobwrapError
from jobwrap.idlemon.report import LEASE_MARGIN_S, plan_report
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
    plan = plan_report(settings.report, settings.monitor, record, settings.report_problem)
    if plan.say:
        warn(plan.say)
    record, to_send = plan.record, plan.send
    history = _store(settings.state_dir, record, warn, opened, claim=to_send,
                     lease=settings.report.budget_s)
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
    """Hand the stored, claimed run over to Idlemon's delivery; a stop signal ends it."""
    from jobwrap.idlemon.delivery import DeliveryOutcome, deliver_run

    outcome = DeliveryOutcome(pending=[(record.run_id, "interrupted by a signal")])
    notes: list[str] = []
    with Sending(guard):
        outcome, notes = deliver_run(record, history, settings.report)
    for note in notes:  # delivered, but Idlemon's answer was odd: said once
        warn(f"warning: {note}")
    if outcome.last_problem:
        kept = "kept for `jobwrap flush`" if history is not None else "lost: no history"
        warn(f"warning: report not delivered ({kept}): {outcome.last_problem}")
    return replace(record, report_status=outcome.status, report_error=outcome.last_problem)
