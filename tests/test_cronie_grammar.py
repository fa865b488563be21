"""Cron fields read as cronie reads them: a table of expressions and their next fire times.

Each row cites where its expectation comes from:

* ``entry.c``: cronie's ``src/entry.c`` (``get_range``/``get_number``/``set_element``), read at
  github.com/cronie-crond/cronie;
* ``crontab(5)``: cronie's manual page;
* ``supercronic``, ``robfig``, ``croniter``: the test suites of those projects, for the cases
  where jobwrap takes a side.

Every row starts from Monday 2024-01-01 00:00 UTC and lists the next four fire times.  A
property test then checks random expressions against a small independent reader of cronie's
grammar and day rule (``cronie_matches``), walking the calendar.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jobwrap.errors import UsageError
from jobwrap.schedule import parse_schedule

START = datetime(2024, 1, 1, tzinfo=UTC)  # a Monday


def fires(expr: str, n: int = 4) -> list[str]:
    return [f"{t:%a %m-%d %H:%M}" for t in parse_schedule(expr, "UTC").next_times(n, START)]


# (expression, the next four fire times from START, source)
TABLE = [
    # Item 1: a range N-N is the value N (get_range: for i in low..high by step).
    ("0 3-3 * * *", ["Mon 01-01 03:00", "Tue 01-02 03:00", "Wed 01-03 03:00",
                     "Thu 01-04 03:00"], "entry.c get_range"),
    ("5-5 * * * *", ["Mon 01-01 00:05", "Mon 01-01 01:05", "Mon 01-01 02:05",
                     "Mon 01-01 03:05"], "entry.c get_range"),
    ("0 0 * * 0-0", ["Sun 01-07 00:00", "Sun 01-14 00:00", "Sun 01-21 00:00",
                     "Sun 01-28 00:00"], "entry.c get_range"),
    ("0 0 * * 7-7", ["Sun 01-07 00:00", "Sun 01-14 00:00", "Sun 01-21 00:00",
                     "Sun 01-28 00:00"], "entry.c: dow 7 is Sunday (bit 0 and 7 merged)"),
    ("0 0 * * sun-sun", ["Sun 01-07 00:00", "Sun 01-14 00:00", "Sun 01-21 00:00",
                         "Sun 01-28 00:00"], "entry.c get_number: names"),
    ("0 0 1-1 * *", ["Thu 02-01 00:00", "Fri 03-01 00:00", "Mon 04-01 00:00",
                     "Wed 05-01 00:00"], "entry.c get_range"),
    ("10-10/5 * * * *", ["Mon 01-01 00:10", "Mon 01-01 01:10", "Mon 01-01 02:10",
                         "Mon 01-01 03:10"], "entry.c get_range (step beyond range: low only)"),
    # Item 2: an upper bound 0 of a range is 7 (R_RANGE_NUM2: low_ > high_ && high_ == 0).
    ("0 0 * * sat-sun", ["Sat 01-06 00:00", "Sun 01-07 00:00", "Sat 01-13 00:00",
                         "Sun 01-14 00:00"], "entry.c R_RANGE_NUM2"),
    ("0 0 * * fri-sun", ["Fri 01-05 00:00", "Sat 01-06 00:00", "Sun 01-07 00:00",
                         "Fri 01-12 00:00"], "entry.c R_RANGE_NUM2"),
    ("0 0 * * 5-0", ["Fri 01-05 00:00", "Sat 01-06 00:00", "Sun 01-07 00:00",
                     "Fri 01-12 00:00"], "entry.c R_RANGE_NUM2"),
    ("0 0 * * mon-sun", ["Tue 01-02 00:00", "Wed 01-03 00:00", "Thu 01-04 00:00",
                         "Fri 01-05 00:00"], "entry.c R_RANGE_NUM2"),
    ("0 0 * * 6-0/2", ["Sat 01-06 00:00", "Sat 01-13 00:00", "Sat 01-20 00:00",
                       "Sat 01-27 00:00"], "entry.c: 6-7/2 is 6 only"),
    # Item 3: steps.
    ("*/60 * * * *", ["Mon 01-01 01:00", "Mon 01-01 02:00", "Mon 01-01 03:00",
                      "Mon 01-01 04:00"], "entry.c: step > range warns, sets low only"),
    ("0 */24 * * *", ["Tue 01-02 00:00", "Wed 01-03 00:00", "Thu 01-04 00:00",
                      "Fri 01-05 00:00"], "entry.c: step > range warns, sets low only"),
    ("0 0 * * */2", ["Tue 01-02 00:00", "Thu 01-04 00:00", "Sat 01-06 00:00",
                     "Sun 01-07 00:00"], "entry.c: * is 0-7, so 0,2,4,6"),
    ("0 0 */40 * 1", ["Mon 04-01 00:00", "Mon 07-01 00:00", "Mon 09-01 00:00",
                      "Mon 12-01 00:00"], "entry.c: */40 is day 1, and * makes it AND"),
    ("0/15 * * * *", ["Mon 01-01 00:15", "Mon 01-01 00:30", "Mon 01-01 00:45",
                      "Mon 01-01 01:00"], "robfig/croniter: N/step = N-max/step "
                                          "(cronie refuses it: --check warns)"),
    ("5/20 * * * *", ["Mon 01-01 00:05", "Mon 01-01 00:25", "Mon 01-01 00:45",
                      "Mon 01-01 01:05"], "robfig/croniter: N/step = N-max/step"),
    ("1-30/10 0 * * *", ["Mon 01-01 00:01", "Mon 01-01 00:11", "Mon 01-01 00:21",
                         "Tue 01-02 00:01"], "crontab(5): ranges with steps"),
    ("0 0 * * mon-fri/2", ["Wed 01-03 00:00", "Fri 01-05 00:00", "Mon 01-08 00:00",
                           "Wed 01-10 00:00"], "entry.c get_number: names in stepped ranges"),
    # The day rule (crontab(5) and entry.c DOM_STAR/DOW_STAR).
    ("0 0 13 * 5", ["Fri 01-05 00:00", "Fri 01-12 00:00", "Sat 01-13 00:00",
                    "Fri 01-19 00:00"], "crontab(5): both restricted, either matches"),
    ("0 0 */2 * 1", ["Mon 01-15 00:00", "Mon 01-29 00:00", "Mon 02-05 00:00",
                     "Mon 02-19 00:00"], "entry.c DOM_STAR: a field starting with * ANDs"),
    ("0 0 1-31 * 1", ["Tue 01-02 00:00", "Wed 01-03 00:00", "Thu 01-04 00:00",
                      "Fri 01-05 00:00"], "entry.c: 1-31 is not *, so OR: every day"),
    ("0 0 *,15 * 1", ["Mon 01-08 00:00", "Mon 01-15 00:00", "Mon 01-22 00:00",
                      "Mon 01-29 00:00"], "entry.c: first character *, so AND"),
    ("0 12 * * 0,7", ["Sun 01-07 12:00", "Sun 01-14 12:00", "Sun 01-21 12:00",
                      "Sun 01-28 12:00"], "crontab(5): 0 and 7 are Sunday"),
    ("0 0 * feb-mar/1 *", ["Thu 02-01 00:00", "Fri 02-02 00:00", "Sat 02-03 00:00",
                           "Sun 02-04 00:00"], "crontab(5): month names"),
    ("@weekly", ["Sun 01-07 00:00", "Sun 01-14 00:00", "Sun 01-21 00:00",
                 "Sun 01-28 00:00"], "crontab(5): @weekly = 0 0 * * 0"),
]


@pytest.mark.parametrize(("expr", "expected", "source"), TABLE, ids=[r[0] for r in TABLE])
def test_next_fire_times_as_cronie(expr: str, expected: list[str], source: str) -> None:
    assert fires(expr) == expected, source


# (expression, part of the message, source)
REFUSED = [
    ("0 0 * * 7/2", "cronie refuses N/step", "entry.c R_NUM1: '/' after a number is EOF"),
    ("5-1 * * * *", "runs backwards", "entry.c sets no bit: jobwrap refuses instead"),
    ("5-0 * * * *", "runs backwards", "entry.c reads 5-7 outside day of week: refused"),
    ("0 0 * * 1~5", "is not supported", "entry.c '~' is random: refused"),
    ("*/0 * * * *", "at least 1", "entry.c R_STEP: step 0 is EOF"),
    ("0 0 L * *", "not a number", "croniter's L: cronie refuses"),
    ("*-5 * * * *", "cannot start a range", "entry.c R_AST"),
]


@pytest.mark.parametrize(("expr", "problem", "source"), REFUSED, ids=[r[0] for r in REFUSED])
def test_forms_refused(expr: str, problem: str, source: str) -> None:
    with pytest.raises(UsageError, match=problem):
        parse_schedule(expr)


@pytest.mark.parametrize(
    ("expr", "note"),
    [
        ("0/15 * * * *", "minute '0/15': cronie refuses N/step; jobwrap reads 0-59/15"),
        ("2/60 * * * *", "cronie refuses N/step"),
        ("*/60 * * * *", "step 60 in '*/60' is larger than the range 0-59: it fires at 0 only"),
        ("10-10/5 * * * *", "it fires at 10 only"),
    ],
)
def test_where_jobwrap_is_more_permissive_it_says_so(expr: str, note: str) -> None:
    assert any(note in n for n in parse_schedule(expr).notes)


def test_portable_forms_carry_no_note() -> None:
    for expr in ("*/15 9-17 * * 1-5", "0 0 * * sat-sun", "@daily", "5-5 * * * *"):
        assert parse_schedule(expr).notes == (), expr


# ---- property: random expressions against an independent reader of cronie's grammar ------

FIELDS = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 7))


def cronie_values(text: str, low: int, high: int, dow: bool) -> set[int]:
    """get_range for each comma item, as entry.c does (plus N/step as N-high/step)."""
    values: set[int] = set()
    for item in text.split(","):
        body, _, step_text = item.partition("/")
        step = int(step_text) if step_text else 1
        if body == "*":
            a, b = low, high
        elif "-" in body:
            a, b = map(int, body.split("-"))
            if dow and a > b and b == 0:
                b = 7
        else:
            a = int(body)
            b = high if step_text else a
        values.update(range(a, b + 1, step))
    if dow and values & {0, 7}:
        values |= {0, 7}
    return values


def cronie_matches(fields: list[str], moment: datetime) -> bool:
    sets = [
        cronie_values(f, lo, hi, i == 4)
        for i, (f, (lo, hi)) in enumerate(zip(fields, FIELDS, strict=True))
    ]
    minute, hour, dom, month, dow = sets
    if moment.minute not in minute or moment.hour not in hour or moment.month not in month:
        return False
    day_ok, weekday_ok = moment.day in dom, moment.isoweekday() % 7 in dow
    if fields[2].startswith("*") or fields[4].startswith("*"):
        return day_ok and weekday_ok
    return day_ok or weekday_ok


def item(low: int, high: int, dow: bool = False) -> st.SearchStrategy[str]:
    number = st.integers(low, high)
    step = st.integers(1, high - low + 3)
    ranges = st.tuples(number, number).filter(
        lambda r: r[0] <= r[1] or (dow and r[1] == 0)
    ).map(lambda r: f"{r[0]}-{r[1]}")
    return st.one_of(
        st.just("*"), number.map(str), ranges,
        st.tuples(st.sampled_from(["*"]), step).map(lambda t: f"{t[0]}/{t[1]}"),
        st.tuples(ranges, step).map(lambda t: f"{t[0]}/{t[1]}"),
        st.tuples(number, step).map(lambda t: f"{t[0]}/{t[1]}") if not dow else number.map(str),
    )


def field(low: int, high: int, dow: bool = False) -> st.SearchStrategy[str]:
    return st.lists(item(low, high, dow), min_size=1, max_size=3).map(",".join)


expressions = st.tuples(
    field(0, 59), field(0, 23), field(1, 28), field(1, 12), field(0, 7, dow=True)
).map(list)


def first_match_after(fields: list[str], start: datetime) -> datetime:
    """Walk days, then the minutes of a matching day (cronie's semantics, brute force)."""
    day = start.replace(hour=0, minute=0)
    for _ in range(5 * 366):
        noon = day.replace(hour=12)
        if cronie_matches([f if i > 1 else "*" for i, f in enumerate(fields)], noon):
            minute = day
            while minute.date() == day.date():
                if minute > start and cronie_matches(fields, minute):
                    return minute
                minute += timedelta(minutes=1)
        day += timedelta(days=1)
    raise AssertionError("no fire time in five years")


@settings(max_examples=150, deadline=None, database=None)
@given(expressions, st.integers(0, 365 * 24 * 60))
def test_fire_times_match_cronies_reading(fields: list[str], offset_min: int) -> None:
    start = START + timedelta(minutes=offset_min)
    schedule = parse_schedule(" ".join(fields), "UTC")
    assert schedule.next_after(start) == first_match_after(fields, start)
