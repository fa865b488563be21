"""The core of ``jobwrap run``: supervise the command, then record (and later report) the run.

Everything after the child has run is contained: a broken state directory, an unwritable
summary file or a failing API produces one warning line on stderr and never changes the run's
exit status.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from jobwrap.config.settings import IDLEMON, PROMONITOR, Settings, child_environment
from jobwrap.config.values import RequireUp, bool_word
from jobwrap.errors import ExitStatus, JobwrapError, UsageError, signal_name
from jobwrap.idlemon.report import (
    BACKLOG_PER_RUN,
    LEASE_MARGIN_S,
    NOT_SENT,
    ReportSettings,
    not_sent_reason,
)
from jobwrap.output.patterns import Kind, PatternSpec, check_unique, parse_pattern_spec
from jobwrap.process.child import ensure_standard_fds
from jobwrap.process.spawn import RunResult, RunSpec, new_run_id, run_command
from jobwrap.run.hooks import HookSettings
from jobwrap.run.signals import Sending, SignalGuard, Stopped
from jobwrap.store.history import History, RunRecord, open_history
from jobwrap.store.record import storable

if TYPE_CHECKING:  # imported only when --promonitor is used (--lock-url)
    from jobwrap.promonitor.gate import DependencySettings
    from jobwrap.store.fleet import FleetSettings, Slot

Warn = Callable[[str], None]
# How long a run waits for a history another process holds write-locked: before the command
# (the job comes first) and after it (the run then waits in the spool for the next writer).
START_WAIT_MS = 1_000
END_WAIT_MS = 3_000


def warn_stderr(message: str) -> None:
    try:
        sys.stderr.write(f"jobwrap: {message}\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass  # stderr is full or gone: a warning must not cost the run its status


@dataclass(frozen=True)
class RunSettings:
    """Everything ``jobwrap run`` needs, validated before the command starts."""

    argv: tuple[str, ...]
    state_dir: Path
    monitor: str | None = None
    patterns: tuple[PatternSpec, ...] = ()
    timeout_s: float | None = None
    kill_after_s: float = 10.0
    capture: bool = True
    summary_json: Path | None = None
    schedule: str | None = None
    report: ReportSettings = ReportSettings(policy="never")
    dependency: DependencySettings | None = None  # only with --promonitor
    skipped_exit: int = ExitStatus.TEMPFAIL
    lock: str | None = None  # the lock's name; None: runs may overlap
    lock_wait_s: float | None = None
    report_problem: str | None = None  # why reports cannot be sent (token, URL): kept instead
    env: Mapping[str, str] | None = None  # the command's environment; None: jobwrap's own
    fleet: FleetSettings | None = None  # only with --lock and a lock URL
    fleet_slot: Slot | None = None  # the slot `jobwrap cron` fired this run for (exact)
    hooks: HookSettings = HookSettings()  # --on-failure / --on-success
    output: str = "live"  # live | on-failure (held, written out only if the run fails)
    metrics_dir: Path | None = None

    @property
    def job(self) -> str:
        """What groups a job's runs: the monitor slug, else the command line."""
        return self.monitor or shlex.join(self.argv)


