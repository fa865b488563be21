r"""Crontab files for ``jobwrap cron``: parsed once, every bad line reported and skipped.

The format is a *user* crontab as cronie reads it (no user field), so a file moves between
the system cron and ``jobwrap cron`` unchanged:

* Blank lines and lines whose first non-blank character is ``#`` are ignored.  A ``#`` later
  in a line belongs to the command, as in cron.  Spaces and tabs both separate fields.
* ``NAME=value`` (blanks around ``=`` allowed) sets an environment variable for the entries
  **below it** -- positional, as in cronie: each entry carries a copy of the assignments made
  above it, and a later assignment does not reach back.  A value wrapped in matching single
  or double quotes loses them and keeps its inner blanks; nothing is unescaped; an unquoted
  value loses its surrounding blanks.  ``NAME=`` sets an empty value (cronie wants ``""``).
* ``CRON_TZ=Zone`` is such an assignment that also sets the zone of the schedules below it;
  ``CRON_TZ=`` goes back to local time.  An unknown zone is an error on that line, and the
  entries under it are skipped with an error each until the next valid ``CRON_TZ``: better
  not run than run at the wrong hour.  ``TZ=`` is only passed to jobs, as in cronie.
* An entry is five time fields (or one ``@alias``, including ``@reboot``) then the shell
  command.  With ``allow_seconds=True`` every field-based entry has six fields, seconds
  first (see :mod:`jobwrap.schedule`); that mode exists for tests.  A command whose first
  word reads as a time field (``*``, ``*/N``, ``N-M``, ``N,M``, a number) makes the line bad:
  it was written for a 6- or 7-field cron (supercronic's seconds or years), and run as it
  stands its ``*`` would be a shell glob.  So does a NUL byte anywhere in a line.
* ``%`` works as in cronie: the first unescaped ``%`` ends the command, and the rest becomes
  the command's stdin, each further unescaped ``%`` turned into a newline and a final newline
  added; ``\%`` is a literal ``%`` (other backslashes are kept).  Copying a line from the
  system crontab must not change what it does; supercronic passes ``%`` through instead,
  which would silently turn ``date +\%F`` into something else.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from jobwrap.errors import ConfigError, UsageError
from jobwrap.schedule import Schedule, parse_schedule
from jobwrap.zones import load_zone

STDIN = "-"  # the path that means "read the crontab from stdin", as crontab(1) takes it
_ASSIGNMENT = re.compile(r"([^\s=]+)\s*=\s*(.*)", re.DOTALL)
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_PERCENT_TOKEN = re.compile(r"(\\.|%)", re.DOTALL)  # a backslash pair, or a bare %
# A command word that reads as a time field (``*``, ``*/N``, ``N-M``, ``N,M``, a number): the
# line had more fields than we read, and running it would run ``*`` (a glob) as a command.
_FIELD_ITEM = r"(?:\*|\d+(?:-\d+)?)(?:/\d+)?"
_FIELD_LIKE = re.compile(rf"{_FIELD_ITEM}(?:,{_FIELD_ITEM})*", re.ASCII)


@dataclass(frozen=True)
class CronEntry:
    """One job line.

    ``command`` is the shell command text (to run with ``sh -c``), after cronie's ``%``
    rule; ``stdin`` is the text to feed it, or None when the line has no ``%`` (give the job
    an empty stdin then, as cron does).  ``env`` holds the crontab's own assignments in effect
    for this line, to lay over the supervisor's environment.
    """

    line_no: int
    schedule: Schedule
    command: str
    env: Mapping[str, str] = field(default_factory=dict, hash=False)
    stdin: str | None = None


@dataclass(frozen=True)
class LineError:
    """A line that was skipped, and why (one line of text)."""

    source: str
    line_no: int
    message: str

    def __str__(self) -> str:
        return f"{self.source}:{self.line_no}: {self.message}"


@dataclass(frozen=True)
class Crontab:
    """A parsed crontab: the good entries, the bad lines, and the assignments.

    ``env`` is every assignment in the file, the last value winning -- for display: each
    entry carries the assignments that apply to it.  ``tz`` is the ``CRON_TZ`` in effect at
    the end of the file; each entry's zone is ``entry.schedule.tz``.  ``assignments`` lists
    every valid assignment as ``(line_no, name, value)``, in file order.
    """

    source: str
    entries: tuple[CronEntry, ...]
    errors: tuple[LineError, ...]
    env: Mapping[str, str] = field(default_factory=dict, hash=False)
    tz: str | None = None
    assignments: tuple[tuple[int, str, str], ...] = ()


def parse_crontab(text: str, source: str = "<crontab>", *, allow_seconds: bool = False) -> Crontab:
    """Parse crontab text; never raises for a bad line, which goes to ``Crontab.errors``."""
    parser = _Parser(source, allow_seconds)
    for line_no, line in enumerate(text.split("\n"), start=1):
        parser.feed(line_no, line.strip())
    return parser.result()


def read_crontab(path: str | Path, *, allow_seconds: bool = False) -> Crontab:
    """Read and parse a crontab file; ConfigError when it cannot be read as UTF-8 text."""
    return parse_crontab(read_crontab_text(path), str(path), allow_seconds=allow_seconds)


def read_crontab_text(path: str | Path) -> str:
    """A crontab file's text (``-``: stdin); ConfigError when it cannot be read as UTF-8 text."""
    from jobwrap.config.files import CONFIG_LIMIT, read_bounded

    try:  # bounded, and never blocks on a FIFO or /dev/zero
        if str(path) == STDIN:
            data = sys.stdin.buffer.read(CONFIG_LIMIT + 1)
            if len(data) > CONFIG_LIMIT:
                raise ConfigError(f"crontab on stdin is larger than {CONFIG_LIMIT // 1024} KiB")
            return data.decode("utf-8")
        return read_bounded(Path(path), "crontab").decode("utf-8")
    except FileNotFoundError as exc:
        raise ConfigError(f"cannot read crontab {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"crontab {path} is not UTF-8 text") from None


def split_percent(text: str) -> tuple[str, str | None]:
    r"""Apply cronie's ``%`` rule: ``(command, stdin)``, stdin None when there is no ``%``."""
    segments = [""]
    for token in _PERCENT_TOKEN.split(text):
        if token == "%":
            segments.append("")
        else:
            segments[-1] += "%" if token == "\\%" else token
    command, *rest = segments
    if not rest:
        return command, None
    stdin = "\n".join(rest)
    return command, stdin + "\n" if stdin and not stdin.endswith("\n") else stdin


class _Parser:
    """The state carried down the file: assignments so far, and the current zone."""

    def __init__(self, source: str, allow_seconds: bool) -> None:
        self.source = source
        self.allow_seconds = allow_seconds
        self.env: dict[str, str] = {}
        self.tz: str | None = None
        self.bad_tz_line: int | None = None  # a CRON_TZ line that named no known zone
        self.entries: list[CronEntry] = []
        self.errors: list[LineError] = []
        self.assignments: list[tuple[int, str, str]] = []

    def feed(self, line_no: int, line: str) -> None:
        if not line or line.startswith("#"):
            return
        try:
            if "\0" in line:  # no command, argument or environment value can hold one
                raise UsageError("a NUL byte in the line")
            assignment = _ASSIGNMENT.fullmatch(line)
            if assignment:
                self._assign(line_no, assignment.group(1), _unquote(assignment.group(2)))
            else:
                self.entries.append(self._entry(line_no, line))
        except UsageError as exc:
            self.errors.append(LineError(self.source, line_no, str(exc)))

    def result(self) -> Crontab:
        return Crontab(
            self.source,
            tuple(self.entries),
            tuple(self.errors),
            MappingProxyType(dict(self.env)),
            self.tz,
            tuple(self.assignments),
        )

    def _assign(self, line_no: int, name: str, value: str) -> None:
        if not _ENV_NAME.match(name):
            raise UsageError(f"{name!r} is not a valid environment variable name")
        if name == "CRON_TZ":
            self._set_zone(line_no, value)
        self.env[name] = value
        self.assignments.append((line_no, name, value))

    def _set_zone(self, line_no: int, value: str) -> None:
        if value and any(char.isspace() for char in value):
            self.bad_tz_line = line_no
            raise UsageError(f"CRON_TZ={value!r}: a zone name has no blanks; give it its own line")
        if value:
            try:
                load_zone(value)
            except UsageError:
                self.bad_tz_line = line_no
                raise
        self.tz = value or None
        self.bad_tz_line = None

    def _entry(self, line_no: int, line: str) -> CronEntry:
        if self.bad_tz_line is not None:
            raise UsageError(f"skipped: CRON_TZ on line {self.bad_tz_line} is not a known zone")
        field_count = 1 if line.startswith("@") else 6 if self.allow_seconds else 5
        parts = line.split(None, field_count)
        if len(parts) <= field_count:
            wanted = "an @alias" if field_count == 1 else f"{field_count} time fields"
            raise UsageError(f"expected {wanted} then a command: {line!r}")
        schedule = parse_schedule(
            " ".join(parts[:field_count]), self.tz, allow_seconds=self.allow_seconds
        )
        first_word = parts[field_count].split(None, 1)[0]
        if _FIELD_LIKE.fullmatch(first_word):
            counts = (
                "an @alias takes no fields" if field_count == 1
                else f"{field_count + 1} or {field_count + 2} fields? jobwrap reads {field_count}"
            )
            raise UsageError(
                f"the command starts with {first_word!r}, which looks like a time field ({counts})"
            )
        command, stdin = split_percent(parts[field_count])
        if not command.strip():
            raise UsageError(f"empty command before '%': {line!r}")
        return CronEntry(line_no, schedule, command, MappingProxyType(dict(self.env)), stdin)


def _unquote(value: str) -> str:
    """cronie's value rule: strip blanks; strip one pair of matching quotes, nothing after."""
    value = value.strip()
    if not value or value[0] not in "'\"":
        return value
    closing = value.find(value[0], 1)
    if closing == -1:
        raise UsageError(f"unterminated {value[0]} quote in value {value!r}")
    if value[closing + 1 :].strip():
        raise UsageError(f"text after the closing quote in value {value!r}")
    return value[1:closing]
