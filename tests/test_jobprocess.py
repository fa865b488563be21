"""How `jobwrap cron` runs a job line: its argv and its environment."""

from __future__ import annotations

import pytest

from jobwrap.cron.launch import job_argv, job_environment

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
