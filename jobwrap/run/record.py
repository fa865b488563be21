"""The run as stored and reported: its record, the start record, the skipped run, the summary."""

from __future__ import annotations

import json
import os
import shlex
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from jobwrap.errors import JobwrapError
from jobwrap.process.spawn import RunResult, new_run_id
from jobwrap.run.options import RunSettings, Warn
from jobwrap.store.history import History, RunRecord, open_history
from jobwrap.store.record import storable

# How long a run waits for a history another process holds write-locked before the command:
# the job comes first (the outcome is stored after it all the same).
START_WAIT_MS = 1_000


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


def record_start(settings: RunSettings, run_id: str) -> History | None:
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
