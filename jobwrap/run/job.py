"""The core of ``jobwrap run``: supervise the command, then record (and later report) the run.

The run end to end, in order: its locks (:mod:`.locking`), the ProMonitor gate, the start
record (:mod:`.record`), the command under the signal guard (:mod:`.signals`), then the
record, report and summary (:mod:`.reporting`), then the metrics file and the hook.

Everything after the child has run is contained: a broken state directory, an unwritable
summary file or a failing API produces one warning line on stderr and never changes the run's
exit status.
"""

from __future__ import annotations

import sys
from datetime import timedelta

from jobwrap.errors import ExitStatus, signal_name
from jobwrap.idlemon.report import may_report
from jobwrap.process.child import ensure_standard_fds
from jobwrap.process.spawn import RunResult, RunSpec, new_run_id, run_command
from jobwrap.run.options import RunSettings, Warn
from jobwrap.run.record import make_record, record_start, skipped_record
from jobwrap.run.reporting import finish_run
from jobwrap.run.signals import SignalGuard, Stopped
from jobwrap.store.history import RunRecord


def warn_stderr(message: str) -> None:
    try:
        sys.stderr.write(f"jobwrap: {message}\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass  # stderr is full or gone: a warning must not cost the run its status


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
    run_id = settings.run_id or new_run_id()  # one id for the lock, the row and the report
    held = None
    if settings.lock is not None:
        from jobwrap.run.locking import take_lock

        held = take_lock(settings, run_id, warn)
        if isinstance(held, RunRecord):
            return held  # skipped: a previous run still holds the lock
    try:
        return _run_locked(settings, run_id, held, guard, warn)
    finally:
        if held is not None:
            held.release()


def _run_locked(settings: RunSettings, run_id: str, held, guard: SignalGuard,
                warn: Warn) -> RunRecord:
    dependency = _open_dependency(settings, warn)
    if dependency is not None and dependency.settings.require_up != "off":
        decision = dependency.gate()
        if decision is not None and not decision.run:
            return finish_run(settings, skipped_record(settings, decision.message, run_id),
                              warn)
    if may_report(settings.report, settings.monitor):
        from jobwrap.idlemon.delivery import prewarm_http

        prewarm_http()
    if dependency is not None:
        dependency.start()
    history = record_start(settings, run_id)
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
        warn(result.spawn_error + shell_hint(settings.argv, result.exit_status))
    if result.write_error:
        warn(result.write_error)
    extra = _context_metas(dependency, result, warn)
    if getattr(held, "lost", False):
        extra.append(("lock_lost", "true"))
    record = make_record(settings, result, extra)
    return finish_run(settings, record, warn, guard, history)


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


_SHELL_WORDS = frozenset({"cd", "export", "source", ".", "alias", "set", "unset", "ulimit",
                          "umask", "exec", "eval", "if", "for", "while", "[[", "test"})


def shell_hint(argv: tuple[str, ...], status: int) -> str:
    """For a command that was not found: a hint when it is shell syntax, not a program
    (``jobwrap run -- cd /tmp``, ``jobwrap run -- 'cd /tmp && ls'``)."""
    if status != ExitStatus.NOT_FOUND:
        return ""
    first = argv[0]
    if first in _SHELL_WORDS or any(c in first for c in " \t;&|<>$`()*?~="):
        return " — shell syntax needs a shell: jobwrap run -- sh -c '...'"
    return ""