def build_run_settings(
    settings: Settings,
    argv: tuple[str, ...],
    meta_flags: tuple[str, ...] = (),
    count_flags: tuple[str, ...] = (),
    summary_json: Path | None = None,
    dry_run: bool = False,
    cron_slot: str | None = None,
) -> RunSettings:
    """Validate everything a run needs, before the command starts (UsageError/ConfigError).

    Only *what to run* can fail here; a problem with *where to report* (token, URL) is kept
    in ``report_problem`` and said after the run, whose report is kept for ``jobwrap flush``.
    """
    if not argv:
        raise UsageError("no command given: jobwrap run [OPTIONS] -- COMMAND [ARG]...")
    if not argv[0] or "\0" in argv[0]:
        raise UsageError("the command name is empty: jobwrap run [OPTIONS] -- COMMAND [ARG]...")
    patterns = _patterns(settings, meta_flags, count_flags)
    lock = settings.lock
    if cron_slot is not None and settings.lock_url and lock is None:
        lock = ""  # jobwrap cron's overlap=skip, across the fleet: see jobwrap/cron/launch.py
    fleet = _fleet_settings(settings, lock)
    schedule = settings.schedule
    if schedule:
        from jobwrap.schedule import parse_schedule

        schedule = str(parse_schedule(schedule))
    return RunSettings(
        argv=argv,
        state_dir=settings.state_dir,
        monitor=settings.monitor,
        patterns=patterns,
        timeout_s=settings.timeout,
        kill_after_s=settings.kill_after,
        capture=settings.capture,
        summary_json=summary_json,
        schedule=schedule,
        report=ReportSettings(
            policy=settings.report,
            base_url=settings.idlemon_url,
            token=settings.idlemon_token,
            budget_s=settings.report_timeout,
            dry_run=dry_run,
        ),
        report_problem=settings.problem(IDLEMON),
        dependency=_dependency_settings(settings),
        skipped_exit=settings.skipped_exit,
        lock=_lock_name(lock, settings.monitor, argv, settings.lock_wait),
        lock_wait_s=settings.lock_wait,
        env=child_environment(settings),
        fleet=fleet,
        fleet_slot=_cron_slot(cron_slot) if fleet is not None else None,
        hooks=HookSettings(settings.on_failure or None, settings.on_success or None,
                           settings.hook_timeout),
        output=settings.output,
        metrics_dir=settings.metrics_dir,
    )


def _patterns(settings: Settings, meta_flags: tuple[str, ...],
              count_flags: tuple[str, ...]) -> tuple[PatternSpec, ...]:
    """The monitor section's patterns, then the flags' (a flag wins for its name)."""
    flag_specs = [parse_pattern_spec(t, "meta") for t in meta_flags]
    flag_specs += [parse_pattern_spec(t, "count") for t in count_flags]
    check_unique(flag_specs)
    given = {s.name for s in flag_specs}
    sections: tuple[tuple[Kind, Mapping[str, str]], ...] = (
        ("meta", settings.metas), ("count", settings.counts))
    file_specs = [
        parse_pattern_spec(f"{name}={rx}", kind, _written_in(settings, kind, name))
        for kind, table in sections
        for name, rx in table.items()
        if name not in given
    ]
    specs = file_specs + flag_specs
    check_unique(specs)  # a section's meta and count may still share a name
    return tuple(specs)


def _written_in(settings: Settings, kind: str, name: str) -> str:
    """Where a monitor section's pattern comes from: ``FILE [monitors.SLUG.meta]``."""
    for f in settings.files:  # highest precedence first: the file whose pattern is used
        section = f.data.get("monitors", {}).get(settings.monitor, {})
        if isinstance(section.get(kind), dict) and name in section[kind]:
            return f"{f.path} [monitors.{settings.monitor}.{kind}]"
    return f"[monitors.{settings.monitor}.{kind}]"


def _lock_name(value: str | None, monitor: str | None, argv: tuple[str, ...],
               wait: float | None) -> str | None:
    """``--lock`` alone (or ``lock = true``) names the lock after the job; false: no lock."""
    word = None if value is None or value == "" else bool_word(value)
    if value is None or word is False:
        if wait is not None:
            raise UsageError("--lock-wait needs --lock")
        return None
    if value == "" or word is True:
        return monitor or shlex.join(argv)
    return value


def _fleet_settings(settings: Settings, lock: str | None) -> FleetSettings | None:
    """With --lock and a lock URL: the Redis lease's settings (the client must be installed)."""
    if lock is None or bool_word(lock) is False or not settings.lock_url:
        return None
    from jobwrap.store.fleet import FleetSettings, require_client

    require_client()
    return FleetSettings(
        url=settings.lock_url,
        password=settings.lock_password,
        lease_s=settings.lock_lease,
        unavailable=settings.lock_unavailable,
        host=os.environ.get("JOBWRAP_HOSTNAME") or os.uname().nodename,
    )


def _cron_slot(cron_slot: str | None) -> Slot | None:
    """The exact slot ``jobwrap cron`` fired this run for (``--cron-slot``), if any."""
    if cron_slot is None:
        return None
    from jobwrap.store.fleet import Slot

    return Slot.parse(cron_slot)


