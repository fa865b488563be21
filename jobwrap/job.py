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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from jobwrap.analysis import PatternSpec, check_unique, parse_pattern_spec
from jobwrap.config import Resolved
from jobwrap.errors import JobwrapError, UsageError
from jobwrap.history import RunRecord, open_history
from jobwrap.runner import RunResult, RunSpec, run_command

Warn = Callable[[str], None]


def warn_stderr(message: str) -> None:
    sys.stderr.write(f"jobwrap: {message}\n")
    sys.stderr.flush()


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
) -> RunSettings:
    """Merge the monitor section's patterns with the flags' (a flag wins for its name)."""
    if not argv:
        raise UsageError("no command given: jobwrap run [OPTIONS] -- COMMAND [ARG]...")
    flag_specs = [parse_pattern_spec(t, "meta") for t in meta_flags]
    flag_specs += [parse_pattern_spec(t, "count") for t in count_flags]
    check_unique(flag_specs)
    given = {s.name for s in flag_specs}
    file_specs = [
        parse_pattern_spec(f"{name}={rx}", kind)
        for kind, table in (("meta", resolved.metas), ("count", resolved.counts))
        for name, rx in table.items()
        if name not in given
    ]
    specs = file_specs + flag_specs
    check_unique(specs)
    return RunSettings(
        argv=argv,
        state_dir=resolved["state_dir"],
        monitor=resolved["monitor"],
        patterns=tuple(specs),
        timeout_s=resolved["timeout"],
        kill_after_s=resolved["kill_after"],
        capture=resolved["capture"],
        summary_json=summary_json,
        schedule=resolved["schedule"],
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


def make_record(settings: RunSettings, result: RunResult) -> RunRecord:
    host = os.uname().nodename
    metas = builtin_metas(result, host) + list(result.analysis.metas)
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
        error=result.spawn_error,
        stdout_lines=result.analysis.stdout_lines,
        stderr_lines=result.analysis.stderr_lines,
        cpu_user_s=result.cpu_user_s,
        cpu_sys_s=result.cpu_sys_s,
        max_rss_kb=result.max_rss_kb,
        output_head=output.head if output else None,
        output_tail=output.tail if output else None,
        output_omitted_lines=output.omitted_lines if output else None,
    )


def run_job(settings: RunSettings, warn: Warn = warn_stderr) -> RunRecord:
    """Run the command, record the run, write the summary; return the record."""
    result = run_command(
        RunSpec(
            argv=settings.argv,
            patterns=settings.patterns,
            timeout_s=settings.timeout_s,
            kill_after_s=settings.kill_after_s,
            capture=settings.capture,
        )
    )
    if result.spawn_error:
        warn(result.spawn_error)
    record = make_record(settings, result)
    record_run(settings.state_dir, record, warn)
    if settings.summary_json is not None:
        write_summary(settings.summary_json, record, warn)
    return record


def record_run(state_dir: Path, record: RunRecord, warn: Warn) -> bool:
    """Store the run; on failure warn once and go on (the job's status is what matters)."""
    try:
        history = open_history(state_dir)
        try:
            history.add(record)
        finally:
            history.close()
        return True
    except JobwrapError as exc:
        warn(f"warning: {exc}; this run is not recorded (its exit status is unaffected)")
        return False


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
