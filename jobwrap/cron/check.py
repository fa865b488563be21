"""``jobwrap cron --check``: what each line will do, what is wrong, and what cronie reads otherwise.

The report lists each job (line, schedule, next fire time in the schedule's zone, overlap
policy, command), then the bad lines (skipped when supervising), then warnings (lines that run,
but not as they would under cronie, or not as their author may think), then the next fire
times across all jobs in time order.  The file is fit to run (``ok``) when no line is bad; a
file of assignments alone is fine (the supervisor idles until a reload brings jobs).

A ``jobwrap run OPTIONS -- CMD`` line is checked with the real ``run`` option parser and
settings, through the ``validate_run`` callable the CLI supplies (this package does not import
the CLI): an option typo, a bad pattern or ``--require-up`` without ``--promonitor`` would fail
at every fire, so it is a bad line here.
"""

from __future__ import annotations

import pwd
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from jobwrap.cron.crontab import LineError
from jobwrap.cron.launch import is_jobwrap_run, job_environment, run_arguments
from jobwrap.cron.table import CronJob, JobTable, load_jobs

# (arguments after ``jobwrap run``, the line's environment) → a one-line problem, or None.
RunValidator = Callable[[Sequence[str], Mapping[str, str]], str | None]

UPCOMING = 10  # how many fire times the time-sorted view shows
IGNORED_VARIABLES = {
    "MAILTO": "jobwrap cron sends no mail: job output goes to its stdout/stderr and the "
    "history; use 'jobwrap run --monitor SLUG' lines to be alerted",
    "MAILFROM": "jobwrap cron sends no mail",
}


@dataclass(frozen=True)
class CheckReport:
    """The findings: ``lines`` to print, and ``ok`` (no bad line)."""

    lines: tuple[str, ...]
    ok: bool

    @property
    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def check(
    path: str | Path,
    now: datetime,
    *,
    allow_seconds: bool = False,
    validate_run: RunValidator | None = None,
    env: Mapping[str, str] | None = None,
) -> CheckReport:
    """Check a crontab (``-``: stdin) against ``now`` (aware); ConfigError when unreadable.

    ``env`` is the environment the supervisor would give its jobs (default: none extra).
    """
    table = load_jobs(path, allow_seconds=allow_seconds)
    errors = list(table.errors)
    warnings: list[LineError] = []
    jobs = []
    for job in table.jobs:
        problem = _run_line_problem(job, validate_run, env or {})
        if problem is not None:
            errors.append(LineError(table.source, job.line_no, f"jobwrap run: {problem}"))
            continue
        jobs.append(job)
        warnings += [LineError(table.source, job.line_no, w) for w in line_warnings(job)]
    warnings += ignored_variables(table)
    errors.sort(key=lambda e: e.line_no)
    warnings.sort(key=lambda w: w.line_no)
    return CheckReport(tuple(_report(table, jobs, errors, warnings, now)), not errors)


def line_warnings(job: CronJob) -> list[str]:
    """What may surprise about a line that runs: cronie's other reading, a user field."""
    found = [f"{note} [{job.schedule}]" for note in job.schedule.notes]
    command = job.entry.command
    first = command.split(None, 1)[0]
    if not is_jobwrap_run(command) and _is_user_name(first):
        found.append(
            f"the command starts with {first!r}, a user name: a system crontab line? "
            "jobwrap cron reads user crontabs (no user field), so it would run the command "
            f"{first!r}"
        )
    return found


def ignored_variables(table: JobTable) -> list[LineError]:
    """One warning per variable jobwrap cron does not act on (``MAILTO``…), at its first line.

    An empty value (``MAILTO=""``, cron's "no mail") asks for nothing: no warning.
    """
    seen: dict[str, int] = {}
    for line_no, name, value in table.assignments:
        if name in IGNORED_VARIABLES and value:
            seen.setdefault(name, line_no)
    return [
        LineError(table.source, line, f"{name} is ignored: {IGNORED_VARIABLES[name]}")
        for name, line in seen.items()
    ]


def _is_user_name(word: str) -> bool:
    if "/" in word or shutil.which(word):
        return False
    try:
        pwd.getpwnam(word)
    except (KeyError, ValueError):
        return False
    return True


def _run_line_problem(
    job: CronJob, validate_run: RunValidator | None, env: Mapping[str, str]
) -> str | None:
    arguments = run_arguments(job.entry.command)
    if validate_run is None or arguments is None:
        return None
    return validate_run(arguments, job_environment(job.entry.env, env))


def _report(
    table: JobTable,
    jobs: list[CronJob],
    errors: list[LineError],
    warnings: list[LineError],
    now: datetime,
) -> list[str]:
    count = f"{len(jobs)} job{'s' * (len(jobs) != 1)}"
    bad = f"{len(errors)} bad line{'s' * (len(errors) != 1)}"
    lines = [f"{table.source}: {count}, {bad}"]
    rows = [["LINE", "SCHEDULE", "NEXT RUN", "OVERLAP", "COMMAND"]]
    for job in jobs:
        rows.append([
            str(job.line_no), str(job.schedule), _next_run_text(job, now), job.overlap,
            job.entry.command,
        ])
    if jobs:
        lines += _aligned(rows)
    if errors:
        lines += ["bad lines (skipped):", *(f"  {error}" for error in errors)]
    if warnings:
        lines += ["warnings:", *(f"  {warning}" for warning in warnings)]
    upcoming = upcoming_runs(jobs, now)
    if upcoming:
        lines += [f"next {len(upcoming)} runs:"]
        lines += [f"  {_when(moment)}  line {job.line_no}: {job.entry.command}"
                  for moment, job in upcoming]
    return lines


def upcoming_runs(
    jobs: Sequence[CronJob], now: datetime, limit: int = UPCOMING
) -> list[tuple[datetime, CronJob]]:
    """The next ``limit`` fire times across all jobs, in time order (instants, not wall times)."""
    runs: list[tuple[datetime, CronJob]] = []
    for job in jobs:
        if job.schedule.is_reboot:
            continue
        runs += [(moment, job) for moment in job.schedule.next_times(limit, now)]
    runs.sort(key=lambda run: (run[0].timestamp(), run[1].line_no))
    return runs[:limit]


def _next_run_text(job: CronJob, now: datetime) -> str:
    if job.schedule.is_reboot:
        return "at start"
    return _when(job.schedule.next_after(now))


def _when(moment: datetime) -> str:
    """An ISO time with its offset and weekday: ``2024-03-31 03:00:00+02:00 Sun``."""
    return f"{moment.isoformat(sep=' ')} {moment:%a}"


def _aligned(rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return [
        "  ".join([*(cell.ljust(w) for cell, w in zip(row, widths, strict=False)), row[-1]])
        for row in rows
    ]
