"""`jobwrap run --promonitor`: metas, the --require-up gate, diagnosis, never delaying the job."""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

from tests.fakes import Reply
from tests.fakes.idlemon_server import TOKEN, IdlemonServer
from tests.fakes.promonitor_server import KEY, MONITOR_API, MONITOR_DB, ProMonitorServer
from tests.helpers import JOBWRAP, jobwrap


@pytest.fixture
def promonitor(monkeypatch):
    with ProMonitorServer(per_minute=50) as server:
        monkeypatch.setenv("JOBWRAP_PROMONITOR_URL", server.url)
        monkeypatch.setenv("JOBWRAP_PROMONITOR_TOKEN", KEY)
        monkeypatch.setenv("JOBWRAP_PROMONITOR_RPM", "50")
        yield server


def summary(tmp_path, *args, **kw):
    path = tmp_path / "s.json"
    result = jobwrap("run", "--summary-json", str(path), *args, **kw)
    record = json.loads(path.read_text())
    return result, record, dict((m["name"], m["value"]) for m in record["metas"])


def test_run_gains_the_dependency_status_meta(promonitor, tmp_path):
    result, _, metas = summary(tmp_path, "--promonitor", MONITOR_API, "--", "echo", "ok")
    assert result.returncode == 0 and result.stdout == b"ok\n"
    assert result.stderr == b""
    assert metas["promonitor_status"] == "up"
    assert [r.path for r in promonitor.received] == [f"/api/v1/monitors/{MONITOR_API}"]


def test_paused_monitor_reports_paused(promonitor, tmp_path):
    promonitor.monitors[0]["is_paused"] = True
    _, _, metas = summary(tmp_path, "--promonitor", MONITOR_API, "--", "true")
    assert metas["promonitor_status"] == "paused"


def test_the_cache_is_shared_between_runs(promonitor, tmp_path):
    for _ in range(3):
        summary(tmp_path, "--promonitor", MONITOR_API, "--", "true")
    assert promonitor.hits == 1


def test_require_up_skips_the_job_when_down_and_sends_no_log(promonitor, tmp_path, monkeypatch):
    with IdlemonServer() as idlemon:
        monkeypatch.setenv("JOBWRAP_IDLEMON_URL", idlemon.api_url)
        monkeypatch.setenv("JOBWRAP_IDLEMON_TOKEN", TOKEN)
        marker = tmp_path / "ran"
        result, record, metas = summary(tmp_path, "-m", "bar", "--promonitor", MONITOR_DB,
                                        "--require-up", "--", "touch", str(marker))
        assert idlemon.received == []
    assert result.returncode == 75
    assert not marker.exists()
    line = result.stderr.decode()
    assert "'Database'" in line and "db.example.com:5432" in line and "down" in line
    assert "Connection timed out" in line
    assert record["skipped"] and metas["skipped"]
    [run] = json.loads(jobwrap("history", "--json").stdout)
    assert run["skipped"] and run["exit_code"] == 75 and run["report_status"] == "none"
    assert b"skipped" in jobwrap("history").stdout


def test_require_up_runs_when_up_and_exit_code_is_overridable(promonitor, tmp_path):
    result, _, metas = summary(tmp_path, "--promonitor", MONITOR_API, "--require-up", "--",
                               "echo", "ran")
    assert result.stdout == b"ran\n" and metas["promonitor_status"] == "up"
    result = jobwrap("run", "--promonitor", MONITOR_DB, "--require-up", "--skipped-exit", "0",
                     "--", "true")
    assert result.returncode == 0


