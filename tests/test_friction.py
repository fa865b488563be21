"""Friction a new user meets (issue 11, item 17), each as the real CLI would be tried."""

from __future__ import annotations

import json

import pytest

from tests.fakes.promonitor_server import KEY, MONITOR_API
from tests.helpers import jobwrap


@pytest.mark.parametrize("option", ["--lock", "--require-up"])
def test_an_optional_value_never_swallows_the_commands_first_word(option, monkeypatch):
    if option == "--require-up":
        monkeypatch.setenv("JOBWRAP_PROMONITOR_URL", "http://127.0.0.1:9")
        monkeypatch.setenv("JOBWRAP_PROMONITOR_TOKEN", KEY)
        option_args = ["--promonitor", MONITOR_API, option]
    else:
        option_args = [option]
    result = jobwrap("run", *option_args, "echo", "hi")
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"hi\n"


def test_lock_takes_its_name_only_attached(state_dir):
    result = jobwrap("run", "--lock=nightly", "echo", "hi")
    assert result.returncode == 0 and result.stdout == b"hi\n"
    assert [p.name.split("-")[0] for p in (state_dir / "locks").glob("*.lock")] == ["nightly"]


def test_a_command_option_that_looks_like_ours_is_the_commands(tmp_path):
    # After the command's first word nothing is jobwrap's, however it looks.
    result = jobwrap("run", "echo", "--lock", "--timeout", "0")
    assert result.returncode == 0 and result.stdout == b"--lock --timeout 0\n"


def test_timeout_0_turns_a_configured_timeout_off_for_one_run(tmp_path, monkeypatch):
    config = tmp_path / "config.toml"
    config.write_text('[run]\ntimeout = "200ms"\n')
    monkeypatch.setenv("JOBWRAP_CONFIG", str(config))
    assert jobwrap("run", "--", "sleep", "0.5").returncode == 124
    summary = tmp_path / "s.json"
    result = jobwrap("run", "--timeout", "0", "--summary-json", str(summary), "--",
                     "sleep", "0.5")
    assert result.returncode == 0, result.stderr
    assert json.loads(summary.read_text())["timed_out"] is False


def test_report_help_shows_a_required_value():
    text = jobwrap("run", "--help").stdout.decode()
    assert "--report POLICY" in text
    assert "--report [" not in text


def test_one_promonitor_failure_is_one_line(monkeypatch):
    monkeypatch.setenv("JOBWRAP_PROMONITOR_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("JOBWRAP_PROMONITOR_TOKEN", KEY)
    failed = jobwrap("run", "--promonitor", MONITOR_API, "--", "false")
    assert failed.returncode == 1
    assert len(failed.stderr.decode().splitlines()) == 1, failed.stderr
    gated = jobwrap("run", "--promonitor", MONITOR_API, "--require-up", "--", "true")
    assert gated.returncode == 0
    assert len(gated.stderr.decode().splitlines()) == 1, gated.stderr


@pytest.mark.parametrize("command", [["cd", "/tmp"], ["cd /tmp && ls"]])
def test_shell_syntax_without_a_shell_gets_a_hint(command):
    result = jobwrap("run", "--", *command)
    assert result.returncode == 127
    [line] = result.stderr.decode().splitlines()
    assert "command not found" in line and "jobwrap run -- sh -c" in line


def test_a_missing_program_gets_no_shell_hint():
    result = jobwrap("run", "--", "no-such-program-here")
    assert result.returncode == 127 and b"sh -c" not in result.stderr
