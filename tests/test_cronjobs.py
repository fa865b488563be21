"""`jobwrap cron`'s job table: directives, job identity, and the `--check` report."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from jobwrap.cli.run import run_line_problem
from jobwrap.cron.check import check
from jobwrap.cron.table import parse_jobs

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
    report = check(crontab, T0 + timedelta(minutes=1))
    assert not report.ok
    lines = list(report.lines)
    assert lines[0] == f"{crontab}: 2 jobs, 1 bad line"
    assert lines[2].split()[:6] == ["2", "CRON_TZ=UTC", "*/15", "*", "*", "*"]
    assert "2024-05-01 10:15:00+00:00" in lines[2] and lines[2].endswith("jobwrap run -m a -- a.sh")
    assert "at start" in lines[3] and "allow" in lines[3]
    assert lines[4:6] == [
        "bad lines (skipped):",
        f"  {crontab}:3: expected 5 time fields then a command: 'bad line'",
    ]


def check_text(tmp_path: Path, text: str, **kw):
    crontab = tmp_path / "crontab"
    crontab.write_text(text)
    return check(crontab, T0, validate_run=run_line_problem, env={"PATH": "/usr/bin:/bin"}, **kw)


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("jobwrap run --timeot 5m -- true", "No such option '--timeot'"),
        ("jobwrap run --meta 'x=(' -- true", "--meta x: invalid regex"),
        ("jobwrap run --meta duration_ms=x -- true", "--meta 'duration_ms': that name is reserved"),
        ("jobwrap run --require-up -- true", "--require-up needs --promonitor"),
        ("jobwrap run --timeout soon -- true", "Invalid value for '--timeout'"),
        ("/usr/local/bin/jobwrap run -m backup", "no command given"),
    ],
)
def test_check_runs_jobwrap_run_lines_through_the_real_parser(
    tmp_path: Path, line: str, problem: str
) -> None:
    report = check_text(tmp_path, f"0 3 * * * {line}\n0 4 * * * jobwrap run -m ok -- true\n")
    assert not report.ok
    assert report.lines[0].endswith("1 job, 1 bad line")
    (bad,) = [text for text in report.lines if text.startswith(f"  {tmp_path}")]
    assert f"crontab:1: jobwrap run: {problem}" in bad


def test_check_accepts_assignments_alone(tmp_path: Path) -> None:
    report = check_text(tmp_path, "SHELL=/bin/bash\nPATH=/usr/bin\n")
    assert report.ok
    assert report.lines == (f"{tmp_path / 'crontab'}: 0 jobs, 0 bad lines",)


def test_check_warns_about_mailto_a_user_field_and_cronie_differences(tmp_path: Path) -> None:
    report = check_text(
        tmp_path,
        'MAILTO=ops@example.com\n*/5 * * * * root /usr/bin/backup\n0/15 * * * * tick\n'
        'MAILTO=""\n*/60 * * * * hourly\n',
    )
    assert report.ok  # warnings do not make a line bad
    start = report.lines.index("warnings:")
    warnings = report.lines[start + 1 : start + 5]
    assert warnings[0].startswith(f"  {tmp_path}/crontab:1: MAILTO is ignored: jobwrap cron")
    assert "crontab:2: the command starts with 'root', a user name" in warnings[1]
    assert "crontab:3: minute '0/15': cronie refuses N/step" in warnings[2]
    assert "crontab:5: minute step 60 in '*/60' is larger than the range" in warnings[3]


def test_check_lists_the_next_runs_across_lines_in_time_order(tmp_path: Path) -> None:
    report = check_text(tmp_path, "CRON_TZ=UTC\n0 11 * * * b\n30 10 * * * a\n@reboot r\n")
    start = report.lines.index("next 10 runs:")
    upcoming = list(report.lines[start + 1 : start + 4])
    assert upcoming == [
        "  2024-05-01 10:30:00+00:00 Wed  line 3: a",
        "  2024-05-01 11:00:00+00:00 Wed  line 2: b",
        "  2024-05-02 10:30:00+00:00 Thu  line 3: a",
    ]


def test_check_reads_stdin_with_a_dash() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "jobwrap", "cron", "--check", "-"],
        input="A=1\n0 3 * * * jobwrap run --timeot 1m -- x\n", capture_output=True, text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "-:2: jobwrap run: No such option '--timeot'" in result.stdout
