"""Time zones: which zone a schedule means, and how wall-clock times map to instants.

Pure ``datetime``/``zoneinfo`` code, shared by :mod:`jobwrap.schedule` (fire times and their
DST rules) and the crontab reader (``CRON_TZ=`` values).  A wall-clock time (a naive datetime)
names one instant, two (the hour clocks go back repeats it) or none (the hour they skip):
:func:`readings` tells which.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, time, timedelta, tzinfo
from functools import cache
from itertools import pairwise
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from jobwrap.errors import UsageError

# Probes this far either side of an instant find a DST change near it: zones change their
# offset at most once in such a window, and by at most a few hours.
_NEAR = timedelta(hours=3)


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


def utc(moment: datetime) -> datetime:
    # Subtracting two datetimes that share a tzinfo ignores their UTC offsets (wall-clock
    # arithmetic), which is wrong across DST changes; UTC makes it elapsed time.
    return moment.astimezone(UTC)


def local_midnights(begin: datetime, end: datetime, zone: tzinfo) -> list[datetime]:
    """Each start of a local day in (begin, end], as UTC instants."""
    first = begin.astimezone(zone).date() + timedelta(days=1)
    last = end.astimezone(zone).date()
    days = (first + timedelta(days=n) for n in range((last - first).days + 1))
    return [utc(datetime.combine(day, time(), tzinfo=zone)) for day in days]


def offset_changes(instants: list[datetime], zone: tzinfo) -> list[datetime]:
    """The instants where the zone's UTC offset changes, between consecutive ``instants``.

    ``instants`` are sorted and less than a couple of days apart, so each interval holds at
    most one change; it is found to the second by bisection.
    """
    changes = []
    for left, right in pairwise(instants):
        if left.astimezone(zone).utcoffset() != right.astimezone(zone).utcoffset():
            changes.append(offset_change(left, right, zone))
    return changes


def offset_change(left: datetime, right: datetime, zone: tzinfo) -> datetime:
    """The first whole second in (left, right] whose UTC offset differs from left's (one change)."""
    offset = left.astimezone(zone).utcoffset()
    low, high = int(left.timestamp()), int(right.timestamp())
    while high - low > 1:
        middle = (low + high) // 2
        if datetime.fromtimestamp(middle, zone).utcoffset() == offset:
            low = middle
        else:
            high = middle
    return datetime.fromtimestamp(high, UTC)


def readings(wall: datetime, zone: tzinfo) -> tuple[datetime, datetime]:
    """The instants (UTC) the naive wall time ``wall`` names in ``zone``, read with fold 0 and 1.

    Equal for an ordinary time; ``first < second`` in an hour the clocks repeat (its two
    passes); ``first > second`` in an hour they skip, where neither is a real reading and the
    change itself lies between them (:func:`offset_change`).
    """
    return utc(wall.replace(tzinfo=zone)), utc(wall.replace(tzinfo=zone, fold=1))


def in_second_pass(instant: datetime, zone: tzinfo) -> bool:
    """True when ``instant``'s wall time in ``zone`` is the second pass of a repeated hour."""
    local = instant.astimezone(zone)
    return local.fold == 1 and local.replace(fold=0).utcoffset() != local.utcoffset()


def shift_near(instant: datetime, zone: tzinfo) -> timedelta:
    """How far ``zone``'s UTC offset moves within a few hours of ``instant`` (0 far from DST)."""
    offsets = [(instant + k * _NEAR).astimezone(zone).utcoffset() for k in (-1, 0, 1)]
    known = [offset for offset in offsets if offset is not None]
    return max(known) - min(known)
