"""The job table of ``jobwrap cron``: a crontab's job lines with their ``# jobwrap:`` options.

The crontab syntax itself is :mod:`jobwrap.cron.crontab`'s.  Per-line options: a comment
``# jobwrap: overlap=allow`` applies to the next job line below it (only comments and blank
lines may come between; cron ignores it, so the file still works in the system crontab).
``overlap`` is what happens when a job's time comes while its previous run still runs:

* ``skip`` (default): do not start it; log ``event=skip``;
* ``allow``: start another one alongside;
* ``replace``: SIGTERM the running one's whole tree (its ``jobwrap run`` records the run as
  killed by SIGTERM), SIGKILL what is left of it after the kill delay (5 s), and start the new
  run as soon as its ``jobwrap run`` has exited.

A bad directive is a bad line, and the job line below it is skipped too: better not run than
run with options you did not ask for.

``jobwrap cron --check`` is :mod:`jobwrap.cron.check`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from jobwrap.config.values import Overlap, parse_overlap
from jobwrap.cron.crontab import CronEntry, LineError, parse_crontab, read_crontab_text
from jobwrap.errors import UsageError
from jobwrap.schedule import Schedule

OVERLAP_POLICIES = tuple(o.value for o in Overlap)

_DIRECTIVE = re.compile(r"#\s*jobwrap:(.*)", re.DOTALL)

JobKey = tuple[object, ...]


@dataclass(frozen=True)
class CronJob:
    """One job line with its options.  ``key`` identifies it across reloads (not its line)."""

    entry: CronEntry
    key: JobKey
    overlap: Overlap = Overlap.SKIP

    @property
    def line_no(self) -> int:
        return self.entry.line_no

    @property
    def schedule(self) -> Schedule:
        return self.entry.schedule


@dataclass(frozen=True)
class JobTable:
    """What a crontab file says: the jobs to run, the bad lines (sorted by line), and every
    assignment as ``(line_no, name, value)``."""

    source: str
    jobs: tuple[CronJob, ...]
    errors: tuple[LineError, ...]
    assignments: tuple[tuple[int, str, str], ...] = ()


def load_jobs(path: str | Path, *, allow_seconds: bool = False) -> JobTable:
    """Read and parse a crontab; ConfigError only when the file cannot be read as text."""
    return parse_jobs(read_crontab_text(path), str(path), allow_seconds=allow_seconds)


def parse_jobs(text: str, source: str = "<crontab>", *, allow_seconds: bool = False) -> JobTable:
    """Parse crontab text and its ``# jobwrap:`` directives; never raises for a bad line."""
    crontab = parse_crontab(text, source, allow_seconds=allow_seconds)
    found = _scan_directives(
        text, source, {e.line_no for e in crontab.entries}, {e.line_no for e in crontab.errors}
    )
    jobs: list[CronJob] = []
    seen: dict[tuple[object, ...], int] = {}
    for entry in crontab.entries:
        if entry.line_no in found.skipped:
            continue
        env = tuple(sorted(entry.env.items()))
        identity = (str(entry.schedule), entry.command, entry.stdin, env)
        seen[identity] = seen.get(identity, -1) + 1  # identical lines stay distinct jobs
        overlap = found.options.get(entry.line_no, {}).get("overlap", "skip")
        jobs.append(CronJob(entry, (*identity, seen[identity]), Overlap(overlap)))
    errors = sorted([*crontab.errors, *found.errors], key=lambda e: e.line_no)
    return JobTable(source, tuple(jobs), tuple(errors), crontab.assignments)


@dataclass(frozen=True)
class _Directives:
    options: dict[int, dict[str, str]]  # job line → its options
    skipped: frozenset[int]  # job lines under a bad directive
    errors: tuple[LineError, ...]


def _scan_directives(
    text: str, source: str, entry_lines: set[int], error_lines: set[int]
) -> _Directives:
    options: dict[int, dict[str, str]] = {}
    skipped: set[int] = set()
    errors: list[LineError] = []
    pending: dict[str, str] = {}
    first: int | None = None  # the first directive line of the pending block
    bad: int | None = None  # a bad directive line in it
    for line_no, raw in enumerate(text.split("\n"), start=1):
        line = raw.strip()
        directive = _DIRECTIVE.fullmatch(line)
        if directive:
            first = first or line_no
            try:
                pending.update(_parse_options(directive.group(1)))
            except UsageError as exc:
                errors.append(LineError(source, line_no, str(exc)))
                bad = line_no
            continue
        if first is None or not line or line.startswith("#"):
            continue
        if line_no in entry_lines and bad is not None:
            skipped.add(line_no)
            errors.append(LineError(source, line_no, f"skipped: bad directive on line {bad}"))
        elif line_no in entry_lines:
            options[line_no] = pending
        elif line_no not in error_lines:
            errors.append(LineError(source, first, "a '# jobwrap:' line must precede a job line"))
        pending, first, bad = {}, None, None
    if first is not None:
        errors.append(LineError(source, first, "a '# jobwrap:' line must precede a job line"))
    return _Directives(options, frozenset(skipped), tuple(errors))


def _parse_options(text: str) -> dict[str, str]:
    options = {}
    for word in text.split():
        name, _, value = word.partition("=")
        if name != "overlap":
            raise UsageError(f"unknown jobwrap directive {word!r} (known: overlap=POLICY)")
        options[name] = parse_overlap(value).value
    if not options:
        raise UsageError("empty jobwrap directive (e.g. '# jobwrap: overlap=allow')")
    return options
