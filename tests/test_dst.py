"""DST nights as cronie's crond runs them, through `jobwrap next --from`, the Scheduler and the
real Supervisor (an injected clock, ticking every minute through the night).

Europe/Paris, 2024: on 03-31 the clock goes 01:59:59 CET -> 03:00 CEST (02:xx never happens);
on 10-27 it goes 02:59:59 CEST -> 02:00 CET (02:xx happens twice).  The expected times come from
cronie's ``src/cron.c`` (``main``'s wake-up cases and ``find_jobs``) and ``src/entry.c`` (the
``MIN_STAR``/``HR_STAR`` flags that make a job *wildcard*: ``*`` starts its minute or hour):

* system zone: a jump forward of up to 3 h runs wildcard jobs for the new minute only and
  fixed-time jobs for every skipped minute, at once; a jump back runs only wildcard jobs until
  the clock has caught up (``case negative``);
* ``CRON_TZ``: each real minute is matched against the wall clock in that zone (``maketime``),
  with no DST rule, except that ``find_jobs`` is never asked for fixed-time jobs while the
  system clock repeats an hour.
"""

from __future__ import annotations

import io
import json
import os
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from jobwrap.cron.due import Scheduler
from jobwrap.cron.supervisor import Supervisor
from jobwrap.schedule import parse_schedule
from tests.helpers import jobwrap

SPRING, AUTUMN = "2024-03-31T00:30+01:00", "2024-10-27T01:30+02:00"

# (system zone, cron line, from, the fire times that night) -- every one ISO with its offset.
NIGHTS = [
    # -- system zone: crond's wall-clock walk
    ("Europe/Paris", "30 2 * * *", SPRING,  # fixed time: at the change
     ["2024-03-31T03:00+02:00", "2024-04-01T02:30+02:00"]),
    ("Europe/Paris", "0,30 2 * * *", SPRING,  # several skipped times: once (a difference)
     ["2024-03-31T03:00+02:00", "2024-04-01T02:00+02:00"]),
    ("Europe/Paris", "0 3 * * *", SPRING,
     ["2024-03-31T03:00+02:00", "2024-04-01T03:00+02:00"]),
    ("Europe/Paris", "*/10 2 * * *", SPRING,  # wildcard: not that night (README, issue 10.5)
     ["2024-04-01T02:00+02:00", "2024-04-01T02:10+02:00"]),
    ("Europe/Paris", "*/20 * * * *", SPRING,
     ["2024-03-31T00:40+01:00", "2024-03-31T01:00+01:00", "2024-03-31T01:20+01:00",
      "2024-03-31T01:40+01:00", "2024-03-31T03:00+02:00", "2024-03-31T03:20+02:00"]),
    ("Europe/Paris", "30 * * * *", SPRING,
     ["2024-03-31T01:30+01:00", "2024-03-31T03:30+02:00"]),
    ("Europe/Paris", "30 2 * * *", AUTUMN,  # fixed time: first pass only
     ["2024-10-27T02:30+02:00", "2024-10-28T02:30+01:00"]),
    ("Europe/Paris", "*/20 2 * * *", AUTUMN,  # wildcard: both passes
     ["2024-10-27T02:00+02:00", "2024-10-27T02:20+02:00", "2024-10-27T02:40+02:00",
      "2024-10-27T02:00+01:00", "2024-10-27T02:20+01:00", "2024-10-27T02:40+01:00",
      "2024-10-28T02:00+01:00"]),
    ("Europe/Paris", "@hourly", AUTUMN,
     ["2024-10-27T02:00+02:00", "2024-10-27T02:00+01:00", "2024-10-27T03:00+01:00"]),
    # -- CRON_TZ on a UTC machine: the zone's wall clock, no DST rule
    ("UTC", "CRON_TZ=Europe/Paris 30 2 * * *", SPRING,  # skipped
     ["2024-04-01T02:30+02:00"]),
    ("UTC", "CRON_TZ=Europe/Paris */10 2 * * *", SPRING,
     ["2024-04-01T02:00+02:00"]),
    ("UTC", "CRON_TZ=Europe/Paris 0 * * * *", SPRING,
     ["2024-03-31T01:00+01:00", "2024-03-31T03:00+02:00"]),
    ("UTC", "CRON_TZ=Europe/Paris 30 2 * * *", AUTUMN,  # twice
     ["2024-10-27T02:30+02:00", "2024-10-27T02:30+01:00", "2024-10-28T02:30+01:00"]),
    ("UTC", "CRON_TZ=Europe/Paris 45 2 * * *", AUTUMN,
     ["2024-10-27T02:45+02:00", "2024-10-27T02:45+01:00", "2024-10-28T02:45+01:00"]),
    ("UTC", "CRON_TZ=Europe/Paris */30 2 * * *", AUTUMN,
     ["2024-10-27T02:00+02:00", "2024-10-27T02:30+02:00", "2024-10-27T02:00+01:00",
      "2024-10-27T02:30+01:00"]),
    # -- CRON_TZ while the system clock itself repeats an hour: no fixed-time job then
    ("Europe/Paris", "CRON_TZ=Europe/Paris 30 2 * * *", SPRING,
     ["2024-04-01T02:30+02:00"]),
    ("Europe/Paris", "CRON_TZ=Europe/Paris 30 2 * * *", AUTUMN,
     ["2024-10-27T02:30+02:00", "2024-10-28T02:30+01:00"]),
    ("Europe/Paris", "CRON_TZ=Europe/Paris */30 2 * * *", AUTUMN,
     ["2024-10-27T02:00+02:00", "2024-10-27T02:30+02:00", "2024-10-27T02:00+01:00",
      "2024-10-27T02:30+01:00"]),
    ("Europe/Paris", "CRON_TZ=UTC 30 1 * * *", AUTUMN,  # 01:30Z is 02:30 CET, second pass
     ["2024-10-28T01:30+00:00"]),
]
IDS = [f"{zone}|{line}|{start[:10]}" for zone, line, start, _ in NIGHTS]


