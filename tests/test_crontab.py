"""Crontab files: entries, bad lines with their numbers, assignments, CRON_TZ, and %."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from jobwrap.cron.crontab import parse_crontab, read_crontab, split_percent
from jobwrap.errors import ConfigError

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_entries_keep_line_numbers_and_the_raw_command() -> None:
    crontab = parse_crontab(
        "# a comment\n"
        "\n"
        "   */5 * * * *\tjobwrap run -m a -- echo 'x  y'   \n"
        "\t@daily  backup.sh # a '#' after the schedule is part of the command\n"
    )
    assert crontab.errors == ()
    first, second = crontab.entries
    assert (first.line_no, str(first.schedule), first.command) == (
        3,
        "*/5 * * * *",
        "jobwrap run -m a -- echo 'x  y'",
    )
    assert (second.line_no, str(second.schedule)) == (4, "@daily")
    assert second.command == "backup.sh # a '#' after the schedule is part of the command"


def test_a_bad_line_is_reported_with_its_number_and_the_rest_parse() -> None:
    crontab = parse_crontab(
        "0 9 * * * good-1\n61 * * * * bad\n@fortnightly bad\n0 9 * * *\n0 10 * * * good-2\n",
        source="/etc/jobwrap/crontab",
    )
    assert [e.command for e in crontab.entries] == ["good-1", "good-2"]
    assert [e.line_no for e in crontab.errors] == [2, 3, 4]
    assert str(crontab.errors[0]) == (
        "/etc/jobwrap/crontab:2: invalid cron expression '61 * * * *': "
        "minute 61 is out of range 0-59"
    )
    assert "unknown cron alias '@fortnightly'" in crontab.errors[1].message
    assert "expected 5 time fields then a command" in crontab.errors[2].message
    assert all("\n" not in str(error) for error in crontab.errors)


def test_assignments_apply_to_the_lines_below_them_only() -> None:
    crontab = parse_crontab("A=1\n@hourly first\nA=2\nB=x\n@hourly second\n")
    first, second = crontab.entries
    assert dict(first.env) == {"A": "1"}
    assert dict(second.env) == {"A": "2", "B": "x"}
    assert dict(crontab.env) == {"A": "2", "B": "x"}
    with pytest.raises(TypeError):
        first.env["A"] = "changed"  # type: ignore[index]


@pytest.mark.parametrize(
    ("line", "value"),
    [
        ("MAILTO = ops", "ops"),
        ("GREETING=  hello world  ", "hello world"),
        ('GREETING="  hello world  "', "  hello world  "),
        ("GREETING='say \"hi\"'", 'say "hi"'),
        ("GREETING = 'a b'   ", "a b"),
        ("EMPTY=", ""),
        ('EMPTY=""', ""),
        ("RAW=it's", "it's"),
        (r"RAW=a\tb", r"a\tb"),
    ],
)
def test_values_are_unquoted_like_cronie(line: str, value: str) -> None:
    crontab = parse_crontab(line + "\n")
    assert crontab.errors == ()
    assert list(crontab.env.values()) == [value]


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ('X="unterminated', 'unterminated " quote'),
        ("X='a' b", "text after the closing quote"),
        ("my-var=1", "'my-var' is not a valid environment variable name"),
    ],
)
def test_bad_assignments_are_line_errors(line: str, problem: str) -> None:
    crontab = parse_crontab(line + "\n@hourly still-runs\n")
    assert [error.line_no for error in crontab.errors] == [1]
    assert problem in crontab.errors[0].message
    assert [entry.command for entry in crontab.entries] == ["still-runs"]


def test_cron_tz_sets_the_zone_of_later_lines() -> None:
    crontab = parse_crontab(
        "0 9 * * * local\n"
        "CRON_TZ=Asia/Tokyo\n"
        "0 9 * * * tokyo\n"
        "CRON_TZ=\n"
        "0 9 * * * local-again\n"
        "TZ=Asia/Tokyo\n"
        "0 9 * * * tz-is-only-passed-to-the-job\n"
    )
    assert [entry.schedule.tz for entry in crontab.entries] == [None, "Asia/Tokyo", None, None]
    tokyo = crontab.entries[1].schedule
    assert tokyo.next_after(datetime(2024, 1, 1, 1, tzinfo=UTC)) == datetime(2024, 1, 2, tzinfo=UTC)
    assert crontab.entries[3].env["TZ"] == "Asia/Tokyo"
    assert crontab.tz is None


def test_an_unknown_cron_tz_skips_the_lines_under_it_until_a_valid_one() -> None:
    crontab = parse_crontab(
        "CRON_TZ=Mars/Olympus\n@hourly skipped\nCRON_TZ=UTC\n@hourly runs\n",
    )
    assert [(e.line_no, e.message) for e in crontab.errors] == [
        (1, "unknown time zone 'Mars/Olympus'"),
        (2, "skipped: CRON_TZ on line 1 is not a known zone"),
    ]
    assert [(e.command, e.schedule.tz) for e in crontab.entries] == [("runs", "UTC")]
    assert crontab.tz == "UTC"


def test_cron_tz_with_a_schedule_on_the_same_line_is_explained() -> None:
    crontab = parse_crontab("CRON_TZ=Europe/Paris 0 9 * * * job\n")
    assert "give it its own line" in crontab.errors[0].message


@pytest.mark.parametrize(
    ("text", "command", "stdin"),
    [
        ("plain command", "plain command", None),
        ("mail -s hi ops%line one%line two", "mail -s hi ops", "line one\nline two\n"),
        (r"date +\%Y-\%m-\%d", "date +%Y-%m-%d", None),
        (r"printf '\\'%data", r"printf '\\'", "data\n"),  # "\\" is an escaped backslash
        (r"cat%a\%b\x", "cat", "a%b\\x\n"),  # only \% loses its backslash
        ("cat%", "cat", ""),
        ("cat%a%", "cat", "a\n"),
    ],
)
def test_percent_follows_cronie(text: str, command: str, stdin: str | None) -> None:
    assert split_percent(text) == (command, stdin)


def test_an_entry_with_percent_carries_its_stdin() -> None:
    (entry,) = parse_crontab("@daily sendmail ops%Subject: hi%%body\n").entries
    assert (entry.command, entry.stdin) == ("sendmail ops", "Subject: hi\n\nbody\n")
    crontab = parse_crontab("@daily %only-input\n")
    assert "empty command before '%'" in crontab.errors[0].message


def test_seconds_lines_need_allow_seconds() -> None:
    text = "*/2 * * * * * tick\n"
    (entry,) = parse_crontab(text, allow_seconds=True).entries
    assert (entry.schedule.has_seconds, entry.command) == (True, "tick")
    # Without it the sixth field would start the command: '* tick', a glob run as a command.
    crontab = parse_crontab(text)
    assert crontab.entries == ()
    assert "6 or 7 fields? jobwrap reads 5" in crontab.errors[0].message


@pytest.mark.parametrize(
    ("line", "first_word"),
    [
        ("*/10 * * * * * * echo tick", "*"),  # supercronic: seconds first and a year
        ("0 0 * * * 2030 backup", "2030"),  # a year field
        ("0 0 * * * */2 x", "*/2"),
        ("0 0 * * * 1-5 x", "1-5"),
        ("0 0 * * * 1,3 x", "1,3"),
        ("@daily * x", "*"),
    ],
)
def test_a_command_that_looks_like_a_time_field_is_a_bad_line(line: str, first_word: str) -> None:
    crontab = parse_crontab(line + "\n")
    assert crontab.entries == ()
    (error,) = crontab.errors
    assert f"the command starts with {first_word!r}, which looks like a time field" in error.message


def test_a_command_that_merely_starts_with_a_digit_runs() -> None:
    (entry,) = parse_crontab("0 0 * * * 7z a /backup.7z /srv\n").entries
    assert entry.command == "7z a /backup.7z /srv"


def test_a_nul_byte_makes_a_bad_line_not_a_crash() -> None:
    crontab = parse_crontab("A=x\0y\n0 0 * * * echo a\0b\n0 1 * * * ok\n")
    assert [e.command for e in crontab.entries] == ["ok"]
    assert [(e.line_no, e.message) for e in crontab.errors] == [
        (1, "a NUL byte in the line"), (2, "a NUL byte in the line"),
    ]
    assert "A" not in crontab.entries[0].env


def test_crlf_line_endings_are_tolerated() -> None:
    crontab = parse_crontab("A=1\r\n@hourly job\r\n")
    assert crontab.errors == ()
    assert (crontab.entries[0].command, dict(crontab.entries[0].env)) == ("job", {"A": "1"})


def test_read_crontab_reports_unreadable_files_as_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read crontab .*missing"):
        read_crontab(tmp_path / "missing")
    latin1 = tmp_path / "latin1"
    latin1.write_bytes(b"@daily echo caf\xe9\n")
    with pytest.raises(ConfigError, match="is not UTF-8"):
        read_crontab(latin1)
    good = tmp_path / "crontab"
    good.write_text("@daily echo ok\n")
    crontab = read_crontab(good)
    assert (crontab.source, crontab.entries[0].command) == (str(good), "echo ok")


@pytest.mark.parametrize("name", ["crontab", "jobwrap-cron.crontab"])
def test_the_example_crontabs_parse_cleanly(name: str) -> None:
    crontab = read_crontab(EXAMPLES / name)
    assert crontab.errors == ()
    assert len(crontab.entries) >= 4
    assert all(entry.stdin is None for entry in crontab.entries)  # no stray % in examples
