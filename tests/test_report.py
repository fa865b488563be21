"""Reporting to Idlemon: the exact request, the policies, delivery without loss."""

from __future__ import annotations

import json
import resource
import signal
import sqlite3
import subprocess
import time

import pytest

from jobwrap.store.history import DB_NAME
from tests.fakes import Reply
from tests.fakes.idlemon_server import TOKEN, IdlemonServer
from tests.helpers import JOBWRAP, jobwrap

CLOSED_PORT_URL = "http://127.0.0.1:9/api"  # discard port: connection refused at once




def metas_of(log) -> dict[str, str]:
    return dict(log.metas)


def history(*args: str) -> list[dict]:
    return json.loads(jobwrap("history", "--json", "--limit", "200", *args).stdout)


def posts(server) -> list:
    return [r for r in server.received if r.method == "POST"]


def test_a_successful_run_sends_the_exact_request(idlemon, env):
    result = jobwrap("run", "-m", "bar", "--meta", "rows=processed (\\d+)", "--",
                     "sh", "-c", "echo processed 42; sleep 1.2")
    assert result.returncode == 0
    assert result.stderr == b""
    [request] = posts(idlemon)
    assert request.path == "/api/monitors/bar/logs"
    assert request.header("Accept") == "application/json"
    assert request.header("Content-Type") == "application/json"
    assert request.header("Api-Token") == TOKEN
    body = request.body
    assert set(body) == {"duration", "metas"}
    assert body["duration"] == 1  # whole seconds
    names = [m["name"] for m in body["metas"]]
    assert names == ["exit_code", "stdout_lines", "stderr_lines", "duration_ms", "run_id",
                     "host", "rows"]
    assert all(isinstance(m["value"], str) for m in body["metas"])
    [run] = history()
    assert run["report_status"] == "sent"
    assert {"name": "run_id", "value": run["run_id"]} in body["metas"]


def test_a_slug_that_could_change_the_url_is_refused_before_the_run(idlemon, env):
    assert jobwrap("run", "-m", "backup job/1", "--", "true").returncode == 2
    assert jobwrap("run", "-m", "../projects", "--", "true").returncode == 2
    jobwrap("run", "-m", "db-backup_2.x", "--", "true")
    [request] = posts(idlemon)
    assert request.path == "/api/monitors/db-backup_2.x/logs"


@pytest.mark.parametrize(
    "policy, code, sent",
    [("success", 0, True), ("success", 3, False), ("always", 3, True), ("never", 0, False)],
)
def test_report_policy(idlemon, env, policy, code, sent):
    result = jobwrap("run", "-m", "bar", "--report", policy, "--", "sh", "-c", f"exit {code}")
    assert result.returncode == code
    assert len(posts(idlemon)) == (1 if sent else 0)
    if sent:
        assert metas_of(idlemon.logs[0])["exit_code"] == str(code)
    assert history()[0]["report_status"] == ("sent" if sent else "none")


def test_timed_out_run_is_not_reported_by_default_but_is_with_always(idlemon, env):
    jobwrap("run", "-m", "bar", "--timeout", "0.2", "--", "sleep", "5")
    assert posts(idlemon) == []
    jobwrap("run", "-m", "bar", "--report", "always", "--timeout", "0.2", "--", "sleep", "5")
    [log] = idlemon.logs
    assert metas_of(log)["timed_out"] == "true" and metas_of(log)["exit_code"] == "124"


def test_without_a_monitor_nothing_is_sent(idlemon, env):
    assert jobwrap("run", "--", "true").stderr == b""
    assert idlemon.received == []


def test_monitor_without_token_warns_and_runs(idlemon, env, monkeypatch):
    monkeypatch.delenv("JOBWRAP_IDLEMON_TOKEN")
    result = jobwrap("run", "-m", "bar", "--", "sh", "-c", "echo hi; exit 0")
    assert result.returncode == 0 and result.stdout == b"hi\n"
    assert b"no Idlemon token" in result.stderr
    assert idlemon.received == []


def test_outage_keeps_reports_and_a_later_successful_run_delivers_them_once(idlemon, env):
    outage = {"JOBWRAP_IDLEMON_URL": CLOSED_PORT_URL}
    for i in range(3):
        result = jobwrap("run", "-m", "bar", "--report-timeout", "1s", "--", "echo", str(i),
                         env=outage)
        assert result.returncode == 0
        assert result.stdout == f"{i}\n".encode()
        warning = result.stderr.decode()
        assert warning.count("\n") == 1 and "kept for `jobwrap flush`" in warning
    assert [r["report_status"] for r in history()] == ["pending"] * 3
    assert jobwrap("run", "-m", "bar", "--", "echo", "back").returncode == 0
    run_ids = [metas_of(log)["run_id"] for log in idlemon.logs]
    assert len(run_ids) == 4 and len(set(run_ids)) == 4
    assert {r["report_status"] for r in history()} == {"sent"}
    assert jobwrap("flush").stdout.startswith(b"delivered 0,")
    assert len(idlemon.logs) == 4


