"""How `jobwrap cron` runs a job line: its argv and its environment."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime

import pytest

from jobwrap.cron.crontab import CronEntry
from jobwrap.cron.eventlog import EventLog
from jobwrap.cron.instances import RunningJobs
from jobwrap.cron.launch import job_argv, job_environment, job_shell
from jobwrap.cron.table import CronJob
from jobwrap.schedule import parse_schedule

JW = ["python", "-m", "jobwrap"]


@pytest.mark.parametrize(
    ("command", "argv"),
    [
        ("jobwrap run -m x -- echo 'a  b'", [*JW, "run", "-m", "x", "--", "echo", "a  b"]),
        ("/usr/local/bin/jobwrap run -- backup.sh", [*JW, "run", "--", "backup.sh"]),
        (
            "jobwrap run --meta rows='loaded ([0-9]+) rows' -- etl",
            [*JW, "run", "--meta", "rows=loaded ([0-9]+) rows", "--", "etl"],
        ),
        ("echo hi", [*JW, "run", "--", "/bin/sh", "-c", "echo hi"]),
        ("jobwrap history", [*JW, "run", "--", "/bin/sh", "-c", "jobwrap history"]),
        ("jobwrap run -- x > /tmp/log 2>&1", ["/bin/sh", "-c", "jobwrap run -- x > /tmp/log 2>&1"]),
        ('jobwrap run -- echo "$HOME"', ["/bin/sh", "-c", 'jobwrap run -- echo "$HOME"']),
        ("jobwrap run -- echo 'unbalanced", ["/bin/sh", "-c", "jobwrap run -- echo 'unbalanced"]),
        ("FOO=1 jobwrap run -- x", [*JW, "run", "--", "/bin/sh", "-c", "FOO=1 jobwrap run -- x"]),
    ],
)
def test_how_a_command_runs(command: str, argv: list[str]) -> None:
    assert job_argv(command, JW) == argv


def test_jobs_do_not_inherit_the_notify_socket_and_get_the_crontab_env() -> None:
    base = {"PATH": "/bin", "NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "1", "HOME": "/root"}
    assert job_environment({"HOME": "/srv", "MAILTO": ""}, base) == {
        "PATH": "/bin", "HOME": "/srv", "MAILTO": "",
    }


def test_shell_is_the_crontabs_shell_assignment_as_in_cron() -> None:
    assert job_shell({}) == "/bin/sh"
    assert job_shell({"SHELL": "/bin/bash"}) == "/bin/bash"
    assert job_argv("[[ -d / ]]", JW, "/bin/bash") == [
        *JW, "run", "--", "/bin/bash", "-c", "[[ -d / ]]",
    ]
    assert job_argv("jobwrap run -- x | y", JW, "/bin/bash") == [
        "/bin/bash", "-c", "jobwrap run -- x | y",
    ]


def test_a_plain_line_does_not_report_to_the_supervisors_monitor() -> None:
    base = {"PATH": "/bin", "JOBWRAP_MONITOR": "everything"}
    assert job_environment({}, base, plain_line=True) == {"PATH": "/bin"}
    assert job_environment({"JOBWRAP_MONITOR": "mine"}, base, plain_line=True)[
        "JOBWRAP_MONITOR"] == "mine"  # the crontab's own assignment counts
    assert job_environment({}, base)["JOBWRAP_MONITOR"] == "everything"  # jobwrap run lines


def test_a_job_that_cannot_be_passed_to_exec_is_an_error_event_not_a_crash() -> None:
    log = io.StringIO()
    jobs = RunningJobs(
        EventLog("json", log), kill_after_s=1, jobwrap_argv=JW, env={"PATH": "/bin"},
        clock=lambda: datetime(2024, 1, 1, tzinfo=UTC), monotonic=lambda: 0.0,
    )
    entry = CronEntry(3, parse_schedule("@daily"), "echo a\0b")  # built past the parser
    jobs.launch(CronJob(entry, ("k",)), None)
    (event,) = [json.loads(line) for line in log.getvalue().splitlines()]
    assert (event["event"], event["line"]) == ("error", 3)
    assert "cannot start" in event["message"] and len(jobs) == 0
