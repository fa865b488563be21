"""Cron schedules: validated up front, then asked for fire times and for the longest gap.

The only module that imports croniter.  :func:`parse_schedule` accepts the portable subset of
cron that cronie also runs, so a line means the same here as in the system crontab:

* five fields, ``minute hour day-of-month month day-of-week``, each a list (``a,b``) of
  numbers, ``*`` and ranges ``a-b``, optionally stepped (``*/5``, ``1-30/2``); month and
  weekday names (``jan``, ``mon``) in those two fields; day of week 0 and 7 are both Sunday.
  Each item is read as cronie's ``get_range`` reads it (jobwrap reads the values itself and
  hands croniter the result): ``N-N`` is the value N; a day-of-week range ending on 0 ends on
  7 (``sat-sun``, ``5-0``); a step larger than its range gives the range's first value
  (``*/60`` is minute 0).  jobwrap is stricter than cronie on backwards ranges (``5-1``, which
  cronie reads as no value, or as ``5-7`` when it ends on 0) and more permissive on ``N/step``
  (``5/15`` = ``5-59/15``, as croniter and robfig/cron read it; cronie refuses it; refused in
  day of week, where it is unclear whether 7 counts).  Where cronie would read a schedule
  differently or warn, :attr:`Schedule.notes` says so (``jobwrap cron --check`` prints it);
* an alias: ``@yearly @annually @monthly @weekly @daily @midnight @hourly``, or ``@reboot``,
  which is a kind of its own (``Schedule.is_reboot``): it has no fire times;
* an optional zone prefix ``CRON_TZ=Europe/Paris 0 9 * * *`` (or ``TZ=…``), which beats the
  ``tz`` argument; with neither, the machine's local zone (:func:`local_zone`).

Rejected on purpose, with one clear line: croniter's extensions ``L W # ? H R`` (cronie would
not run them, and ``R`` would pick a new time at every evaluation), backwards ranges, and the
6- and 7-field forms.  The one exception is ``allow_seconds=True``, meant for tests of the
supervisor: a sixth field then holds **seconds, written first** (``*/2 * * * * *`` fires every
two seconds), as Quartz, Spring and robfig/cron write it.  croniter's default puts seconds
last; six fields mean different things in different tools, so we take the common reading and
say so here.

Days follow cronie: when both day fields are restricted, a day matching either one fires;
but if either field starts with ``*`` (``*/2``) a day must match both (croniter's
``implement_cron_bug``, which is cronie's actual behaviour).

Daylight saving time, as croniter computes it in the schedule's zone (tested):

* clocks go forward: a wall time inside the skipped hour fires at the first instant after it
  (``30 2 * * *`` in Paris fires at 03:00 that night), as cronie does; hourly and minutely
  schedules simply have no fire times in the missing hour;
* clocks go back: as in cronie, a *fixed-time* job (no field of seconds, minute or hour
  starts with ``*``) fires once, in the first pass: ``30 2 * * *`` runs at 02:30 summer
  time only.  A *wildcard* job (``*/15 * * * *``, ``0 * * * *``, ``@hourly``) follows the
  clock and fires in both passes, so it keeps its spacing in real time.  croniter itself
  fires fixed times twice; :meth:`Schedule._skips` filters the second pass out.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta, tzinfo
from functools import cache
from itertools import pairwise
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import (  # type: ignore[import-untyped]  # croniter ships no type hints
    CroniterBadDateError,
    CroniterError,
    croniter,
)

from jobwrap.errors import UsageError

ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
REBOOT = "@reboot"
# A year catches every month length and weekday pattern; a gap that merely overlaps the
# horizon is still measured in full, so leap-day schedules come out right too.
DEFAULT_HORIZON = timedelta(days=366)

_ZONE_PREFIX = re.compile(r"(?:CRON_TZ|TZ)=(\S*)(?:\s+(.*))?", re.DOTALL)
_ITEM = re.compile(r"(\*|[0-9A-Za-z]+)(?:-([0-9A-Za-z]+))?(?:/([0-9]+))?", re.ASCII)
# Any fixed instant works to ask "does this ever fire?": cron patterns repeat every few years.
_PROBE_FROM = datetime(2001, 1, 1, tzinfo=UTC)
_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_WEEKDAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


@dataclass(frozen=True)
class _Field:
    name: str
    low: int
    high: int
    names: tuple[str, ...] = ()
    first_named: int = 0  # the value of names[0]

    def value(self, token: str) -> int:
        """The number a token stands for; ValueError naming the problem otherwise."""
        if token.isdigit():
            number = int(token)
        elif token.lower() in self.names:
            return self.first_named + self.names.index(token.lower())
        elif self.names:
            raise ValueError(f"{self.name} {token!r} is neither a number nor a name")
        else:
            raise ValueError(f"{self.name} {token!r} is not a number")
        if not self.low <= number <= self.high:
            raise ValueError(f"{self.name} {number} is out of range {self.low}-{self.high}")
        return number


_SECOND = _Field("second", 0, 59)
_UNIX_FIELDS = (
    _Field("minute", 0, 59),
    _Field("hour", 0, 23),
    _Field("day-of-month", 1, 31),
    _Field("month", 1, 12, _MONTHS, 1),
    _Field("day-of-week", 0, 7, _WEEKDAYS, 0),
)
_DAY_OF_WEEK = _UNIX_FIELDS[-1]


def load_zone(name: str) -> ZoneInfo:
    """The IANA zone called ``name``; UsageError when there is no such zone."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        # ValueError: absolute or "../" keys; OSError: a directory such as "Europe".
        raise UsageError(f"unknown time zone {name!r}") from None


