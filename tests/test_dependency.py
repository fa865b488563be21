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
    assert backup.rstrip().endswith("Database: down  #")  # then RECENT, the sparkline
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


# Fail closed when strict; malformed values never crash (issue 9, item 20) --------------------


def _strict_run(tmp_path, *extra: str, env: dict | None = None):
    marker = tmp_path / "ran"
    result = jobwrap("run", "--promonitor", MONITOR_API, "--require-up=strict", *extra, "--",
                     "touch", str(marker), env=env)
    return result, marker.exists()


def test_strict_without_a_key_refuses(tmp_path, monkeypatch):
    monkeypatch.delenv("JOBWRAP_PROMONITOR_TOKEN", raising=False)
    result, ran = _strict_run(tmp_path)
    assert (result.returncode, ran) == (75, False)
    assert b"API key" in result.stderr and b"strict" in result.stderr
    [run] = json.loads(jobwrap("history", "--json").stdout)
    assert run["skipped"]


def test_without_strict_a_missing_key_still_runs(tmp_path, monkeypatch):
    monkeypatch.delenv("JOBWRAP_PROMONITOR_TOKEN", raising=False)
    result = jobwrap("run", "--promonitor", MONITOR_API, "--require-up", "--", "true")
    assert result.returncode == 0 and b"running without the cross-check" in result.stderr


def test_strict_with_a_broken_cache_refuses(promonitor, tmp_path, state_dir):
    state_dir.mkdir(parents=True, exist_ok=True)
    (state_dir / "promonitor.sqlite3").write_bytes(b"this is not a database" * 100)
    result, ran = _strict_run(tmp_path)
    assert (result.returncode, ran) == (75, False)
    assert b"strict" in result.stderr
    assert promonitor.hits == 0


def test_strict_with_a_malformed_answer_refuses(promonitor, tmp_path):
    promonitor.fail_next(5, Reply.malformed())
    result, ran = _strict_run(tmp_path)
    assert (result.returncode, ran) == (75, False)


@pytest.mark.parametrize(
    "field, value",
    [("interval_seconds", 10**400), ("interval_seconds", 10**12),
     ("created_at", "0001-01-01T00:00:00+05:00"), ("created_at", "9999-12-31T23:59:59-05:00")],
    ids=["interval-10^400", "interval-10^12", "year-0001", "year-9999"],
)
def test_malformed_monitor_values_never_crash_status_doctor_or_the_gate(promonitor, tmp_path,
                                                                        field, value):
    promonitor.monitors[0][field] = value
    config = tmp_path / "config" / "jobwrap" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text(f'[monitors.a]\npromonitor = "{MONITOR_API}"\n')
    for args in (["status"], ["status", "--json"], ["doctor"],
                 ["run", "--promonitor", MONITOR_API, "--", "true"],
                 ["run", "--promonitor", MONITOR_API, "--require-up", "--", "true"]):
        result = jobwrap(*args)
        err = result.stderr.decode()
        assert "Traceback" not in err and "internal error" not in err, (args, err)
        assert result.returncode in (0, 1), (args, result.returncode, err)
    result, ran = _strict_run(tmp_path)
    assert "Traceback" not in result.stderr.decode()
    if field == "interval_seconds" and value == 10**12:
        assert ran  # a long interval is odd but readable
    else:
        assert (result.returncode, ran) == (75, False)


def test_a_check_in_year_0001_never_crashes_the_diagnosis(promonitor, tmp_path):
    promonitor.checks[MONITOR_DB][0]["checked_at"] = "0001-01-01T00:00:00+01:00"
    result = jobwrap("run", "--promonitor", MONITOR_DB, "--", "sh", "-c", "exit 3")
    assert result.returncode == 3
    assert b"Traceback" not in result.stderr and b"failed (" not in result.stderr
    assert b"no ProMonitor diagnosis" in result.stderr


# Hostile answers and echoed keys (issue 9, items 14 and 17) ----------------------------------


@pytest.mark.parametrize(
    "reply",
    [Reply.dripping(every_s=0.2), Reply.dripping(every_s=0.2, headers_too=False),
     Reply.endless_chunked(), Reply.huge()],
    ids=["drip", "drip-body", "endless", "huge"],
)
def test_require_up_against_a_hostile_promonitor_starts_the_job_in_time(promonitor, tmp_path,
                                                                       reply):
    promonitor.fail_next(100, reply)
    start = time.monotonic()
    result = jobwrap("run", "--promonitor", MONITOR_API, "--require-up", "--", "echo", "ran",
                     timeout=40)
    took = time.monotonic() - start
    assert result.returncode == 0 and result.stdout == b"ran\n"
    assert b"running anyway" in result.stderr
    assert took < 9, took  # a dripping ProMonitor kept the job from ever starting


def test_an_echoed_key_is_never_printed_or_cached(promonitor, tmp_path, state_dir):
    promonitor.monitors[0]["name"] = f"API {KEY.upper()}"
    promonitor.monitors[1]["url"] = f"https://x.example/?k={KEY}"
    promonitor.checks[MONITOR_DB][0]["error_message"] = f"Bearer {KEY}"
    out = b""
    for args in (["status"], ["doctor"],
                 ["run", "--promonitor", MONITOR_API, "--", "true"],
                 ["run", "--promonitor", MONITOR_DB, "--require-up", "--", "true"]):
        result = jobwrap(*args)
        out += result.stdout + result.stderr
    assert b"[redacted]" in out
    assert KEY.lower().encode() not in out.lower()
    for path in state_dir.rglob("*"):
        if path.is_file():
            assert KEY.lower().encode() not in path.read_bytes().lower(), path


def test_an_echoed_key_in_an_error_is_never_printed_or_stored(promonitor, tmp_path, state_dir):
    promonitor.fail_next(5, Reply.json(500, {"error": f"no key BEARER {KEY.upper()}"}))
    result = jobwrap("run", "--promonitor", MONITOR_API, "--", "true")
    assert b"[redacted]" in result.stderr
    assert KEY.lower().encode() not in result.stderr.lower()
    for path in state_dir.rglob("*"):
        if path.is_file():
            assert KEY.lower().encode() not in path.read_bytes().lower(), path


# The request budget is per host and key, not per state dir (issue 9, item 21) ----------------


def test_three_state_dirs_share_the_hosts_request_budget(tmp_path, monkeypatch):
    with ProMonitorServer(per_minute=50) as server:
        monkeypatch.setenv("JOBWRAP_PROMONITOR_URL", server.url)
        monkeypatch.setenv("JOBWRAP_PROMONITOR_TOKEN", KEY)
        monkeypatch.setenv("JOBWRAP_PROMONITOR_RPM", "2")
        for user in ("alice", "bob", "carol"):  # three users' jobs, each its own state dir
            result = jobwrap("run", "--promonitor", MONITOR_API, "--", "true",
                             env={"JOBWRAP_STATE_DIR": str(tmp_path / user)})
            assert result.returncode == 0
        assert server.hits == 2  # was 3: one budget per state dir
