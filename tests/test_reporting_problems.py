"""Errors in *where to report* never stop the job; errors in *what to run* do (issue 9, 19).

A missing token file, a malformed token, a bad URL or a bad ProMonitor budget: the job runs,
is recorded, its report is kept with the reason, one line says what is wrong, the read-only
commands work without a token and doctor names the fix.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.fakes.idlemon_server import TOKEN, IdlemonServer
from tests.helpers import jobwrap

README_TOKEN_FILE = "/run/credentials/jobwrap.service/idlemon-token"


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config" / "jobwrap" / "config.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o600)
    return path


def warnings(result) -> list[str]:
    return [line for line in result.stderr.decode().splitlines() if line.startswith("jobwrap:")]


@pytest.mark.parametrize("env, config", [
    ({}, f'[idlemon]\ntoken_file = "{README_TOKEN_FILE}"\n'),
    ({"JOBWRAP_IDLEMON_TOKEN_FILE": "/nonexistent/token"}, ""),
    ({"JOBWRAP_IDLEMON_TOKEN_FILE": "/dev/zero"}, ""),
    ({"JOBWRAP_IDLEMON_TOKEN": "has a space"}, ""),
    ({"JOBWRAP_IDLEMON_TOKEN": TOKEN, "JOBWRAP_IDLEMON_URL": "http://[::1"}, ""),
    ({"JOBWRAP_IDLEMON_TOKEN": TOKEN, "JOBWRAP_IDLEMON_URL": "ftp://x"}, ""),
    ({"JOBWRAP_IDLEMON_TOKEN": TOKEN, "JOBWRAP_IDLEMON_URL": ""}, '[idlemon]\nurl = "nope"\n'),
])
def test_a_broken_reporting_setting_never_stops_the_job(tmp_path, env, config):
    write_config(tmp_path, config)
    marker = tmp_path / "ran"
    result = jobwrap("run", "-m", "backup", "--", "sh", "-c", f"touch {marker}; exit 0",
                     env=env, timeout=20)
    assert result.returncode == 0 and marker.exists(), result.stderr
    lines = warnings(result)
    assert len(lines) == 1 and "cannot report to Idlemon" in lines[0], lines
    record = json.loads(jobwrap("show", "--json", env=env).stdout)
    assert record["exit_code"] == 0
    assert record["report_status"] == "pending" and record["report_error"]
    for command in (["history"], ["show"], ["config"]):
        assert jobwrap(*command, env=env).returncode == 0, command
    doctor = jobwrap("doctor", env=env)
    assert doctor.returncode == 1
    assert b"FAIL  Idlemon:" in doctor.stdout and b"fix " in doctor.stdout


def test_the_kept_report_is_delivered_once_the_token_is_fixed(tmp_path):
    with IdlemonServer() as server:
        broken = {"JOBWRAP_IDLEMON_URL": server.api_url,
                  "JOBWRAP_IDLEMON_TOKEN_FILE": str(tmp_path / "missing")}
        assert jobwrap("run", "-m", "bar", "--", "true", env=broken).returncode == 0
        assert server.logs == []
        fixed = {"JOBWRAP_IDLEMON_URL": server.api_url, "JOBWRAP_IDLEMON_TOKEN": TOKEN}
        result = jobwrap("flush", env=fixed)
        assert result.returncode == 0, result.stdout
        assert len(server.logs) == 1


@pytest.mark.parametrize("env", [
    {"JOBWRAP_PROMONITOR_RPM": "-1", "JOBWRAP_PROMONITOR_TOKEN": "pm_x"},
    {"JOBWRAP_PROMONITOR_TOKEN": "pm x"},
    {"JOBWRAP_PROMONITOR_TOKEN": "pm_x", "JOBWRAP_PROMONITOR_URL": "http://[::1"},
])
def test_a_broken_promonitor_setting_never_stops_the_job(tmp_path, env):
    marker = tmp_path / "ran"
    result = jobwrap("run", "--promonitor", "abc", "--report", "never", "--",
                     "touch", str(marker), env=env, timeout=20)
    assert result.returncode == 0 and marker.exists(), result.stderr
    lines = warnings(result)
    assert len(lines) == 1 and "ProMonitor" in lines[0], lines
    doctor = jobwrap("doctor", env=env)
    assert b"FAIL  ProMonitor:" in doctor.stdout and b"fix " in doctor.stdout
    assert jobwrap("status", env=env).returncode == 1


def test_errors_in_what_to_run_still_stop_before_the_start(tmp_path):
    marker = tmp_path / "ran"
    for args in (["--timeout", "soon"], ["--schedule", "61 * * * *"], ["--lock-wait", "1s"]):
        result = jobwrap("run", *args, "--", "touch", str(marker),
                         env={"JOBWRAP_IDLEMON_TOKEN_FILE": "/nonexistent"})
        assert result.returncode == 2 and len(result.stderr.splitlines()) == 1, args
    write_config(tmp_path, "[run\n")
    assert jobwrap("run", "--", "touch", str(marker)).returncode == 2
    assert not marker.exists()