def _dependency_settings(settings: Settings) -> DependencySettings | None:
    require_up = settings.require_up or RequireUp.OFF
    if not settings.promonitor:
        if require_up != RequireUp.OFF:
            raise UsageError("--require-up needs --promonitor ID (or promonitor in the config)")
        return None
    from jobwrap.promonitor.gate import DependencySettings

    return DependencySettings(
        monitor_id=settings.promonitor,
        token=settings.promonitor_token,
        base_url=settings.promonitor_url,
        requests_per_minute=settings.promonitor_rpm,
        require_up=require_up,
        problem=settings.problem(PROMONITOR),
    )


def builtin_metas(result: RunResult, host: str) -> list[tuple[str, str]]:
    """The metas every run carries, in a fixed order, before the user's."""
    analysis = result.analysis
    metas = [
        ("exit_code", str(result.exit_status)),
        ("stdout_lines", str(analysis.stdout_lines)),
        ("stderr_lines", str(analysis.stderr_lines)),
        ("duration_ms", str(result.duration_ms)),
        ("run_id", result.run_id),
        ("host", host),
    ]
    if result.signal:
        metas.append(("signal", result.signal))
    if result.timed_out:
        metas.append(("timed_out", "true"))
    return metas


def make_record(settings: RunSettings, result: RunResult,
                extra_metas: list[tuple[str, str]] | tuple = ()) -> RunRecord:
    """The run as stored and reported: built-in metas, the user's, then context metas."""
    host = os.uname().nodename
    from jobwrap.run.context import environment_metas

    metas = builtin_metas(result, host) + environment_metas(os.environ)
    metas += list(result.analysis.metas) + list(extra_metas)
    output = result.output
    return RunRecord(
        run_id=result.run_id,
        job=storable(settings.job),
        monitor=settings.monitor,
        # Text for people and Idlemon (an undecodable byte shows as \xe9); argv is exact.
        command=storable(shlex.join(settings.argv)),
        argv=settings.argv,
        host=host,
        started_at=result.started_at.isoformat(timespec="milliseconds"),
        duration_ms=result.duration_ms,
        exit_code=result.exit_status,
        metas=tuple((storable(n), storable(v)) for n, v in metas),
        schedule=settings.schedule,
        signal=result.signal,
        timed_out=result.timed_out,
        error=result.spawn_error or result.write_error,
        stdout_lines=result.analysis.stdout_lines,
        stderr_lines=result.analysis.stderr_lines,
        cpu_user_s=result.cpu_user_s,
        cpu_sys_s=result.cpu_sys_s,
        max_rss_kb=result.max_rss_kb,
        output_head=output.head if output else None,
        output_tail=output.tail if output else None,
        output_omitted_lines=output.omitted_lines if output else None,
    )


def run_job(settings: RunSettings, warn: Warn = warn_stderr) -> int:
    """Run the command, record the run, report it, write the summary; return the exit status."""
    ensure_standard_fds()  # before any file is opened: a closed fd 1 must not become the lock
    with SignalGuard() as guard:
        try:
            record = _run_guarded(settings, guard, warn)
        except Stopped as stop:  # a signal before the command started: it never will
            warn(f"stopped by {signal_name(stop.args[0])} before the command started")
            return ExitStatus.SIGNAL_BASE + stop.args[0]
        guard.after_child = True  # from here a signal stops the hook, never the record
        _tell(settings, record, guard, warn)
        return record.exit_code


def _tell(settings: RunSettings, record: RunRecord, guard: SignalGuard, warn: Warn) -> None:
    """After the run is recorded: the metrics textfile, then the hook.  Contained."""
    try:
        if settings.metrics_dir is not None:
            from jobwrap.run.metrics import write_metrics

            write_metrics(settings.metrics_dir, settings.job, settings.state_dir, warn,
                          running=None if record.skipped else False, fallback=record)
        if settings.hooks.chosen(record) is not None:
            from jobwrap.run.hooks import record_hook, run_hook

            outcome = run_hook(settings.hooks, record, warn, stop=lambda: guard.stopping)
            if outcome is not None:
                record_hook(settings.state_dir, record.run_id, outcome, warn)
    except Exception as exc:  # a bug here must not cost the job its exit status
        warn(f"warning: internal error after the run ({type(exc).__name__}); "
             "its exit status is unaffected")


