"""`jobwrap cron`'s scheduler: pure, with injected times."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from jobwrap.cron.due import Due, Scheduler
from jobwrap.schedule import parse_schedule

T0 = datetime(2024, 5, 1, 10, 0, 0, tzinfo=UTC)

# ---- scheduling (pure) --------------------------------------------------------------------


def scheduler_with(expr: str, now: datetime = T0) -> tuple[Scheduler, tuple]:
    scheduler = Scheduler()
    key = ("job",)
    scheduler.update({key: parse_schedule(expr, "UTC")}, now)
    return scheduler, key


def test_a_job_fires_at_its_time_and_then_waits_for_the_next() -> None:
    scheduler, key = scheduler_with("*/5 * * * *")
    assert scheduler.next_time() == T0 + timedelta(minutes=5)
    assert scheduler.advance(T0 + timedelta(minutes=4, seconds=59)).due == ()
    tick = scheduler.advance(T0 + timedelta(minutes=5, milliseconds=3))
    assert tick.due == (Due(key, T0 + timedelta(minutes=5), catch_up=False),)
    assert scheduler.next_time() == T0 + timedelta(minutes=10)
    assert scheduler.advance(T0 + timedelta(minutes=5, seconds=1)).due == ()


def test_a_forward_clock_jump_gives_one_catch_up_not_a_burst() -> None:
    scheduler, key = scheduler_with("0 * * * *")  # hourly
    resumed = T0 + timedelta(hours=5, minutes=20)  # suspended across five fire times
    tick = scheduler.advance(resumed)
    assert tick.due == (Due(key, T0 + timedelta(hours=1), catch_up=True),)
    assert scheduler.advance(resumed + timedelta(seconds=1)).due == ()
    assert scheduler.next_time() == T0 + timedelta(hours=6)


def test_a_small_backward_jump_does_not_rerun_fired_times() -> None:
    scheduler, key = scheduler_with("*/10 * * * *")
    assert len(scheduler.advance(T0 + timedelta(minutes=10)).due) == 1
    back = T0 + timedelta(minutes=1)  # the clock was stepped back 9 minutes
    tick = scheduler.advance(back)
    assert tick.due == () and tick.rewound_s is None
    assert scheduler.next_time() == T0 + timedelta(minutes=20)  # not 10:10 again


def test_a_large_backward_jump_reschedules_from_the_new_time() -> None:
    scheduler, key = scheduler_with("0 * * * *", now=T0 + timedelta(days=365))
    corrected = T0  # a machine that booted a year ahead, then NTP fixed the clock
    tick = scheduler.advance(corrected)
    assert tick.due == ()
    assert tick.rewound_s == pytest.approx(-365 * 86400)
    assert scheduler.next_time() == T0 + timedelta(hours=1)


def test_an_update_keeps_the_next_time_of_known_jobs_and_drops_removed_ones() -> None:
    scheduler = Scheduler()
    hourly, daily = parse_schedule("0 * * * *", "UTC"), parse_schedule("@daily", "UTC")
    scheduler.update({("a",): hourly}, T0)
    later = T0 + timedelta(minutes=59, seconds=59)
    scheduler.update({("a",): hourly, ("b",): daily, ("r",): parse_schedule("@reboot")}, later)
    assert scheduler.next_time() == T0 + timedelta(hours=1)
    tick = scheduler.advance(T0 + timedelta(hours=1))
    assert [d.key for d in tick.due] == [("a",)]
    scheduler.update({("b",): daily}, T0 + timedelta(hours=1))
    assert scheduler.next_time() == T0 + timedelta(days=1) - timedelta(hours=10)


def test_on_the_night_clocks_go_back_the_earliest_instant_comes_first() -> None:
    # Paris, 2024-10-27: 02:50 CEST (00:50 UTC) comes before 02:10 CET (01:10 UTC), though
    # its wall clock is later; comparing wall clocks would start the first job 20 min late.
    paris = ZoneInfo("Europe/Paris")
    now = datetime(2024, 10, 27, 0, 45, tzinfo=UTC)
    first = parse_schedule("50 2 * * *", "Europe/Paris")  # fixed time: first pass only
    second = parse_schedule("10 * * * *", "Europe/Paris")  # wildcard hour: both passes
    scheduler = Scheduler()
    scheduler.update({("first",): first, ("second",): second}, now)
    expected = datetime(2024, 10, 27, 2, 50, tzinfo=paris)  # fold=0: CEST
    assert scheduler.next_time() == expected
    assert scheduler.next_time().utcoffset() == timedelta(hours=2)
    tick = scheduler.advance(datetime(2024, 10, 27, 0, 50, tzinfo=UTC))
    assert [d.key for d in tick.due] == [("first",)]
    assert scheduler.next_time().astimezone(UTC) == datetime(2024, 10, 27, 1, 10, tzinfo=UTC)
