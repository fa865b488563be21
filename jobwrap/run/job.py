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

from jobwrap.config.settings import Resolved
from jobwrap.errors import ExitStatus, JobwrapError, UsageError, signal_name
from jobwrap.idlemon.report import BACKLOG_PER_RUN, LEASE_MARGIN_S, ReportSettings, wants_report
from jobwrap.output.patterns import Kind, PatternSpec, check_unique, parse_pattern_spec
from jobwrap.process.spawn import (
    FORWARDED_SIGNALS,
    STOP_SIGNALS,
    RunResult,
    RunSpec,
    ensure_standard_fds,
    new_run_id,
    run_command,
)
from jobwrap.store.history import History, RunRecord, open_history

if TYPE_CHECKING:  # imported only when --promonitor is used
    from jobwrap.promonitor.gate import DependencySettings

Warn = Callable[[str], None]


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

    @property
    def job(self) -> str:
        """What groups a job's runs: the monitor slug, else the command line."""
        return self.monitor or shlex.join(self.argv)


def build_run_settings(
    resolved: Resolved,
    argv: tuple[str, ...],
    meta_flags: tuple[str, ...] = (),
    count_flags: tuple[str, ...] = (),
    summary_json: Path | None = None,
    dry_run: bool = False,
) -> RunSettings:
    """Validate everything a run needs, before the command starts (UsageError/ConfigError)."""
    if not argv:
        raise UsageError("no command given: jobwrap run [OPTIONS] -- COMMAND [ARG]...")
    patterns = _patterns(resolved, meta_flags, count_flags)
    if resolved["monitor"] and resolved["idlemon_token"]:
        from jobwrap.net.http import check_base_url

        check_base_url(resolved["idlemon_url"], "Idlemon")
    schedule = resolved["schedule"]
    if schedule:
        from jobwrap.schedule import parse_schedule

        schedule = str(parse_schedule(schedule))
    return RunSettings(
        argv=argv,
        state_dir=resolved["state_dir"],
        monitor=resolved["monitor"],
        patterns=patterns,
        timeout_s=resolved["timeout"],
        kill_after_s=resolved["kill_after"],
        capture=resolved["capture"],
        summary_json=summary_json,
        schedule=schedule,
        report=ReportSettings(
            policy=resolved["report"],
            base_url=resolved["idlemon_url"],
            token=resolved["idlemon_token"],
            budget_s=resolved["report_timeout"],
            dry_run=dry_run,
        ),
        dependency=_dependency_settings(resolved),
        skipped_exit=resolved["skipped_exit"],
        lock=_lock_name(resolved["lock"], resolved["monitor"], argv, resolved["lock_wait"]),
        lock_wait_s=resolved["lock_wait"],
    )


def _patterns(resolved: Resolved, meta_flags: tuple[str, ...],
              count_flags: tuple[str, ...]) -> tuple[PatternSpec, ...]:
    """The monitor section's patterns, then the flags' (a flag wins for its name)."""
    flag_specs = [parse_pattern_spec(t, "meta") for t in meta_flags]
    flag_specs += [parse_pattern_spec(t, "count") for t in count_flags]
    check_unique(flag_specs)
    given = {s.name for s in flag_specs}
    sections: tuple[tuple[Kind, Mapping[str, str]], ...] = (
        ("meta", resolved.metas), ("count", resolved.counts))
    file_specs = [
        parse_pattern_spec(f"{name}={rx}", kind)
        for kind, table in sections
        for name, rx in table.items()
        if name not in given
    ]
    specs = file_specs + flag_specs
    check_unique(specs)  # a section's meta and count may still share a name
    return tuple(specs)


def _lock_name(value: str | None, monitor: str | None, argv: tuple[str, ...],
               wait: float | None) -> str | None:
    """``--lock`` alone (or ``lock = true``) names the lock after the job; false: no lock."""
    if value is None or value.lower() in ("false", "no", "off"):
        if wait is not None:
            raise UsageError("--lock-wait needs --lock")
        return None
    if value == "" or value.lower() in ("true", "yes", "on"):
        return monitor or shlex.join(argv)
    return value