def test_require_up_when_promonitor_cannot_be_asked_runs_unless_strict(tmp_path, monkeypatch):
    monkeypatch.setenv("JOBWRAP_PROMONITOR_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("JOBWRAP_PROMONITOR_TOKEN", KEY)
    result = jobwrap("run", "--promonitor", MONITOR_API, "--require-up", "--", "echo", "ran")
    assert result.returncode == 0 and result.stdout == b"ran\n"
    assert b"running anyway" in result.stderr
    result = jobwrap("run", "--promonitor", MONITOR_API, "--require-up=strict", "--",
                     "echo", "ran")
    assert result.returncode == 75 and result.stdout == b""
    assert b"strict" in result.stderr


def test_failure_is_diagnosed_from_the_dependencys_checks(promonitor, tmp_path):
    result, _, metas = summary(tmp_path, "--promonitor", MONITOR_DB, "--", "sh", "-c", "exit 4")
    assert result.returncode == 4
    assert b"dependency 'Database' was down from" in result.stderr
    assert b"Connection timed out" in result.stderr
    assert metas["promonitor_down_since"] == "2025-06-15T11:00:00Z"


@pytest.mark.parametrize(
    "reply, message",
    [(Reply.json(401, {"error": "Invalid"}), "rejected the API key"),
     (Reply.json(404, {"error": "Monitor not found"}), "or not yours"),
     (Reply.rate_limited("45"), "rate-limited"),
     (Reply.malformed(), "JSON")],
    ids=["401", "404", "429", "malformed"],
)
def test_promonitor_problems_never_change_the_job(promonitor, tmp_path, reply, message):
    promonitor.fail_next(5, reply)
    result, _, metas = summary(tmp_path, "--promonitor", MONITOR_API, "--", "echo", "job")
    assert result.returncode == 0 and result.stdout == b"job\n"
    assert message in result.stderr.decode()
    assert "promonitor_status" not in metas
    assert KEY not in result.stderr.decode()


def test_a_slow_promonitor_does_not_delay_a_job_that_takes_longer(promonitor, tmp_path):
    promonitor.fail_next(1, Reply.slow(0.5))
    _, _, metas = summary(tmp_path, "--promonitor", MONITOR_API, "--", "sleep", "1")
    assert metas["promonitor_status"] == "up"


def test_a_hanging_promonitor_is_abandoned_soon_after_the_job_ends(promonitor, tmp_path):
    promonitor.fail_next(1, Reply.slow(60))
    start = time.monotonic()
    result = jobwrap("run", "--promonitor", MONITOR_API, "--", "true")
    assert result.returncode == 0
    assert time.monotonic() - start < 20  # not the 60 s the server would take


@pytest.mark.slow
def test_forty_concurrent_runs_stay_within_the_free_plan_budget(tmp_path, monkeypatch):
    with ProMonitorServer(per_minute=2) as server:
        monkeypatch.setenv("JOBWRAP_PROMONITOR_URL", server.url)
        monkeypatch.setenv("JOBWRAP_PROMONITOR_TOKEN", KEY)
        procs = [
            subprocess.Popen([*JOBWRAP, "run", "--promonitor", MONITOR_API, "--", "true"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=os.environ)
            for _ in range(40)
        ]
        results = [p.communicate(timeout=120) for p in procs]
        assert [p.returncode for p in procs] == [0] * 40
        assert server.hits <= 2
        assert not any(b"429" in err for _, err in results)


def test_require_up_needs_a_monitor_id():
    result = jobwrap("run", "--require-up", "--", "true")
    assert result.returncode == 2
    assert b"--require-up needs --promonitor" in result.stderr


def test_status_lists_promonitor_monitors_and_linked_dependencies(promonitor, tmp_path):
    config = tmp_path / "config" / "jobwrap" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text(f'[monitors.backup]\npromonitor = "{MONITOR_DB}"\n')
    jobwrap("run", "-m", "backup", "--report", "never", "--", "true")
    result = jobwrap("status")
    text = result.stdout.decode()
    assert "ProMonitor" in text
    assert "Database" in text and "down" in text and MONITOR_API in text
    backup = next(line for line in text.splitlines() if line.startswith("backup"))
    assert backup.rstrip().endswith("Database: down")
    data = json.loads(jobwrap("status", "--json").stdout)
    assert {m["id"] for m in data["promonitor"]} == {MONITOR_API, MONITOR_DB}


def test_doctor_checks_the_promonitor_key_and_linked_ids(promonitor, tmp_path):
    config = tmp_path / "config" / "jobwrap" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text(f'[monitors.a]\npromonitor = "{MONITOR_API}"\n'
                      '[monitors.b]\npromonitor = "0000-not-mine"\n')
    out = jobwrap("doctor").stdout.decode()
    assert f"ok    monitor 'a' depends on ProMonitor monitor {MONITOR_API}" in out
    assert "FAIL  monitor 'b': no ProMonitor monitor '0000-not-mine' (or not yours)" in out
    out = jobwrap("doctor", env={"JOBWRAP_PROMONITOR_TOKEN": "pm_wrong"}).stdout.decode()
    assert "FAIL  ProMonitor: ProMonitor rejected the API key (HTTP 401)" in out