def local_zone() -> tzinfo:
    """The machine's zone: ``$TZ`` when it names an IANA zone, else /etc/localtime, else UTC.

    Read once per value of ``$TZ``: a long-running supervisor does not notice a changed
    /etc/localtime until it restarts.  POSIX rule strings in ``$TZ`` are not understood.
    """
    return _local_zone(os.environ.get("TZ", ""))


@cache
def _local_zone(tz_variable: str) -> tzinfo:
    name = tz_variable.removeprefix(":")
    if name:
        try:
            return load_zone(name)
        except UsageError:
            pass
    try:
        with open("/etc/localtime", "rb") as file:
            return ZoneInfo.from_file(file, key="localtime")
    except (OSError, ValueError):
        return UTC


@dataclass(frozen=True)
class Schedule:
    """A validated cron schedule in a time zone.

    Build it with :func:`parse_schedule`, which also reads a zone prefix and applies the
    seconds policy; constructing one directly validates ``expr`` (5 fields, 6 with seconds
    first, or an alias) and ``tz`` the same way and raises UsageError.

    ``expr`` is the expression without its zone, fields separated by one space; ``tz`` is an
    IANA zone name, or None for the machine's local zone.  ``str()`` gives text that
    :func:`parse_schedule` reads back to an equal schedule.  Every datetime taken must be
    aware (ValueError otherwise); every datetime returned is aware, in the schedule's zone.
    Fire-time methods raise UsageError on an ``@reboot`` schedule, which has none.
    """

    expr: str
    tz: str | None = None

    def __post_init__(self) -> None:
        if self.tz is not None:
            load_zone(self.tz)
        if self.is_reboot:
            return
        if self.expr.startswith("@") and self.expr not in ALIASES:
            known = " ".join([*ALIASES, REBOOT])
            raise UsageError(f"unknown cron alias {self.expr!r} (known: {known})")
        _check_fields(self.expr, self._cron_text.split())
        try:
            self.next_after(_PROBE_FROM)
        except CroniterBadDateError:
            raise UsageError(f"cron expression {self.expr!r} never fires (no such date)") from None
        except CroniterError as exc:  # a safety net: our own checks should have caught it
            raise UsageError(f"invalid cron expression {self.expr!r}: {exc}") from None

    def __str__(self) -> str:
        return f"CRON_TZ={self.tz} {self.expr}" if self.tz else self.expr

    @property
    def is_reboot(self) -> bool:
        """True for ``@reboot``: run once when the supervisor starts, never on the clock."""
        return self.expr == REBOOT

    @property
    def has_seconds(self) -> bool:
        """True when the expression has a leading seconds field."""
        return len(self._cron_text.split()) == 6

    @property
    def zone(self) -> tzinfo:
        """The zone fire times are computed in."""
        return load_zone(self.tz) if self.tz else local_zone()

    @property
    def _cron_text(self) -> str:
        """The fields as written (an alias expanded): cronie's rules read their first characters."""
        return ALIASES.get(self.expr, self.expr)

    @property
    def _croniter_text(self) -> str:
        """The fields as croniter must read them to give cronie's values (see :func:`_analyse`)."""
        return _analyse(tuple(self._cron_text.split()))[0]

    @property
    def notes(self) -> tuple[str, ...]:
        """Where cronie would read this schedule differently (``jobwrap cron --check`` warns)."""
        if self.is_reboot:
            return ()
        return _analyse(tuple(self._cron_text.split()))[1]

    def next_after(self, moment: datetime) -> datetime:
        """The first fire time strictly after ``moment``."""
        return self._step(self._iterator(moment), forward=True)

    def next_times(self, n: int, start: datetime | None = None) -> list[datetime]:
        """The next ``n`` fire times strictly after ``start`` (default: now), in order."""
        iterator = self._iterator(start or datetime.now(UTC))
        return [self._step(iterator, forward=True) for _ in range(n)]

    def _step(self, iterator: croniter, *, forward: bool) -> datetime:
        """croniter's next (or previous) fire time, less the ones cronie would not fire."""
        while True:
            fire: datetime = iterator.get_next(datetime) if forward else iterator.get_prev(datetime)
            if not self._skips(fire):
                return fire

    def _skips(self, fire: datetime) -> bool:
        """A fixed-time job's fire time in the second pass of an hour the clocks repeat."""
        return (
            fire.fold == 1
            and fire.replace(fold=0).utcoffset() != fire.utcoffset()
            and self._is_fixed_time
        )

    @property
    def _is_fixed_time(self) -> bool:
        """cronie's rule: no seconds, minute or hour field starting with ``*``."""
        fields = self._cron_text.split()
        time_fields = fields[:3] if self.has_seconds else fields[:2]
        return not any(f.startswith("*") for f in time_fields)

    def longest_gap(
        self, start: datetime | None = None, horizon: timedelta = DEFAULT_HORIZON
    ) -> timedelta:
        """The longest real time between two consecutive fire times around [start, +horizon].

        Every gap that overlaps the window counts in full, so ``0 0 29 2 *`` gives four
        years.  DST changes count as elapsed time (a daily job's gap is 25 h on the night
        clocks go back).  Work is bounded by the number of days in the horizon, not the
        number of fire times: see :meth:`_gaps_at_probes`.
        """
        self._require_fire_times()
        begin = (start or datetime.now(UTC)).astimezone(UTC)
        return max(self._intraday_gap(), *self._gaps_at_probes(begin, begin + horizon))

    def slot_at(self, moment: datetime) -> tuple[datetime, timedelta]:
        """The fire time nearest ``moment`` (the slot a run started then belongs to), and how
        long a claim on it must last: the longer of the gaps on either side of it.

        Rounding to the nearest fire time, rather than the last one, lets a host whose clock
        is a little behind, or whose cron fired a little late, still name the same slot: any
        error under half the gap to the neighbouring fire time names the right one.
        """
        after = self.next_after(moment)
        before = self._step(self._iterator(after), forward=False)
        if _utc(moment) - _utc(before) <= _utc(after) - _utc(moment):
            fire, other = before, self._step(self._iterator(before), forward=False)
        else:
            fire, other = after, self.next_after(after)
        gaps = (abs(_utc(fire) - _utc(other)), _utc(after) - _utc(before))
        return _utc(fire), max(gaps)

    def _require_fire_times(self) -> None:
        if self.is_reboot:
            raise UsageError(f"{REBOOT} runs once when the supervisor starts: it has no fire times")

    def _iterator(self, start: datetime) -> croniter:
        self._require_fire_times()
        if start.tzinfo is None:
            raise ValueError("fire times need an aware datetime")
        return croniter(
            self._croniter_text,
            start.astimezone(self.zone),
            ret_type=datetime,
            implement_cron_bug=True,  # cronie's day-of-month/day-of-week rule, see module doc
            second_at_beginning=self.has_seconds,
        )

    def _intraday_gap(self) -> timedelta:
        """The longest wall-clock gap between two fire times on the same day.

        The time-of-day fields do not depend on the date, so every firing day has the same
        times; at most 86,400 of them (every second).
        """
        expanded, _ = croniter.expand(self._croniter_text, second_at_beginning=self.has_seconds)
        seconds = _values(expanded[5], 0, 59) if len(expanded) == 6 else [0]
        times = sorted(
            hour * 3600 + minute * 60 + second
            for hour in _values(expanded[1], 0, 23)
            for minute in _values(expanded[0], 0, 59)
            for second in seconds
        )
        return timedelta(seconds=max((b - a for a, b in pairwise(times)), default=0))

    def _gaps_at_probes(self, begin: datetime, end: datetime) -> list[timedelta]:
        """The real gap around each probe instant: ``begin``, each local midnight, each DST change.

        A gap between two consecutive fire times either lies within one local day, where
        :meth:`_intraday_gap` measures it, or contains a midnight; and a DST change only
        alters the gap that contains it.  So asking croniter for the fire times on both sides
        of these probes (~370 probes a year) measures every gap exactly.
        """
        midnights = _local_midnights(begin, end, self.zone)
        probes = sorted([begin, *midnights, *_offset_changes([begin, *midnights, end], self.zone)])
        gaps: list[timedelta] = []
        covered_until = begin - timedelta(seconds=1)
        iterator = self._iterator(begin)  # one iterator, moved: building one parses the expr
        for probe in probes:
            if probe <= covered_until:
                continue  # inside the gap just measured: same pair of fire times
            iterator.set_current(probe.astimezone(self.zone), force=True)
            before = self._step(iterator, forward=False)
            after = self._step(iterator, forward=True)  # the fire time right after ``before``
            gaps.append(_utc(after) - _utc(before))
            covered_until = _utc(after)
        return gaps


