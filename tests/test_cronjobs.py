"""`jobwrap cron`'s job table: directives, job identity, and the `--check` report."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from jobwrap.cron.table import check, parse_jobs

T0 = datetime(2024, 5, 1, 10, 0, 0, tzinfo=UTC)

# ---- the job table and its directives -----------------------------------------------------


def test_a_directive_applies_to_the_next_job_line_only() -> None:
    table = parse_jobs(
        "# jobwrap: overlap=allow\n"
        "# an ordinary comment may come between\n"
        "\n"
        "* * * * * first\n"
        "* * * * * second\n"
        "#jobwrap: overlap=replace\n"
        "@hourly third\n"
    )
    assert table.errors == ()
    assert [(j.line_no, j.overlap) for j in table.jobs] == [
        (4, "allow"), (5, "skip"), (7, "replace"),
    ]


def test_a_bad_directive_is_a_bad_line_and_skips_its_job() -> None:
    table = parse_jobs(
        "# jobwrap: overlap=sometimes\n* * * * * a\n"
        "# jobwrap: retries=3\n* * * * * b\n"
        "* * * * * c\n"
    )
    assert [j.entry.command for j in table.jobs] == ["c"]
    assert [(e.line_no, e.message) for e in table.errors] == [
        (1, "overlap='sometimes': choose skip, allow, replace"),
        (2, "skipped: bad directive on line 1"),
        (3, "unknown jobwrap directive 'retries=3' (known: overlap=POLICY)"),
        (4, "skipped: bad directive on line 3"),
    ]


def test_a_directive_must_precede_a_job_line() -> None:
    table = parse_jobs(
        "# jobwrap: overlap=allow\nPATH=/bin\n* * * * * a\n# jobwrap: overlap=allow\n"
    )
    assert [(j.line_no, j.overlap) for j in table.jobs] == [(3, "skip")]
    assert [e.line_no for e in table.errors] == [1, 4]
    assert all("must precede a job line" in e.message for e in table.errors)


def test_identical_lines_are_distinct_jobs_and_keys_ignore_line_numbers() -> None:
    first = parse_jobs("* * * * * a\n* * * * * a\n")
    moved = parse_jobs("# new comment\n\n* * * * * a\n* * * * * a\n")
    assert len({j.key for j in first.jobs}) == 2
    assert [j.key for j in first.jobs] == [j.key for j in moved.jobs]
    other_env = parse_jobs("X=1\n* * * * * a\n")
    assert other_env.jobs[0].key != first.jobs[0].key


# ---- jobwrap cron --check ---------------------------------------------------------------


def test_check_lists_each_job_with_its_next_time_then_the_bad_lines(tmp_path: Path) -> None:
    crontab = tmp_path / "crontab"
    crontab.write_text(
        "CRON_TZ=UTC\n*/15 * * * * jobwrap run -m a -- a.sh\nbad line\n"
        "# jobwrap: overlap=allow\n@reboot warm.sh\n"
    )
    text, ok = check(crontab, T0 + timedelta(minutes=1))
    assert not ok
    lines = text.splitlines()
    assert lines[0] == f"{crontab}: 2 jobs, 1 bad line"
    assert lines[2].split()[:6] == ["2", "CRON_TZ=UTC", "*/15", "*", "*", "*"]
    assert "2024-05-01 10:15:00+00:00" in lines[2] and lines[2].endswith("jobwrap run -m a -- a.sh")
    assert "at start" in lines[3] and "allow" in lines[3]
    assert lines[4:] == [
        "bad lines (skipped):",
        f"  {crontab}:3: expected 5 time fields then a command: 'bad line'",
    ]
