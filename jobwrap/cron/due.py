"""When ``jobwrap cron``'s jobs are due: next fire times, one catch-up, clock jumps (pure).

**At most one catch-up**: when the wall clock jumps forward (NTP step, suspended machine) past
several fire times of a job, the job runs once, now (``catch_up=true`` in its ``start``
event), then continues with its first time after now -- never a burst.  A backward jump of up
to 3 hours does not re-run times already run: jobs wait for their next time after the last
run.  A larger backward jump is taken as a clock correction (a machine booted with a wrong
clock): every job is rescheduled from the new time (``event=clock``).  ``@reboot`` jobs have
no fire times: the supervisor runs them once when it starts.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from jobwrap.schedule import Schedule

REWIND_RESET = timedelta(hours=3)  # a larger backward clock jump reschedules every job


@dataclass(frozen=True)
class Due:
    """A job whose time has come.  ``catch_up``: later fire times were missed and dropped."""

    key: Hashable
    fire_time: datetime
    catch_up: bool = False


@dataclass(frozen=True)
class Tick:
    """What :meth:`Scheduler.advance` found: due jobs, and a backward clock reset if any."""

    due: tuple[Due, ...]
    rewound_s: float | None = None


class Scheduler:
    """Next fire times of every job; pure (``now`` is always given).

    Contract: each call to :meth:`advance` returns each due job once, with the earliest fire
    time it missed, and moves it to its first fire time strictly after ``now``: however far the
    clock jumped, a job is due at most once per call (the one catch-up).
    """

    def __init__(self, rewind_reset: timedelta = REWIND_RESET) -> None:
        self.rewind_reset = rewind_reset
        self._schedules: dict[Hashable, Schedule] = {}
        self._next: dict[Hashable, datetime] = {}
        self._last_now: datetime | None = None

    def update(self, schedules: Mapping[Hashable, Schedule], now: datetime) -> None:
        """Set the jobs; a key already known keeps its next fire time (reload)."""
        self._schedules = {k: s for k, s in schedules.items() if not s.is_reboot}
        self._next = {
            key: self._next.get(key) or schedule.next_after(now)
            for key, schedule in self._schedules.items()
        }
        self._last_now = self._last_now or now

    def next_time(self) -> datetime | None:
        """The earliest next fire time, None without jobs.

        Compared as instants: datetimes sharing a ZoneInfo compare by wall clock, ignoring
        ``fold``, so on the night clocks go back 02:10 CET would look earlier than 02:50 CEST.
        """
        return min(self._next.values(), key=_instant, default=None)

    def advance(self, now: datetime) -> Tick:
        rewound = self._rewound(now)
        if rewound is not None:
            self._next = {k: s.next_after(now) for k, s in self._schedules.items()}
        due = []
        for key, fire in self._next.items():
            if _instant(fire) <= _instant(now):
                schedule = self._schedules[key]
                caught_up = _instant(schedule.next_after(fire)) <= _instant(now)
                due.append(Due(key, fire, catch_up=caught_up))
                self._next[key] = schedule.next_after(now)
        due.sort(key=lambda d: _instant(d.fire_time))
        return Tick(tuple(due), rewound)

    def _rewound(self, now: datetime) -> float | None:
        last, self._last_now = self._last_now, now
        if last is not None and _instant(now) < _instant(last - self.rewind_reset):
            return (now - last).total_seconds()
        return None


def _instant(moment: datetime) -> float:
    return moment.timestamp()