def parse_schedule(expr: str, tz: str | None = None, *, allow_seconds: bool = False) -> Schedule:
    """Validate a cron expression; raise UsageError with one line naming it and the problem.

    ``tz`` is the zone to use when the expression has no ``CRON_TZ=``/``TZ=`` prefix (None or
    empty: local time).  ``allow_seconds`` admits a 6-field form with seconds first.
    """
    text = " ".join(expr.split())
    if not text:
        raise UsageError("empty cron expression")
    zone, body = _split_zone_prefix(text)
    fields = body.split()
    if body.startswith("@"):
        if len(fields) != 1:
            raise UsageError(f"cron alias {fields[0]!r} takes no fields after it: {text!r}")
        body = body.lower()
        if body == REBOOT:
            return Schedule(REBOOT)  # no fire times, so a zone would mean nothing
    elif len(fields) != 5 and not (allow_seconds and len(fields) == 6):
        problem = _field_count_problem(fields, allow_seconds)
        raise UsageError(f"invalid cron expression {text!r}: {problem}")
    return Schedule(body, zone or tz or None)


def parse_start(text: str, schedule: Schedule) -> datetime:
    """An ISO 8601 time to count fire times from; without an offset, in the schedule's zone.

    UsageError (one line) when it is not an ISO 8601 date or date and time.
    """
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        example = "e.g. 2024-03-31T01:30"
        raise UsageError(f"--from {text!r} is not an ISO 8601 time ({example})") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=schedule.zone)