def _run_guarded(settings: RunSettings, guard: SignalGuard, warn: Warn) -> RunRecord:
    run_id = new_run_id()  # one id for the lock file, the history row and the report
    held = None
    if settings.lock is not None:
        held = _take_lock(settings, run_id, warn)
        if isinstance(held, RunRecord):
            return held  # skipped: a previous run still holds the lock
    try:
        return _run_locked(settings, run_id, held, guard, warn)
    finally:
        if held is not None:
            held.release()


def _take_lock(settings: RunSettings, run_id: str, warn: Warn):
    """The JobLock (and fleet lease), or the record of the skipped run when it cannot be had."""
    from jobwrap.store import lock as locks

    assert settings.lock is not None
    try:
        held = locks.acquire(settings.state_dir, settings.lock, settings.lock_wait_s,
                             run_id=run_id)
    except JobwrapError as exc:
        # The user asked for mutual exclusion: a lock that cannot be taken skips the run, as
        # `flock -n` does, rather than risk two runs at once.
        reason = f"skipped: cannot take lock {settings.lock!r} ({exc})"
        warn(reason)
        return finish_run(settings, skipped_record(settings, reason, run_id), warn)
    if held is None:
        reason = locks.holder(settings.state_dir, settings.lock).skip_message()
        warn(reason)
        return finish_run(settings, skipped_record(settings, reason, run_id), warn)
    if settings.fleet is not None:
        return _take_fleet_lock(settings, settings.fleet, held, run_id, warn)
    return held


def _take_fleet_lock(settings: RunSettings, fleet_settings: FleetSettings, local, run_id: str,
                     warn: Warn):
    """After the local lock, the fleet's lease and slot in Redis; a skip record when refused."""
    from jobwrap.store import fleet

    assert settings.lock is not None
    try:
        got = fleet.acquire(fleet_settings, settings.lock, run_id=run_id, warn=warn,
                            slot=settings.fleet_slot or _fleet_slot(settings.schedule))
    except fleet.FleetUnavailable as exc:
        if fleet_settings.unavailable == "run":
            warn(f"warning: {exc}; running without the fleet lock (--lock-unavailable run)")
            return local
        got = fleet.Refused(f"skipped: {exc} (fleet lock {settings.lock!r})", fleet.Holder())
    if isinstance(got, fleet.Lease):
        return fleet.FleetLock(local, got, run_id)
    if local is not None:
        local.release()
    warn(got.message)
    return finish_run(settings, skipped_record(settings, got.message, run_id), warn)


def _fleet_slot(schedule: str | None):
    """The schedule slot this run belongs to (the nearest fire time), None without one."""
    if not schedule:
        return None
    from jobwrap.schedule import parse_schedule
    from jobwrap.store.fleet import Slot

    parsed = parse_schedule(schedule)
    if parsed.is_reboot:
        return None
    fire, keep = parsed.slot_at(datetime.now(UTC))
    return Slot(fire, keep.total_seconds())


