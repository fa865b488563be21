"""Cron schedules: validated up front, then asked for fire times and for the longest gap.

The only module that imports croniter.  :func:`parse_schedule` accepts the portable subset of
cron that cronie also runs, so a line means the same here as in the system crontab:

* five fields, ``minute hour day-of-month month day-of-week``, read as cronie reads them
  (:mod:`jobwrap.cron.fields`); where cronie would read a schedule differently or warn,
  :attr:`Schedule.notes` says so (``jobwrap cron --check`` prints it);
* an alias: ``@yearly @annually @monthly @weekly @daily @midnight @hourly``, or ``@reboot``,
  which is a kind of its own (``Schedule.is_reboot``): it has no fire times;
* an optional zone prefix ``CRON_TZ=Europe/Paris 0 9 * * *`` (or ``TZ=…``), which beats the
  ``tz`` argument; with neither, the machine's local zone (:func:`jobwrap.zones.local_zone`).

The 6- and 7-field forms are refused, with one line.  The one exception is
``allow_seconds=True``, meant for tests of the supervisor: a sixth field then holds **seconds,
written first** (``*/2 * * * * *`` fires every two seconds), as Quartz, Spring and robfig/cron
write it.  croniter's default puts seconds last; six fields mean different things in different
tools, so we take the common reading and say so here.

Days follow cronie: when both day fields are restricted, a day matching either one fires;
but if either field starts with ``*`` (``*/2``) a day must match both (croniter's
``implement_cron_bug``, which is cronie's actual behaviour).

Daylight saving time follows cronie's ``crond`` (``src/cron.c``), which has two modes.  A job
is *fixed-time* when no field of seconds, minute or hour starts with ``*`` (``30 2 * * *``,
``@daily``), *wildcard* otherwise (``*/10 2 * * *``, ``0 * * * *``, ``@hourly``).

* **System zone** (no zone given): crond walks the system's wall clock.  When it jumps
  forward, a fixed-time job whose time was skipped runs at the change (``30 2 * * *`` in
  Paris runs at 03:00 that night); a wildcard job has no fire times in the skipped hour
  (``*/10 2 * * *`` does not run that night).  When the clock goes back, wildcard jobs run
  in both passes and fixed-time jobs in the first pass only.
* **A zone** (``CRON_TZ=``, ``tz``): crond checks each real minute against the wall clock in
  that zone, with no DST rule: a time in the skipped hour does not run, a time in the
  repeated hour runs in both passes.  Except that, as crond, no fixed-time job runs while the
  *system* clock is in the second pass of an hour it repeats.

Deliberately different: crond runs a fixed-time job once for each of its skipped times
(``0,30 2 * * *`` twice at 03:00, ten seconds apart); jobwrap runs it once at the change.

croniter is only asked for wall-clock times (naive datetimes, where it has no DST bugs);
:meth:`Schedule._fires` turns them into instants with the rules above.
"""

from __future__ import annotations

import heapq
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from itertools import pairwise

from croniter import (  # type: ignore[import-untyped]  # croniter ships no type hints
    CroniterBadDateError,
    CroniterError,
    croniter,
)

from jobwrap.cron.fields import analyse, check_fields, field_count_problem
from jobwrap.errors import UsageError
from jobwrap.zones import (
    in_second_pass,
    load_zone,
    local_midnights,
    local_zone,
    offset_change,
    offset_changes,
    readings,
    shift_near,
    utc,
)

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
# Any fixed instant works to ask "does this ever fire?": cron patterns repeat every few years.
_PROBE_FROM = datetime(2001, 1, 1, tzinfo=UTC)