def _split_zone_prefix(text: str) -> tuple[str | None, str]:
    match = _ZONE_PREFIX.fullmatch(text)
    if match is None:
        return None, text
    zone, body = match.group(1), match.group(2)
    if not zone or not body:
        raise UsageError(f"invalid cron expression {text!r}: expected CRON_TZ=ZONE then a schedule")
    return zone, body


def _field_count_problem(fields: list[str], allow_seconds: bool = True) -> str:
    expected = "5 (minute hour day-of-month month day-of-week)"
    if allow_seconds:
        return f"{len(fields)} fields, expected {expected}, or 6 with seconds first"
    problem = f"{len(fields)} fields, expected {expected}"
    if len(fields) in (6, 7):
        problem += "; second and year fields are not supported"
    return problem


def _check_fields(expr: str, fields: list[str]) -> None:
    """Raise UsageError unless every field is cron syntax jobwrap runs (see :func:`_analyse`)."""
    if len(fields) not in (5, 6):
        raise UsageError(f"invalid cron expression {expr!r}: {_field_count_problem(fields)}")
    try:
        _analyse(tuple(fields))
    except ValueError as exc:
        raise UsageError(f"invalid cron expression {expr!r}: {exc}") from None


@cache
def _analyse(fields: tuple[str, ...]) -> tuple[str, tuple[str, ...]]:
    """Validate the fields: the text to hand croniter, and where cronie reads them differently.

    jobwrap reads every item itself, as cronie's ``get_range`` does, and hands croniter the
    values it found, so croniter's own readings never apply: ``N-N`` is the value N (croniter
    takes it as the whole cycle), an upper bound 0 of a day-of-week range is 7 (``sat-sun``),
    and 7 is Sunday.  Items starting with ``*`` are handed over as ``*`` or ``*/N``, because
    the day-field rule depends on that first character.  ValueError names a bad item.
    """
    specs = (_SECOND, *_UNIX_FIELDS) if len(fields) == 6 else _UNIX_FIELDS
    notes: list[str] = []
    texts = []
    for spec, field in zip(specs, fields, strict=True):
        first, *rest = field.split(",")
        items = [_normalise_item(spec, first, notes, keep_star=True)]
        items += [_normalise_item(spec, item, notes, keep_star=False) for item in rest]
        texts.append("*" if items[0] == "*" else ",".join(items))
    return " ".join(texts), tuple(notes)


