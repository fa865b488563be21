"""Cron schedules: validation messages, fire times, longest gaps, time zones and DST."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from jobwrap.errors import ExitStatus, UsageError
from jobwrap.schedule import Schedule, parse_schedule
from jobwrap.zones import local_zone

PARIS = ZoneInfo("Europe/Paris")


def at(text: str, zone: ZoneInfo | None = None) -> datetime:
    """An aware datetime from ISO text, in ``zone`` (default UTC)."""
    return datetime.fromisoformat(text).replace(tzinfo=zone or UTC)


@pytest.mark.parametrize(
    ("expr", "problem"),
    [
        ("61 * * * *", "minute 61 is out of range 0-59"),
        ("0 24 * * *", "hour 24 is out of range 0-23"),
        ("0 0 * * 8", "day-of-week 8 is out of range 0-7"),
        ("0 0 * foo *", "month 'foo' is neither a number nor a name"),
        ("* * * * * *", "6 fields, expected 5"),
        ("0 0 1 1 * 2030 5", "7 fields, expected 5"),
        ("0 9 * *", "4 fields, expected 5"),
        ("@fortnightly", "unknown cron alias '@fortnightly'"),
        ("@daily 5", "takes no fields after it"),
        ("CRON_TZ=Mars/Olympus 0 9 * * *", "unknown time zone 'Mars/Olympus'"),
        ("CRON_TZ= 0 9 * * *", "expected CRON_TZ=ZONE then a schedule"),
        ("0 0 L * *", "day-of-month 'L' is not a number"),
        ("0 0 * * 1#2", "day-of-week '1#2' is not supported"),
        ("0 0 ? * *", "day-of-month '?' is not supported"),
        ("H * * * *", "minute 'H' is not a number"),
        ("R * * * *", "minute 'R' is not a number"),
        ("5-1 * * * *", "range '5-1' runs backwards"),
        ("*/0 * * * *", "step in '*/0' must be at least 1"),
        ("*-5 * * * *", "'*' cannot start a range"),
        ("1,,2 * * * *", "minute '' is not supported"),
        ("0 0 30 2 *", "never fires"),
        ("   ", "empty cron expression"),
    ],
)
def test_a_bad_expression_is_one_line_usage_error_naming_it(expr: str, problem: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse_schedule(expr)
    message = str(caught.value)
    assert problem in message
    assert "\n" not in message
    assert "Traceback" not in message and "croniter" not in message.lower()
    assert caught.value.exit_status == ExitStatus.USAGE


def test_the_message_names_the_expression() -> None:
    with pytest.raises(UsageError, match=r"'0 0 31 4 \*'.*never fires"):
        parse_schedule("0 0 31 4 *")
    with pytest.raises(UsageError, match=r"invalid cron expression '61 \* \* \* \*': minute"):
        parse_schedule("61 * * * *")


def test_an_unknown_zone_argument_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="unknown time zone 'Europe'"):
        parse_schedule("0 9 * * *", tz="Europe")  # a directory of zones, not a zone


def test_constructing_a_schedule_directly_validates_too() -> None:
    with pytest.raises(UsageError, match="out of range"):
        Schedule("0 25 * * *")


def test_names_and_sunday_as_7_are_accepted() -> None:
    by_name = parse_schedule("0 9 * jan-feb MON-fri", tz="UTC")
    by_number = parse_schedule("0 9 * 1-2 1-5", tz="UTC")
    start = at("2024-01-05T12:00")
    assert by_name.next_times(5, start) == by_number.next_times(5, start)
    assert parse_schedule("0 0 * * 7", tz="UTC").next_after(start) == at("2024-01-07T00:00")


def test_next_times_are_aware_in_the_schedule_zone_and_strictly_after_start() -> None:
    schedule = parse_schedule("0 9 * * 1-5", tz="UTC")
    friday_nine = at("2024-01-05T09:00")
    assert schedule.next_times(3, friday_nine) == [
        at("2024-01-08T09:00"),
        at("2024-01-09T09:00"),
        at("2024-01-10T09:00"),
    ]
    assert schedule.next_after(friday_nine - timedelta(microseconds=1)) == friday_nine


def test_a_naive_datetime_is_refused() -> None:
    with pytest.raises(ValueError, match="aware"):
        parse_schedule("@hourly").next_after(datetime(2024, 1, 1))


@pytest.mark.parametrize(
    ("alias", "equivalent"),
    [
        ("@yearly", "0 0 1 1 *"),
        ("@annually", "0 0 1 1 *"),
        ("@monthly", "0 0 1 * *"),
        ("@weekly", "0 0 * * 0"),
        ("@daily", "0 0 * * *"),
        ("@midnight", "0 0 * * *"),
        ("@HOURLY", "0 * * * *"),
    ],
)
def test_aliases_fire_like_their_five_fields(alias: str, equivalent: str) -> None:
    start = at("2024-02-10T10:30")
    assert parse_schedule(alias, tz="UTC").next_times(3, start) == parse_schedule(
        equivalent, tz="UTC"
    ).next_times(3, start)


def test_reboot_is_its_own_kind_without_fire_times() -> None:
    schedule = parse_schedule("@reboot", tz="Europe/Paris")
    assert schedule.is_reboot
    assert str(schedule) == "@reboot"  # a zone means nothing for it
    assert not parse_schedule("@daily").is_reboot
    with pytest.raises(UsageError, match="no fire times"):
        schedule.next_after(at("2024-01-01T00:00"))
    with pytest.raises(UsageError, match="no fire times"):
        schedule.longest_gap()


def test_seconds_are_opt_in_and_come_first() -> None:
    schedule = parse_schedule("*/2 * * * * *", allow_seconds=True, tz="UTC")
    assert schedule.has_seconds
    assert schedule.next_times(3, at("2024-01-01T00:00:00")) == [
        at("2024-01-01T00:00:02"),
        at("2024-01-01T00:00:04"),
        at("2024-01-01T00:00:06"),
    ]
    # Seconds first: "30 * * * * *" is second 30 of every minute, not every second of minute 30.
    thirty = parse_schedule("30 * * * * *", allow_seconds=True, tz="UTC")
    assert thirty.next_times(2, at("2024-01-01T00:00")) == [
        at("2024-01-01T00:00:30"),
        at("2024-01-01T00:01:30"),
    ]
    assert not parse_schedule("* * * * *", allow_seconds=True).has_seconds
    with pytest.raises(UsageError, match="7 fields, expected 5.*or 6 with seconds first"):
        parse_schedule("* * * * * * *", allow_seconds=True)
    with pytest.raises(UsageError, match="second 60 is out of range"):
        parse_schedule("60 * * * * *", allow_seconds=True)


def test_a_zone_prefix_sets_the_zone_and_beats_the_argument() -> None:
    tokyo = parse_schedule("CRON_TZ=Asia/Tokyo 0 9 * * *", tz="Europe/Paris")
    assert tokyo.tz == "Asia/Tokyo"
    assert tokyo.next_after(at("2024-01-01T01:00")) == at("2024-01-02T00:00")  # 09:00 JST
    assert parse_schedule("TZ=UTC  @daily").tz == "UTC"
    assert parse_schedule("0 9 * * *", tz="Asia/Tokyo").tz == "Asia/Tokyo"


def test_str_reads_back_to_an_equal_schedule() -> None:
    for text in ["CRON_TZ=Europe/Paris 0 9 * * 1-5", "@weekly", "*/5  *  * * *"]:
        schedule = parse_schedule(text)
        assert parse_schedule(str(schedule)) == schedule
        assert hash(parse_schedule(str(schedule))) == hash(schedule)
    assert str(parse_schedule("*/5  *\t* * *")) == "*/5 * * * *"


def test_without_a_zone_the_local_zone_from_tz_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "Asia/Kolkata")
    assert local_zone() == ZoneInfo("Asia/Kolkata")
    fire = parse_schedule("0 9 * * *").next_after(at("2024-01-01T00:00"))
    assert fire.astimezone(UTC) == at("2024-01-01T03:30")  # 09:00 IST is UTC+05:30


def test_day_fields_combine_as_in_cronie() -> None:
    start = at("2024-09-01T00:00")
    # Both restricted: the 13th OR a Friday.
    either = parse_schedule("0 0 13 * 5", tz="UTC").next_times(3, start)
    assert [d.date().isoformat() for d in either] == ["2024-09-06", "2024-09-13", "2024-09-20"]
    # A field starting with "*" makes it AND (cronie's behaviour): odd days that are Mondays.
    both = parse_schedule("0 0 */2 * 1", tz="UTC").next_times(2, start)
    assert [d.date().isoformat() for d in both] == ["2024-09-09", "2024-09-23"]


@pytest.mark.parametrize(
    ("expr", "gap"),
    [
        ("*/5 * * * *", timedelta(minutes=5)),
        ("0 9 * * 1-5", timedelta(hours=72)),  # Friday 09:00 to Monday 09:00
        ("0 0 1 * *", timedelta(days=31)),
        ("0 9,17 * * *", timedelta(hours=16)),  # 17:00 to 09:00, across midnight
        ("0 0 29 2 *", timedelta(days=4 * 365 + 1)),  # leap day to leap day
        ("@hourly", timedelta(hours=1)),
    ],
)
def test_longest_gap(expr: str, gap: timedelta) -> None:
    assert parse_schedule(expr, tz="UTC").longest_gap(at("2024-01-01T00:00")) == gap


def test_longest_gap_does_not_walk_every_fire_time() -> None:
    # ~527,000 fire times a year at one a minute; a walk would take tens of seconds.
    started = time.monotonic()
    assert parse_schedule("* * * * *", tz="UTC").longest_gap(at("2024-01-01T00:00")) == (
        timedelta(minutes=1)
    )
    every_second = parse_schedule("* * * * * *", tz="UTC", allow_seconds=True)
    assert every_second.longest_gap(at("2024-01-01T00:00")) == timedelta(seconds=1)
    assert time.monotonic() - started < 2.0


# Each DST night, mode by mode, is in test_dst.py (Schedule, jobwrap next, Scheduler, Supervisor).


def test_fall_back_gives_a_fixed_time_job_a_25_hour_gap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "Europe/Paris")  # the system zone: cronie's DST rule applies
    schedule = parse_schedule("30 2 * * *")
    fires = schedule.next_times(2, at("2024-10-26T12:00", PARIS))
    assert [f.isoformat() for f in fires] == [
        "2024-10-27T02:30:00+02:00",
        "2024-10-28T02:30:00+01:00",
    ]
    with_seconds = parse_schedule("0 30 2 * * *", allow_seconds=True)
    assert with_seconds.next_times(2, at("2024-10-26T12:00", PARIS)) == fires
    assert schedule.longest_gap(at("2024-10-20T00:00")) == timedelta(hours=25)


def test_longest_gap_counts_dst_as_elapsed_time() -> None:
    start = at("2024-01-01T00:00")
    daily = parse_schedule("CRON_TZ=Europe/Paris 0 9 * * *")
    assert daily.longest_gap(start) == timedelta(hours=25)  # the night clocks go back
    six_hourly = parse_schedule("CRON_TZ=Europe/Paris 0 */6 * * *")
    assert six_hourly.longest_gap(start) == timedelta(hours=7)  # 00:00 CEST to 06:00 CET
    assert parse_schedule("0 */6 * * *", tz="UTC").longest_gap(start) == timedelta(hours=6)


def test_next_from_a_given_time_shows_the_weekday() -> None:
    from tests.helpers import jobwrap

    result = jobwrap("next", "30 2 * * *", "--from", "2024-03-30T12:00", "-n", "2",
                     env={"TZ": "Europe/Paris"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode().splitlines() == [
        "2024-03-31 03:00:00+02:00 Sun", "2024-04-01 02:30:00+02:00 Mon",
    ]
    utc_start = jobwrap("next", "CRON_TZ=Europe/Paris 0 9 * * *", "--from",
                        "2024-01-01T08:30+00:00", "-n", "1")
    assert utc_start.stdout.decode() == "2024-01-02 09:00:00+01:00 Tue\n"  # 09:30 Paris: past
    bad = jobwrap("next", "@daily", "--from", "yesterday")
    assert bad.returncode == 2
    assert bad.stderr.decode() == (
        "jobwrap: --from 'yesterday' is not an ISO 8601 time (e.g. 2024-03-31T01:30)\n"
    )
