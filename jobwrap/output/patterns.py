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


def parse_pattern_spec(text: str, kind: Kind) -> PatternSpec:
    """Parse ``NAME=REGEX`` and validate both halves; raise UsageError with one clear line."""
    name, sep, pattern = text.partition("=")
    if not sep or not pattern:
        raise UsageError(f"--{kind} expects NAME=REGEX, got {text!r}")
    if not NAME_RE.match(name):
        raise UsageError(
            f"--{kind} {name!r}: a name is a letter or _ then up to 63 letters, digits, _ . -"
        )
    if name in RESERVED_NAMES:
        raise UsageError(f"--{kind} {name!r}: that name is reserved for jobwrap's own metas")
    compile_pattern(name, pattern, kind)
    return PatternSpec(name, pattern, kind)


def check_unique(specs: list[PatternSpec]) -> None:
    """Two metas with one name would overwrite each other in the report: refuse them."""
    seen: set[str] = set()
    for spec in specs:
        if spec.name in seen:
            raise UsageError(f"the meta name {spec.name!r} is given twice")
        seen.add(spec.name)


def compile_pattern(name: str, pattern: str, kind: Kind = "meta") -> re.Pattern[str]:
    try:
        return re.compile(pattern, re.MULTILINE)
    except re.error as exc:
        raise UsageError(f"--{kind} {name}: invalid regex {pattern!r}: {exc}") from None
    except (OverflowError, RecursionError, ValueError) as exc:
        raise UsageError(f"--{kind} {name}: unusable regex {pattern!r}: {exc}") from None