def _normalise_item(spec: _Field, item: str, notes: list[str], *, keep_star: bool) -> str:
    """One list item (``*``, ``n``, ``a-b``, each optionally ``/step``) as croniter text.

    ``keep_star``: a ``*`` item stays ``*`` or ``*/N`` (the field's first item, whose first
    character decides the day rule); otherwise it too becomes its values.
    """
    match = _ITEM.fullmatch(item)
    if match is None:
        raise ValueError(
            f"{spec.name} {item!r} is not supported (use numbers, names, *, a-b, /step, a,b)"
        )
    start, end, step_text = match.groups()
    step = 1 if step_text is None else int(step_text)
    if step == 0:
        raise ValueError(f"{spec.name} step in {item!r} must be at least 1")
    if start == "*":
        if end is not None:
            raise ValueError(f"{spec.name} {item!r}: '*' cannot start a range")
        _note_large_step(spec, item, spec.low, spec.high, step, notes)
        if keep_star:
            # croniter loops on steps beyond the field; a cycle's length gives the same values.
            cycle = 7 if spec is _DAY_OF_WEEK else spec.high - spec.low + 1
            return "*" if step == 1 else f"*/{min(step, cycle)}"
        return _listed(spec, spec.low, spec.high, step)
    low = spec.value(start)
    if end is None and step_text is None:
        return str(_croniter_value(spec, low))
    if end is None:
        if spec is _DAY_OF_WEEK:  # is 7 in "1/2"?  cronie refuses the form; so do we here
            raise ValueError(
                f"day-of-week {item!r}: cronie refuses N/step, and whether it reaches 7 "
                f"(Sunday) is unclear; write a range such as {low}-6/{step}"
            )
        high = spec.high
        notes.append(
            f"{spec.name} {item!r}: cronie refuses N/step; jobwrap reads {low}-{high}/{step}"
        )
    else:
        high = spec.value(end)
        if high < low and high == 0 and spec is _DAY_OF_WEEK:
            high = 7  # cronie: a range ending on Sunday (sat-sun, 5-0)
        if high < low:
            raise ValueError(f"{spec.name} range {item!r} runs backwards")
    _note_large_step(spec, item, low, high, step, notes)
    return _listed(spec, low, high, step)


def _listed(spec: _Field, low: int, high: int, step: int) -> str:
    values = dict.fromkeys(_croniter_value(spec, v) for v in range(low, high + 1, step))
    return ",".join(map(str, values))


def _note_large_step(
    spec: _Field, item: str, low: int, high: int, step: int, notes: list[str]
) -> None:
    if step > 1 and step > high - low:
        notes.append(
            f"{spec.name} step {step} in {item!r} is larger than the range {low}-{high}: "
            f"it fires at {low} only (cronie warns; supercronic refuses it)"
        )


def _croniter_value(spec: _Field, value: int) -> int:
    return 0 if spec is _DAY_OF_WEEK and value == 7 else value


def _values(field: list[int | str], low: int, high: int) -> list[int]:
    """croniter's expansion of one field as numbers (``['*']`` means the whole range)."""
    if field == ["*"]:
        return list(range(low, high + 1))
    return [int(value) for value in field]


def _utc(moment: datetime) -> datetime:
    # Subtracting two datetimes that share a tzinfo ignores their UTC offsets (wall-clock
    # arithmetic), which is wrong across DST changes; UTC makes it elapsed time.
    return moment.astimezone(UTC)


def _local_midnights(begin: datetime, end: datetime, zone: tzinfo) -> list[datetime]:
    """Each start of a local day in (begin, end], as UTC instants."""
    first = begin.astimezone(zone).date() + timedelta(days=1)
    last = end.astimezone(zone).date()
    days = (first + timedelta(days=n) for n in range((last - first).days + 1))
    return [_utc(datetime.combine(day, time(), tzinfo=zone)) for day in days]


def _offset_changes(instants: list[datetime], zone: tzinfo) -> list[datetime]:
    """The instants where the zone's UTC offset changes, between consecutive ``instants``.

    ``instants`` are sorted and less than a couple of days apart, so each interval holds at
    most one change; it is found to the second by bisection.
    """
    changes = []
    for left, right in pairwise(instants):
        if left.astimezone(zone).utcoffset() != right.astimezone(zone).utcoffset():
            changes.append(_bisect_offset_change(left, right, zone))
    return changes


def _bisect_offset_change(left: datetime, right: datetime, zone: tzinfo) -> datetime:
    offset = left.astimezone(zone).utcoffset()
    low, high = int(left.timestamp()), int(right.timestamp())
    while high - low > 1:
        middle = (low + high) // 2
        if datetime.fromtimestamp(middle, zone).utcoffset() == offset:
            low = middle
        else:
            high = middle
    return datetime.fromtimestamp(high, UTC)
