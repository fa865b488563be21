"""The user's patterns: ``--meta NAME=REGEX`` and ``--count NAME=REGEX``, parsed and checked.

A name is validated, may not take one of jobwrap's own meta names (:data:`RESERVED_NAMES`) and
is given once; a regex must compile.  Each problem is a UsageError of one line.  Matching them
against output is :mod:`jobwrap.output.matcher` and :mod:`jobwrap.output.scan`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from jobwrap.errors import UsageError

NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}\Z")

# Names jobwrap fills in itself, now or in later features; a user meta may not take them.
RESERVED_NAMES = frozenset(
    {
        "exit_code", "stdout_lines", "stderr_lines", "duration_ms", "run_id", "host",
        "signal", "timed_out", "skipped", "ran_at", "delayed_s", "schedule",
        "promonitor_status", "promonitor_response_ms", "promonitor_down_since",
        "systemd_unit", "ci", "ci_job_url", "commit", "analysis_incomplete",
        "hook", "hook_status", "hook_duration_ms",
    }
)

Kind = Literal["meta", "count"]


@dataclass(frozen=True)
class PatternSpec:
    """A user's ``--meta NAME=REGEX`` or ``--count NAME=REGEX``."""

    name: str
    pattern: str
    kind: Kind


def parse_pattern_spec(text: str, kind: Kind, where: str | None = None) -> PatternSpec:
    """Parse ``NAME=REGEX`` and validate both halves; raise UsageError with one clear line.

    ``where``: the place the pattern was written, when not a ``--meta``/``--count`` flag
    (``FILE [monitors.backup.meta]``): errors name it and the key."""
    name, sep, pattern = text.partition("=")
    if not sep or not pattern:
        raise UsageError(f"{where or '--' + kind} expects NAME=REGEX, got {text!r}")
    place = f"{where} {name}" if where else f"--{kind} {name!r}"
    if not NAME_RE.match(name):
        raise UsageError(
            f"{place}: a name is a letter or _ then up to 63 letters, digits, _ . -"
        )
    if name in RESERVED_NAMES:
        raise UsageError(f"{place}: that name is reserved for jobwrap's own metas")
    compile_pattern(name, pattern, kind, where)
    return PatternSpec(name, pattern, kind)


def check_unique(specs: list[PatternSpec]) -> None:
    """Two metas with one name would overwrite each other in the report: refuse them."""
    seen: set[str] = set()
    for spec in specs:
        if spec.name in seen:
            raise UsageError(f"the meta name {spec.name!r} is given twice")
        seen.add(spec.name)


def compile_pattern(name: str, pattern: str, kind: Kind = "meta",
                    where: str | None = None) -> re.Pattern[str]:
    place = f"{where} {name}" if where else f"--{kind} {name}"
    shown = _as_written(pattern)
    try:
        return re.compile(pattern, re.MULTILINE)
    except re.error as exc:
        raise UsageError(f"{place}: invalid regex {shown}: {exc}") from None
    except (OverflowError, RecursionError, ValueError) as exc:
        raise UsageError(f"{place}: unusable regex {shown}: {exc}") from None


def _as_written(pattern: str) -> str:
    """The pattern as the user wrote it (``\\d`` stays one backslash), quoted; repr only
    when it holds what a terminal line cannot show."""
    if pattern.isprintable() and "'" not in pattern:
        return f"'{pattern}'"
    return repr(pattern)