def test_a_backlog_is_delivered_over_one_kept_alive_connection(monkeypatch):
    """The run's own report and the backlog after it share one connection; so does a flush."""
    with IdlemonServer(keep_alive=True) as server:
        monkeypatch.setenv("JOBWRAP_IDLEMON_TOKEN", TOKEN)
        outage = {"JOBWRAP_IDLEMON_URL": CLOSED_PORT_URL}
        for _ in range(3):
            jobwrap("run", "-m", "bar", "--report-timeout", "1s", "--", "true", env=outage)
        up = {"JOBWRAP_IDLEMON_URL": server.api_url}
        assert jobwrap("run", "-m", "bar", "--", "true", env=up).returncode == 0
        after_run = posts(server)
        assert len(after_run) == 4
        assert len({r.peer_port for r in after_run}) == 1
        for _ in range(3):
            jobwrap("run", "-m", "bar", "--report-timeout", "1s", "--", "true", env=outage)
        assert jobwrap("flush", env=up).stdout.startswith(b"delivered 3,")
        by_flush = posts(server)[4:]
        assert len(by_flush) == 3 and len({r.peer_port for r in by_flush}) == 1
        assert by_flush[0].peer_port != after_run[0].peer_port  # a new process, a new connection


def test_a_failing_run_does_not_deliver_the_backlog(idlemon, env):
    jobwrap("run", "-m", "bar", "--report-timeout", "1s", "--", "true",
            env={"JOBWRAP_IDLEMON_URL": CLOSED_PORT_URL})
    jobwrap("run", "-m", "bar", "--", "false")
    assert idlemon.received == []
    # flush holds it back too: the monitor's latest run failed, sending would look "active"
    result = jobwrap("flush")
    assert result.returncode == 1
    assert b"held back" in result.stdout
    assert idlemon.received == []
    assert jobwrap("flush", "--force").returncode == 0
    assert len(idlemon.logs) == 1


def test_late_delivery_says_when_the_run_happened(idlemon, env, state_dir):
    jobwrap("run", "-m", "bar", "--report-timeout", "1s", "--", "true",
            env={"JOBWRAP_IDLEMON_URL": CLOSED_PORT_URL})
    db = sqlite3.connect(state_dir / DB_NAME)
    with db:
        db.execute("UPDATE runs SET started_at = '2026-01-01T00:00:00.000+00:00'")
    db.close()
    assert jobwrap("flush").returncode == 0
    metas = metas_of(idlemon.logs[0])
    assert metas["ran_at"] == "2026-01-01T00:00:00.000+00:00"
    assert int(metas["delayed_s"]) > 3600


@pytest.mark.parametrize(
    "reply",
    [Reply.json(500, {"message": "boom"}), Reply.html(503), Reply.malformed(502),
     Reply.dropped()],
    ids=["500", "html-503", "malformed-json-502", "dropped"],
)
def test_faults_keep_the_job_status_and_leave_the_report_pending(idlemon, env, reply):
    idlemon.fail_next(100, reply)
    result = jobwrap("run", "-m", "bar", "--report-timeout", "1.5s", "--",
                     "sh", "-c", "echo out; exit 0")
    assert result.returncode == 0
    assert result.stdout == b"out\n"
    lines = result.stderr.decode().splitlines()
    assert len(lines) == 1 and "report not delivered" in lines[0]
    assert "Traceback" not in result.stderr.decode()
    assert history()[0]["report_status"] == "pending"


def test_429_with_retry_after_is_honoured_and_delivered_once(idlemon, env):
    idlemon.plan(Reply.rate_limited("1"))
    result = jobwrap("run", "-m", "bar", "--", "true")
    assert result.returncode == 0 and result.stderr == b""
    assert len(posts(idlemon)) == 2
    assert len(idlemon.logs) == 1


def test_budget_is_honoured_when_idlemon_hangs(idlemon, env):
    idlemon.fail_next(10, Reply.slow(30))
    start = time.monotonic()
    result = jobwrap("run", "-m", "bar", "--report-timeout", "1s", "--", "sh", "-c", "exit 0")
    assert time.monotonic() - start < 10  # far below the 30 s the server would take
    assert result.returncode == 0
    assert history()[0]["report_status"] == "pending"