def instants(texts: list[str]) -> list[datetime]:
    return [datetime.fromisoformat(text).astimezone(UTC) for text in texts]


@pytest.fixture
def system_zone(monkeypatch: pytest.MonkeyPatch):
    def use(zone: str) -> None:
        monkeypatch.setenv("TZ", zone)  # what local_zone() and crond read

    return use


@pytest.mark.parametrize(("zone", "line", "start", "expected"), NIGHTS, ids=IDS)
def test_schedule_fire_times(system_zone, zone, line, start, expected) -> None:
    system_zone(zone)
    schedule = parse_schedule(line)
    fires = schedule.next_times(len(expected), datetime.fromisoformat(start))
    assert [f.isoformat(timespec="minutes") for f in fires] == expected
    # each one also from the one before it, and backwards (slot_at and doctor's gaps use that)
    assert [schedule.next_after(f) for f in fires[:-1]] == fires[1:]
    assert [schedule._previous(f) for f in fires[1:]] == fires[:-1]


@pytest.mark.parametrize(("zone", "line", "start", "expected"), NIGHTS, ids=IDS)
def test_jobwrap_next_from(zone, line, start, expected) -> None:
    result = jobwrap("next", line, "--from", start, "-n", str(len(expected)), env={"TZ": zone})
    assert result.returncode == 0, result.stderr
    shown = [" ".join(row.split()[:2]) for row in result.stdout.decode().splitlines()]
    assert instants([s.replace(" ", "T") for s in shown]) == instants(expected)


def night(start: str, expected: list[str]) -> list[datetime]:
    """Every minute (plus a second) from ``start`` to just after the last expected time."""
    first, last = instants([start, expected[-1]])
    minutes = int((last - first) / timedelta(minutes=1)) + 2
    return [first + timedelta(minutes=n, seconds=1) for n in range(minutes)]


@pytest.mark.parametrize(("zone", "line", "start", "expected"), NIGHTS, ids=IDS)
def test_scheduler_ticking_through_the_night(system_zone, zone, line, start, expected) -> None:
    system_zone(zone)
    ticks = night(start, expected)
    scheduler = Scheduler()
    scheduler.update({("job",): parse_schedule(line)}, ticks[0])
    fired = [due.fire_time for now in ticks for due in scheduler.advance(now).due]
    assert [utc_time.astimezone(UTC) for utc_time in fired] == instants(expected)


class Clock:
    """The injected clock: the test sets ``now``."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.mark.parametrize(("zone", "line", "start", "expected"), NIGHTS, ids=IDS)
def test_the_supervisor_through_the_night(
    system_zone, tmp_path: Path, zone, line, start, expected
) -> None:
    system_zone(zone)
    crontab = tmp_path / "crontab"
    if line.startswith("CRON_TZ="):
        zone_line, fields = line.split(" ", 1)
        crontab.write_text(f"{zone_line}\n{fields} echo night\n")
    else:
        crontab.write_text(f"{line} echo night\n")
    ticks = night(start, expected)
    clock, log = Clock(ticks[0]), io.StringIO()
    true = shutil.which("true")
    assert true
    supervisor = Supervisor(crontab, log_format="json", clock=clock, log_stream=log,
                            jobwrap_argv=(true,), env={"PATH": "/usr/bin:/bin", "TZ": zone})
    # The loop of Supervisor.run, one cycle a minute, without its sleeps and signal handling.
    supervisor.table = supervisor._load_initial()
    supervisor._start()
    try:
        for now in ticks:
            clock.now = now
            supervisor._cycle()
            for pid in list(supervisor.jobs.running):  # let it end before the next minute
                os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
            supervisor.jobs.reap()
    finally:
        supervisor.jobs.kill_all()
    events = [json.loads(row) for row in log.getvalue().splitlines()]
    starts = [e for e in events if e["event"] == "start"]
    scheduled = [datetime.fromisoformat(e["scheduled"].replace("Z", "+00:00")) for e in starts]
    assert scheduled == instants(expected)
    assert all(e["late_ms"] < 60_000 and not e.get("catch_up") for e in starts)