_ZONE_PREFIX = re.compile(r"(?:CRON_TZ|TZ)=(\S*)(?:\s+(.*))?", re.DOTALL)



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
        check_fields(self.expr, self._cron_text.split())
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
        """The fields as croniter must read them to give cronie's values (:mod:`.cron.fields`)."""
        return analyse(tuple(self._cron_text.split()))[0]

    @property
    def notes(self) -> tuple[str, ...]:
        """Where cronie would read this schedule differently (``jobwrap cron --check`` warns)."""
        if self.is_reboot:
            return ()
        return analyse(tuple(self._cron_text.split()))[1]

    def next_after(self, moment: datetime) -> datetime:
        """The first fire time strictly after ``moment``."""
        return next(self._fires(moment, forward=True))

    def next_times(self, n: int, start: datetime | None = None) -> list[datetime]:
        """The next ``n`` fire times strictly after ``start`` (default: now), in order."""
        fires = self._fires(start or datetime.now(UTC), forward=True)
        return [next(fires) for _ in range(n)]

    def _previous(self, moment: datetime) -> datetime:
        """The last fire time strictly before ``moment``."""
        return next(self._fires(moment, forward=False))

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
        before = self._previous(after)
        if utc(moment) - utc(before) <= utc(after) - utc(moment):
            fire, other = before, self._previous(before)
        else:
            fire, other = after, self.next_after(after)
        gaps = (abs(utc(fire) - utc(other)), utc(after) - utc(before))
        return utc(fire), max(gaps)

    def _require_fire_times(self) -> None:
        if self.is_reboot:
            raise UsageError(f"{REBOOT} runs once when the supervisor starts: it has no fire times")

    def _walls(self, start: datetime) -> croniter:
        """croniter over naive wall-clock times, from the naive ``start``."""
        return croniter(
            self._croniter_text,
            start,
            ret_type=datetime,
            implement_cron_bug=True,  # cronie's day-of-month/day-of-week rule, see module doc
            second_at_beginning=self.has_seconds,
        )

    def _fires(
        self, moment: datetime, *, forward: bool, walls: croniter | None = None
    ) -> Iterator[datetime]:
        """The fire times strictly after (or before) ``moment``, in order, in the zone.

        Each matching wall time names zero, one or two instants (:func:`readings`); they are
        kept per the module doc's DST rules.  Instants come out of order only around a DST
        change (a repeated hour's second pass follows its first), so they wait in a heap until
        no later wall time can give an earlier one: every wall time's instants lie at or
        beyond its ``bound``, and bounds grow with the wall times.  ``walls`` reuses an
        iterator (building one parses the expression).
        """
        self._require_fire_times()
        if moment.tzinfo is None:
            raise ValueError("fire times need an aware datetime")
        zone, system = self.zone, local_zone()
        fixed, in_system_zone = self._is_fixed_time, self.tz is None
        sign = 1 if forward else -1
        # Near a change, a wall time up to the shift behind (ahead of) ``moment``'s own can
        # still name a later (earlier) instant; a second more covers sub-second moments.
        margin = shift_near(moment, zone) + timedelta(seconds=1)
        start = moment.astimezone(zone).replace(tzinfo=None) - sign * margin
        if walls is None:
            walls = self._walls(start)
        else:
            walls.set_current(start, force=True)
        pending: list[tuple[float, datetime]] = []
        last: datetime | None = None
        while True:
            wall = walls.get_next(datetime) if forward else walls.get_prev(datetime)
            first, second = readings(wall, zone)
            if first <= second:  # one instant, or both passes of a repeated hour
                found = [first] if first == second else [first, second]
                bound = first if forward else second
            else:  # a skipped hour: only a system-zone fixed-time job fires, at the change
                bound = offset_change(second, first, zone)
                found = [bound] if fixed and in_system_zone else []
            for instant in found:
                if not (fixed and in_second_pass(instant, system)):
                    heapq.heappush(pending, (sign * instant.timestamp(), instant))
            while pending and pending[0][0] <= sign * bound.timestamp():
                instant = heapq.heappop(pending)[1]
                beyond = instant > moment if forward else instant < moment
                if beyond and instant != last:
                    last = instant
                    yield instant.astimezone(zone)

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
        midnights = local_midnights(begin, end, self.zone)
        probes = sorted([begin, *midnights, *offset_changes([begin, *midnights, end], self.zone)])
        gaps: list[timedelta] = []
        covered_until = begin - timedelta(seconds=1)
        walls = self._walls(begin.astimezone(self.zone).replace(tzinfo=None))  # reused
        for probe in probes:
            if probe <= covered_until:
                continue  # inside the gap just measured: same pair of fire times
            before = next(self._fires(probe, forward=False, walls=walls))
            after = next(self._fires(before, forward=True, walls=walls))
            gaps.append(utc(after) - utc(before))
            covered_until = utc(after)
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
        problem = field_count_problem(fields, allow_seconds)
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


def _values(field: list[int | str], low: int, high: int) -> list[int]:
    """croniter's expansion of one field as numbers (``['*']`` means the whole range)."""
    if field == ["*"]:
        return list(range(low, high + 1))
    return [int(value) for value in field]