def test_unknown_slug_is_refused_kept_with_its_reason_and_retried_by_flush(idlemon, env):
    result = jobwrap("run", "-m", "nope", "--", "true")
    assert result.returncode == 0
    assert b"no Idlemon monitor with slug 'nope'" in result.stderr
    [run] = history()
    assert run["report_status"] == "refused"
    assert "no Idlemon monitor" in run["report_error"]
    assert b"refused" in jobwrap("history").stdout
    idlemon.project["monitors"][0]["slug"] = "nope"  # the user creates the monitor
    result = jobwrap("flush")
    assert result.returncode == 0, result.stdout
    assert [log.slug for log in idlemon.logs] == ["nope"]


def test_bad_token_is_refused_with_a_clear_line(idlemon, env):
    result = jobwrap("run", "-m", "bar", "--", "true",
                     env={"JOBWRAP_IDLEMON_TOKEN": "f" * 32})
    assert b"Idlemon rejected the API token (HTTP 401)" in result.stderr
    assert history()[0]["report_status"] == "refused"


@pytest.mark.slow
def test_forty_concurrent_runs_during_an_outage_then_one_flush(idlemon, env):
    outage = dict(env, JOBWRAP_IDLEMON_URL=CLOSED_PORT_URL)
    procs = [
        subprocess.Popen([*JOBWRAP, "run", "-m", "bar", "--report-timeout", "1s", "--",
                          "echo", str(i)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         env=dict(__import__("os").environ, **outage))
        for i in range(40)
    ]
    for p in procs:
        p.communicate(timeout=120)
    assert [p.returncode for p in procs] == [0] * 40
    assert [r["report_status"] for r in history()] == ["pending"] * 40
    result = jobwrap("flush")
    assert result.returncode == 0
    assert result.stdout.startswith(b"delivered 40,")
    run_ids = [metas_of(log)["run_id"] for log in idlemon.logs]
    assert len(run_ids) == 40 and len(set(run_ids)) == 40


@pytest.mark.slow
def test_two_concurrent_flushes_never_send_a_report_twice(idlemon, env):
    for _ in range(12):
        jobwrap("run", "-m", "bar", "--report-timeout", "1s", "--", "true",
                env={"JOBWRAP_IDLEMON_URL": CLOSED_PORT_URL})
    idlemon.fail_next(4, Reply.slow(0.3))  # keep both flushes busy at the same time
    flushes = [subprocess.Popen([*JOBWRAP, "flush"], stdout=subprocess.PIPE) for _ in range(2)]
    outs = [f.communicate(timeout=120)[0] for f in flushes]
    run_ids = [metas_of(log)["run_id"] for log in idlemon.logs]
    assert len(run_ids) == 12 and len(set(run_ids)) == 12, outs
    assert {r["report_status"] for r in history()} == {"sent"}


def test_dry_run_prints_the_request_needs_no_token_and_sends_nothing(idlemon, env, monkeypatch):
    monkeypatch.delenv("JOBWRAP_IDLEMON_TOKEN")
    result = jobwrap("run", "-m", "bar", "--dry-run", "--", "echo", "hi")
    assert result.returncode == 0 and result.stdout == b"hi\n"
    text = result.stderr.decode()
    assert "POST " + idlemon.api_url + "/monitors/bar/logs" in text
    assert '"duration": 0' in text and '"exit_code"' in text
    assert idlemon.received == []


def test_dry_run_masks_the_token(idlemon, env):
    result = jobwrap("run", "-m", "bar", "--dry-run", "--", "true")
    assert TOKEN not in result.stderr.decode()
    assert "Api-Token" in result.stderr.decode()
    assert idlemon.received == []


def test_token_never_appears_in_any_output(idlemon, env):
    idlemon.fail_next(1, Reply.json(500, {"message": f"bad token {TOKEN}"}))
    outputs = [
        jobwrap("run", "-m", "bar", "--report-timeout", "1s", "--", "true"),
        jobwrap("run", "-m", "nope", "--", "true"),
        jobwrap("config"),
        jobwrap("config", "--json"),
        jobwrap("status"),
        jobwrap("doctor"),
        jobwrap("flush"),
        jobwrap("history"),
        jobwrap("show"),
    ]
    for result in outputs:
        assert TOKEN.encode() not in result.stdout + result.stderr, result.args


def test_a_run_that_cannot_send_never_imports_requests(env):
    for args in (["run", "--", "true"], ["run", "-m", "bar", "--report", "never", "--", "true"]):
        result = subprocess.run([JOBWRAP[0], "-X", "importtime", *JOBWRAP[1:], *args],
                                capture_output=True, timeout=60)
        lines = result.stderr.decode().splitlines()
        imported = {line.rsplit("|", 1)[-1].strip() for line in lines
                    if line.startswith("import time:")}
        assert "jobwrap.process.spawn" in imported  # the check itself works
        assert not {"requests", "urllib3", "jobwrap.idlemon.delivery"} & imported, args


def test_sigterm_while_sending_keeps_the_report_and_the_jobs_status(idlemon, env):
    idlemon.fail_next(5, Reply.slow(30))
    with subprocess.Popen([*JOBWRAP, "run", "-m", "bar", "--", "sh", "-c", "exit 0"],
                          stderr=subprocess.PIPE) as proc:
        for _ in range(3000):  # until the report is on the wire
            if posts(idlemon):
                break
            time.sleep(0.01)
        assert posts(idlemon), "the report was never sent"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    [run] = history()
    assert run["report_status"] == "pending"
    assert run["exit_code"] == 0


# Hostile answers (issue 9, items 14, 15 and 17) ----------------------------------------------


def _bounded_run(*args: str) -> tuple[subprocess.CompletedProcess, float]:
    start = time.monotonic()
    result = jobwrap("run", "-m", "bar", *args, "--", "sh", "-c", "echo out; exit 0",
                     timeout=30)
    return result, time.monotonic() - start


def _peak_child_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


@pytest.mark.parametrize(
    "reply",
    [Reply.endless_chunked(), Reply.huge(), Reply.dripping(every_s=0.2),
     Reply.dripping(every_s=0.2, headers_too=False)],
    ids=["endless-chunked", "huge", "drip", "drip-body"],
)
def test_a_hostile_answer_under_a_2s_budget_ends_soon_and_stays_small(idlemon, env, reply):
    idlemon.fail_next(1000, reply)
    result, took = _bounded_run("--report-timeout", "2s")
    assert result.returncode == 0 and result.stdout == b"out\n"
    assert took < 6, took  # an endless body grew jobwrap to 11 GiB; a drip took 47 s
    assert _peak_child_rss_mib() < 300
    assert len(posts(idlemon)) <= 3
    assert "Traceback" not in result.stderr.decode()


def test_a_2xx_endless_body_counts_as_delivered(idlemon, env):
    idlemon.fail_next(1000, Reply.endless_chunked())
    result, took = _bounded_run("--report-timeout", "5s")
    assert took < 8
    assert len(posts(idlemon)) == 1  # a 2xx: delivered, never retried
    assert history()[0]["report_status"] == "sent"


@pytest.mark.parametrize("retry_after", ["0", "Thu, 01 Jan 1970 00:00:00 GMT"],
                         ids=["zero", "past-date"])
def test_retry_after_zero_or_past_sends_few_requests(idlemon, env, retry_after):
    idlemon.fail_next(100_000, Reply.rate_limited(retry_after))
    result, took = _bounded_run("--report-timeout", "5s")
    assert result.returncode == 0
    assert len(posts(idlemon)) <= 5  # was 4,682 in 5 s
    assert took < 9
    assert history()[0]["report_status"] == "pending"


@pytest.mark.parametrize(
    "reply",
    [Reply.html(200), Reply.json(201, {"unexpected": True}), Reply.malformed(200), Reply(204)],
    ids=["html", "undocumented-json", "cut-json", "no-content"],
)
def test_a_2xx_with_an_odd_body_is_delivered_once_with_one_warning(idlemon, env, reply):
    idlemon.fail_next(100, reply)
    result = jobwrap("run", "-m", "bar", "--", "true")
    assert result.returncode == 0
    assert len(posts(idlemon)) == 1  # was retried, storing one log 15 times
    lines = result.stderr.decode().splitlines()
    assert len(lines) == 1 and "accepted the log" in lines[0], lines
    [run] = history()
    assert run["report_status"] == "sent"


@pytest.mark.parametrize(
    "reply_for",
    [lambda t: Reply.json(422, {"message": f"token {t.upper()} rejected"}),
     lambda t: Reply(302, b"", (("Location", f"http://elsewhere.invalid/{t.upper()}"),)),
     lambda t: Reply(503, b"<html>", (("Content-Type", f"text/html; echo={t}"),)),
     lambda t: Reply.json(500, {"error": {"message": f"Api-Token: {t}"}})],
    ids=["upper-body", "location", "header", "nested"],
)
def test_an_echoed_token_is_never_printed_or_stored(idlemon, env, reply_for, state_dir):
    idlemon.fail_next(100, reply_for(TOKEN))
    result = jobwrap("run", "-m", "bar", "--report-timeout", "1s", "--", "true")
    assert result.returncode == 0
    assert b"report not delivered" in result.stderr
    seen = (result.stdout + result.stderr).lower()
    seen += jobwrap("history", "--json").stdout.lower() + jobwrap("show").stdout.lower()
    assert TOKEN.lower().encode() not in seen
    for path in state_dir.rglob("*"):
        if path.is_file():
            assert TOKEN.lower().encode() not in path.read_bytes().lower(), path