def _dependency_settings(resolved: Resolved) -> DependencySettings | None:
    require_up = resolved["require_up"] or "off"
    if not resolved["promonitor"]:
        if require_up != "off":
            raise UsageError("--require-up needs --promonitor ID (or promonitor in the config)")
        return None
    from jobwrap.net.http import check_base_url
    from jobwrap.promonitor.gate import DependencySettings

    check_base_url(resolved["promonitor_url"], "ProMonitor")
    return DependencySettings(
        monitor_id=resolved["promonitor"],
        token=resolved["promonitor_token"],
        base_url=resolved["promonitor_url"],
        requests_per_minute=resolved["promonitor_rpm"],
        require_up=require_up,
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
        job=settings.job,
        monitor=settings.monitor,
        command=shlex.join(settings.argv),
        host=host,
        started_at=result.started_at.isoformat(timespec="milliseconds"),
        duration_ms=result.duration_ms,
        exit_code=result.exit_status,
        metas=tuple(metas),
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
    with _SignalGuard() as guard:
        try:
            return _run_guarded(settings, guard, warn).exit_code
        except _Stopped as stop:  # a signal before the command started: it never will
            warn(f"stopped by {signal_name(stop.args[0])} before the command started")
            return ExitStatus.SIGNAL_BASE + stop.args[0]


def _run_guarded(settings: RunSettings, guard: _SignalGuard, warn: Warn) -> RunRecord:
    held = None
    if settings.lock is not None:
        held = _take_lock(settings, warn)
        if isinstance(held, RunRecord):
            return held  # skipped: a previous run still holds the lock
    try:
        return _run_locked(settings, held, guard, warn)
    finally:
        if held is not None:
            held.release()


def _take_lock(settings: RunSettings, warn: Warn):
    """The JobLock, or the record of the skipped run when it cannot be had."""
    from jobwrap.store import lock as locks

    assert settings.lock is not None
    try:
        held = locks.acquire(settings.state_dir, settings.lock, settings.lock_wait_s)
    except JobwrapError as exc:
        # As with the history: a broken state dir must not stop the job. Say so and run.
        warn(f"warning: cannot take lock {settings.lock!r} ({exc}); running without it")
        return None
    if held is not None:
        return held
    reason = locks.holder(settings.state_dir, settings.lock).skip_message()
    warn(reason)
    return finish_run(settings, skipped_record(settings, reason), warn)


def _run_locked(settings: RunSettings, held, guard: _SignalGuard, warn: Warn) -> RunRecord:
    dependency = _open_dependency(settings, warn)
    if dependency is not None and dependency.settings.require_up != "off":
        decision = dependency.gate()
        if decision is not None and not decision.run:
            return finish_run(settings, skipped_record(settings, decision.message), warn)
    may_send = settings.monitor and settings.report.token and settings.report.policy != "never"
    if may_send and not settings.report.dry_run:
        from jobwrap.idlemon.delivery import prewarm_http

        prewarm_http()
    if dependency is not None:
        dependency.start()
    result = run_command(
        RunSpec(
            argv=settings.argv,
            patterns=settings.patterns,
            timeout_s=settings.timeout_s,
            kill_after_s=settings.kill_after_s,
            capture=settings.capture,
            # The child inherits the lock: it is held as long as the job's tree lives.
            pass_fds=(held.fd,) if held is not None else (),
        ),
        relay=guard,  # the runner forwards signals while the child runs
    )
    if result.spawn_error:
        warn(result.spawn_error)
    if result.write_error:
        warn(result.write_error)
    record = make_record(settings, result, _context_metas(dependency, result, warn))
    return finish_run(settings, record, warn, guard)


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


def skipped_record(settings: RunSettings, reason: str) -> RunRecord:
    """A run that was not started (dependency down, lock held): recorded, never reported."""
    result = RunResult(
        run_id=new_run_id(),
        argv=settings.argv,
        started_at=datetime.now(UTC),
        duration_ms=0,
        exit_status=settings.skipped_exit,
    )
    record = make_record(settings, result, [("skipped", reason)])
    return replace(record, skipped=reason, output_head=None, output_tail=None)


def finish_run(settings: RunSettings, record: RunRecord, warn: Warn,
               guard: _SignalGuard | None = None) -> RunRecord:
    """Everything after the child: contained, so the run's exit status always stands."""
    try:
        record = _store_and_report(settings, record, warn, guard)
    except Exception as exc:  # a bug here must not cost the job its exit status
        warn(f"warning: internal error after the run ({type(exc).__name__}); "
             "its exit status is unaffected")
    if settings.summary_json is not None:
        write_summary(settings.summary_json, record, warn)
    return record


def _store_and_report(settings: RunSettings, record: RunRecord, warn: Warn,
                      guard: _SignalGuard | None) -> RunRecord:
    report = settings.report
    to_send = bool(settings.monitor) and wants_report(report.policy, record)
    if to_send and report.dry_run:
        warn("dry run: would send\n" + _describe_request(settings, record))
        return record
    if to_send and not report.token:
        warn(
            f"warning: no Idlemon token (JOBWRAP_IDLEMON_TOKEN or the config file): "
            f"the run of {settings.monitor!r} is recorded locally only "
            "(JOBWRAP_REPORT=never silences this)"
        )
        to_send = False
    if to_send:
        record = replace(record, report_status="pending")
    history = _store(settings.state_dir, record, warn, claim=to_send, lease=report.budget_s)
    if not to_send:
        return record
    try:
        if guard is not None and guard.stopping:
            warn("warning: stopped by a signal: the report is kept for `jobwrap flush`")
            return record
        return _deliver(settings, record, history, warn, guard)
    finally:
        if history is not None:
            history.release_claims(record.run_id)  # whatever happened, others may deliver it
            history.close()


def _store(state_dir: Path, record: RunRecord, warn: Warn, *, claim: bool,
           lease: float) -> History | None:
    """Store the run (claimed for delivery by this process); None if the store is unusable."""
    try:
        history = open_history(state_dir)
        try:
            history.add(record, claim=record.run_id if claim else None,
                        lease_s=lease + LEASE_MARGIN_S)
        except BaseException:
            history.close()
            raise
    except JobwrapError as exc:
        warn(f"warning: {exc}; this run is not recorded (its exit status is unaffected)")
        return None
    if not claim:
        history.close()
        return None
    return history


def _deliver(settings: RunSettings, record: RunRecord, history: History | None,
             warn: Warn, guard: _SignalGuard | None) -> RunRecord:
    from jobwrap.idlemon.client import IdlemonClient
    from jobwrap.idlemon.delivery import Deliverer, DeliveryOutcome

    report = settings.report
    outcome = DeliveryOutcome(pending=[(record.run_id, "interrupted by a signal")])
    with _Sending(guard), IdlemonClient(report.base_url, report.token or "") as client:
        deliverer = Deliverer(history, lambda _slug: client, report.budget_s)
        outcome = deliverer.deliver([record], owner=record.run_id)
        if outcome.sent and history is not None:
            # Delivered: older reports of this monitor may follow (they cannot hide a failure
            # now, since this run just told Idlemon the job is active).
            backlog = history.claim_reports(
                record.run_id, report.budget_s + LEASE_MARGIN_S,
                monitor=settings.monitor, limit=BACKLOG_PER_RUN,
            )
            if backlog:
                deliverer.deliver(backlog, owner=record.run_id)
    if outcome.last_problem:
        kept = "kept for `jobwrap flush`" if history is not None else "lost: no history"
        warn(f"warning: report not delivered ({kept}): {outcome.last_problem}")
    status = "sent" if outcome.sent else ("refused" if outcome.refused else "pending")
    return replace(record, report_status=status, report_error=outcome.last_problem)


def _describe_request(settings: RunSettings, record: RunRecord) -> str:
    from jobwrap.idlemon.client import IdlemonClient
    from jobwrap.idlemon.report import log_body

    duration_s, metas = log_body(record)
    client = IdlemonClient(settings.report.base_url, settings.report.token or "<token>")
    return client.log_request(settings.monitor or "", duration_s, metas).describe(masked=True)


class _SignalGuard:
    """The forwarded signals (TERM, INT, HUP, QUIT, USR1, USR2) for the whole run.

    A signal that was ignored when jobwrap started (``nohup``, a background job of a
    non-interactive shell) gets no handler, so it stays ignored for jobwrap and the child.
    Before the child starts (waiting for a lock, asking ProMonitor) the others abort the run,
    as they would have aborted the command.  While the child runs the runner gets them
    (:meth:`attach`).  After the child they are absorbed so the run's status stands; a stop
    signal (TERM, INT, HUP) also ends the sending of its report, which stays pending for a
    later run or flush — ``stopping`` says one came.
    """

    def __init__(self) -> None:
        self.old: dict = {}
        self.forward: Callable[[int], None] | None = None
        self.after_child = False
        self.sending = False
        self.received: int | None = None

    def __enter__(self) -> _SignalGuard:
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():
            for signum in FORWARDED_SIGNALS:
                if signal.getsignal(signum) != signal.SIG_IGN:
                    self.old[signum] = signal.signal(signum, self._on_signal)
        return self

    def attach(self, forward: Callable[[int], None] | None) -> None:
        """The runner's hand-over: signals go to ``forward`` until it passes None (reaped)."""
        self.forward = forward
        if forward is None:
            self.after_child = True

    def _on_signal(self, signum: int, _frame: object) -> None:
        if self.forward is not None:
            self.forward(signum)
            return
        if not self.after_child:
            raise _Stopped(signum)
        if signum in STOP_SIGNALS:
            self.received = signum
            if self.sending:
                raise _Stopped(signum)

    @property
    def stopping(self) -> bool:
        return self.received is not None

    def __exit__(self, exc_type, exc, tb) -> None:
        import signal

        for signum, handler in self.old.items():
            signal.signal(signum, handler)


class _Sending:
    """While reports are sent, a stop signal ends the sending (the report stays pending)."""

    def __init__(self, guard: _SignalGuard | None) -> None:
        self.guard = guard

    def __enter__(self) -> None:
        if self.guard is not None:
            self.guard.sending = True

    def __exit__(self, exc_type, exc, tb) -> bool:
        if self.guard is not None:
            self.guard.sending = False
        return exc_type is _Stopped


class _Stopped(BaseException):
    """Raised by a signal handler; a BaseException so no library swallows it."""


def write_summary(path: Path, record: RunRecord, warn: Warn) -> None:
    """Write the record as JSON atomically (a reader never sees half a file)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(record.to_json(), indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        warn(f"warning: cannot write the summary {path}: {exc.strerror}")
        try:
            tmp.unlink()
        except OSError:
            pass