def _run_locked(settings: RunSettings, run_id: str, held, guard: SignalGuard,
                warn: Warn) -> RunRecord:
    dependency = _open_dependency(settings, warn)
    if dependency is not None and dependency.settings.require_up != "off":
        decision = dependency.gate()
        if decision is not None and not decision.run:
            return finish_run(settings, skipped_record(settings, decision.message, run_id),
                              warn)
    may_send = settings.monitor and settings.report.token and settings.report.policy != "never"
    if may_send and not settings.report.dry_run:
        from jobwrap.idlemon.delivery import prewarm_http

        prewarm_http()
    if dependency is not None:
        dependency.start()
    history = _record_start(settings, run_id)
    if settings.metrics_dir is not None:
        from jobwrap.run.metrics import write_metrics

        write_metrics(settings.metrics_dir, settings.job, settings.state_dir, warn, running=True)
    holder = _hold_output(settings, warn)
    result = run_command(
        RunSpec(
            argv=settings.argv,
            patterns=settings.patterns,
            timeout_s=settings.timeout_s,
            kill_after_s=settings.kill_after_s,
            capture=settings.capture,
            env=settings.env,  # without jobwrap's secrets
            # The child inherits the lock: it is held as long as the job's tree lives.
            pass_fds=(held.fd,) if held is not None and held.fd is not None else (),
            sink=holder.write if holder is not None else None,
        ),
        run_id,
        relay=guard,  # the runner forwards signals while the child runs
    )
    if holder is not None:
        holder.finish(failed=result.exit_status != 0)
    if result.spawn_error:
        warn(result.spawn_error)
    if result.write_error:
        warn(result.write_error)
    extra = _context_metas(dependency, result, warn)
    if getattr(held, "lost", False):
        extra.append(("lock_lost", "true"))
    record = make_record(settings, result, extra)
    return finish_run(settings, record, warn, guard, history)


def _record_start(settings: RunSettings, run_id: str) -> History | None:
    """Put the run on disk as running before its command starts, so that a jobwrap killed
    (or a machine lost) while it runs leaves a trace: one short transaction.  The connection
    is kept for the outcome.  A history that cannot take it in ``START_WAIT_MS`` delays the
    job no longer: the outcome is stored (or spooled) after it all the same."""
    started = RunResult(run_id=run_id, argv=settings.argv, started_at=datetime.now(UTC),
                        duration_ms=0, exit_status=0)
    record = replace(make_record(settings, started), metas=())
    history = None
    try:
        history = open_history(settings.state_dir, busy_timeout_ms=START_WAIT_MS,
                               take_spool=False)
        history.begin(record)
    except JobwrapError:
        pass  # not now: the outcome is stored when the run ends, or a warning says why not
    return history


def _hold_output(settings: RunSettings, warn: Warn):
    """``--output on-failure``: the sink that holds the output (None: live, or it cannot)."""
    if settings.output != "on-failure":
        return None
    from jobwrap.process.hold import hold_output

    return hold_output(settings.state_dir, warn)


def _context_metas(dependency, result: RunResult, warn: Warn) -> list[tuple[str, str]]:
    """Metas about the run's surroundings; a failure here costs metas, never the run."""
    metas: list[tuple[str, str]] = []
    try:
        if dependency is not None:
            ended = result.started_at + timedelta(milliseconds=result.duration_ms)
            metas += dependency.metas_after(result.exit_status != 0, result.started_at, ended)
    except Exception as exc:  # contained: monitoring never changes the job's outcome
        warn(f"warning: ProMonitor cross-check failed ({type(exc).__name__})")
    return metas


def _open_dependency(settings: RunSettings, warn: Warn):
    if settings.dependency is None:
        return None
    from jobwrap.promonitor.gate import DependencyCheck

    return DependencyCheck(settings.dependency, settings.state_dir, warn)


def skipped_record(settings: RunSettings, reason: str, run_id: str | None = None) -> RunRecord:
    """A run that was not started (dependency down, lock held): recorded, never reported."""
    result = RunResult(
        run_id=run_id or new_run_id(),
        argv=settings.argv,
        started_at=datetime.now(UTC),
        duration_ms=0,
        exit_status=settings.skipped_exit,
    )
    record = make_record(settings, result, [("skipped", reason)])
    return replace(record, skipped=reason, output_head=None, output_tail=None)


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




def write_summary(path: Path, record: RunRecord, warn: Warn) -> None:
    """Write the record as JSON atomically (a reader never sees half a file).

    Through a ``mkstemp`` file (0600, an unpredictable name: a symlink planted next to the
    summary cannot redirect the write) renamed over ``path``.
    """
    from jobwrap.store.files import write_atomic

    try:
        write_atomic(path, (json.dumps(record.to_json(), indent=2) + "\n").encode("utf-8"))
    except OSError as exc:
        warn(f"warning: cannot write the summary {path}: {exc.strerror}")
