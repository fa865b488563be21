"""Operator answers at a glance: why nothing was sent, refused reports, the backlog's order,
dry runs, finding runs, status's duration markers and running runs (the real CLI)."""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import subprocess
import time

import psutil

from tests.fakes.idlemon_server import PROJECT_ID
from tests.helpers import JOBWRAP, jobwrap, py

CLOSED_PORT_URL = "http://127.0.0.1:9/api"




def history_json(*args: str) -> list[dict]:
    return json.loads(jobwrap("history", "--json", "--limit", "200", *args).stdout)


def out(*args: str, **kw) -> str:
    return jobwrap(*args, **kw).stdout.decode()


# -- 7. why was nothing sent? ------------------------------------------------------------------

def test_a_failed_run_under_report_success_says_why_nothing_was_sent(idlemon, env):
    idlemon.project["monitors"][1]["slug"] = "nightly"  # idle in the fake project
    assert jobwrap("run", "-m", "nightly", "--", "false").returncode == 1
    assert idlemon.received == []
    table = out("history")
    assert "not sent: failed" in table
    details = out("show")
    assert "report     not sent: the run failed, and report=success sends nothing on " \
           "failure" in details
    status = out("status")
    assert ("nightly: idle: the last run failed, and report=success sends nothing on failure"
            in status), status


def test_report_never_and_no_monitor_say_so_too(idlemon, env):
    jobwrap("run", "-m", "bar", "--report", "never", "--", "true")
    jobwrap("run", "--", "true")
    rows = out("history").splitlines()
    assert "not sent: no monitor" in rows[1]
    assert "not sent: report=never" in rows[2]


# -- 8. refused reports: why, and clearing them --------------------------------------------------

def test_history_shows_why_a_report_was_refused_and_flush_can_discard_it(idlemon, env):
    jobwrap("run", "-m", "nope", "--", "true")
    [run] = history_json()
    table = out("history")
    assert f"{run['run_id'][:8]}: refused: " in table
    assert "no Idlemon monitor with slug 'nope'" in table
    result = jobwrap("flush")
    assert result.returncode == 1
    flushed = result.stdout.decode()
    assert "--discard-refused" in flushed  # the way out, not "run flush" again
    doctor = out("doctor")
    assert "refused" in doctor and "--discard-refused --monitor nope" in doctor
    result = jobwrap("flush", "--discard-refused", "--monitor", "other")
    assert "discarded 0" in result.stdout.decode()
    result = jobwrap("flush", "--discard-refused", "--monitor", "nope")
    assert result.returncode == 0, result.stdout
    assert "discarded 1" in result.stdout.decode()
    assert history_json()[0]["report_status"] == "discarded"
    assert jobwrap("flush").returncode == 0
    assert "refused" not in out("doctor")


def test_flush_discard_one_run_by_id_prefix(idlemon, env):
    jobwrap("run", "-m", "bar", "--report-timeout", "1s", "--", "true",
            env={"JOBWRAP_IDLEMON_URL": CLOSED_PORT_URL})
    jobwrap("run", "-m", "bar", "--report-timeout", "1s", "--", "true",
            env={"JOBWRAP_IDLEMON_URL": CLOSED_PORT_URL})
    first, second = history_json()
    result = jobwrap("flush", "--discard", first["run_id"][:8])
    assert result.returncode == 0 and "discarded 1" in result.stdout.decode()
    statuses = {r["run_id"]: r["report_status"] for r in history_json()}
    assert statuses == {first["run_id"]: "discarded", second["run_id"]: "pending"}
    result = jobwrap("flush", "--discard", "zzzz")
    assert result.returncode == 1 and b"no run 'zzzz'" in result.stderr


def test_doctor_does_not_send_a_held_back_report_to_flush(idlemon, env):
    jobwrap("run", "-m", "bar", "--report-timeout", "1s", "--", "true",
            env={"JOBWRAP_IDLEMON_URL": CLOSED_PORT_URL})
    jobwrap("run", "-m", "bar", "--", "false")
    doctor = out("doctor")
    line = next(line for line in doctor.splitlines() if "pending" in line)
    assert "held back" in line and "--force" in line, doctor


# -- 10. the backlog goes first ----------------------------------------------------------------

def test_the_backlog_is_delivered_before_the_new_runs_report(idlemon, env):
    for _ in range(3):
        jobwrap("run", "-m", "bar", "--report-timeout", "1s", "--", "true",
                env={"JOBWRAP_IDLEMON_URL": CLOSED_PORT_URL})
    assert jobwrap("run", "-m", "bar", "--", "true").returncode == 0
    newest = history_json()[0]["run_id"]
    run_ids = [dict(log.metas)["run_id"] for log in idlemon.logs]
    assert len(run_ids) == 4
    assert run_ids[-1] == newest
    assert run_ids == [r["run_id"] for r in reversed(history_json())]


# -- 9. dry runs are recorded ---------------------------------------------------------------------

def test_a_dry_run_is_recorded_like_any_other(idlemon, env):
    result = jobwrap("run", "-m", "bar", "--dry-run", "--", "echo", "hi")
    assert result.returncode == 0 and result.stdout == b"hi\n"
    [run] = history_json()
    assert run["monitor"] == "bar" and run["exit_code"] == 0 and run["state"] == "finished"
    assert "not sent: dry run" in out("history")
    assert idlemon.received == []


def test_a_dry_run_that_would_send_nothing_says_why(idlemon, env):
    result = jobwrap("run", "-m", "bar", "--dry-run", "--", "false")
    assert result.returncode == 1
    assert result.stderr.decode() == ("jobwrap: dry run: nothing would be sent: the run failed, "
                                      "and report=success sends nothing on failure\n")
    result = jobwrap("run", "--dry-run", "--", "true")
    assert result.stderr.decode() == ("jobwrap: dry run: nothing would be sent: no monitor "
                                      "(--monitor SLUG)\n")
    assert len(history_json()) == 2


# -- 6. finding runs -----------------------------------------------------------------------------

def test_show_monitor_history_failed_and_since(tmp_path):
    jobwrap("run", "-m", "a", "--", "sh", "-c", "echo from-a; exit 3")
    jobwrap("run", "-m", "b", "--", "echo", "from-b")
    jobwrap("run", "-m", "a", "--", "echo", "a-ok")
    assert "a-ok" in out("show", "-m", "a")
    assert "from-b" in out("show", "-m", "b")
    result = jobwrap("show", "-m", "zz")
    assert result.returncode == 1 and b"no run of monitor 'zz'" in result.stderr
    failed = history_json("--failed")
    assert [(r["monitor"], r["exit_code"]) for r in failed] == [("a", 3)]
    assert len(history_json("--since", "1h")) == 3
    assert history_json("--since", "2999-01-01") == []
    assert len(history_json("--since", "2000-01-01T00:00")) == 3
    result = jobwrap("history", "--since", "yesterday-ish")
    assert result.returncode == 2 and b"--since" in result.stderr
    run_id = history_json()[0]["run_id"]
    assert "a-ok" in out("show", run_id[:6])


# -- 11 and issue 12 §4: the duration marker, running and hung runs ----------------------------

def status_line(slug: str) -> str:
    text = out("status")
    return next(line for line in text.splitlines() if line.startswith(slug + " "))


def test_the_marker_compares_the_last_run_with_the_other_runs():
    for _ in range(3):
        jobwrap("run", "-m", "quick", "--", "true")
    assert "(!)" not in status_line("quick")
    jobwrap("run", "-m", "quick", "--", "sleep", "1.5")
    assert "(!)" in status_line("quick")
    data = json.loads(out("status", "--json"))["monitors"][0]
    assert data["unusual_duration"] is True and data["flag"] == "unusual"


def wait_for(predicate, timeout: float = 30.0, every: float = 0.05):
    """Await a condition another process brings about (polled: it has no event to wait on)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError("timed out waiting")


def line_with(slug: str, text: str) -> str | None:
    line = status_line(slug)
    return line if text in line else None


def test_status_shows_a_running_run_flags_it_hung_then_abandoned():
    for _ in range(3):
        jobwrap("run", "-m", "job", "--", "true")
    proc = subprocess.Popen([*JOBWRAP, "run", "-m", "job", "--", "sleep", "60"],
                            start_new_session=True, stdout=subprocess.DEVNULL)
    children: list[psutil.Process] = []
    try:
        line = wait_for(lambda: line_with("job", "running for"))
        assert "(usually " in line and "hung" not in line, line
        line = wait_for(lambda: line_with("job", "hung"))
        assert "running for" in line and "(!) hung?" in line
        assert json.loads(out("status", "--json"))["monitors"][0]["flag"] == "hung"
        children = psutil.Process(proc.pid).children(recursive=True)
        os.kill(proc.pid, signal.SIGKILL)  # jobwrap gone, its command still running
        proc.wait()
        line = status_line("job")
        assert "abandoned (!)" in line
        assert json.loads(out("status", "--json"))["monitors"][0]["flag"] == "abandoned"
    finally:
        proc.kill()
        proc.wait()
        for child in children:
            child.kill()


def read_pty(master: int, until, timeout: float = 30.0) -> bytes:
    """What the program wrote to its terminal, once ``until(data)`` holds."""
    data = b""
    deadline = time.monotonic() + timeout
    while not until(data):
        left = deadline - time.monotonic()
        assert left > 0, data
        ready, _, _ = select.select([master], [], [], left)
        if ready:
            try:
                data += os.read(master, 65536)
            except OSError:  # EIO: the other side is closed
                break
    return data


def test_status_watch_refreshes_in_place_until_ctrl_c():
    jobwrap("run", "-m", "job", "--", "true")
    master, slave = pty.openpty()
    proc = subprocess.Popen([*JOBWRAP, "status", "--watch", "--every", "0.2s"],
                            stdin=slave, stdout=slave, stderr=subprocess.PIPE)
    os.close(slave)
    try:
        data = read_pty(master, lambda d: d.count(b"\x1b[H\x1b[J") >= 2)
        assert b"Ctrl-C stops" in data and b"job" in data
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
        assert proc.stderr is not None and proc.stderr.read() == b""
    finally:
        proc.kill()
        proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()
        os.close(master)


def test_status_watch_without_a_terminal_prints_frames_one_after_another():
    jobwrap("run", "-m", "job", "--", "true")
    result = jobwrap("status", "--watch", "--every", "0.1s", "--watch-count", "3")
    assert result.returncode == 0
    text = result.stdout.decode()
    assert text.count("Ctrl-C stops") == 3 and "\x1b" not in text


# -- 18. pictures ------------------------------------------------------------------------------

def test_status_and_history_show_recent_durations_with_failures_marked():
    jobwrap("run", "-m", "job", "--", "true")
    jobwrap("run", "-m", "job", "--", "sleep", "0.6")
    jobwrap("run", "-m", "job", "--", "false")
    line = status_line("job")
    assert line.endswith(" .#x"), line  # plain when not a terminal: short, long, failed
    master, slave = pty.openpty()
    for args, env in ((["status"], {}), (["history", "-m", "job"], {}),
                      (["history", "-m", "job"], {"NO_COLOR": "1"})):
        proc = subprocess.Popen([*JOBWRAP, *args], stdout=slave, stderr=subprocess.DEVNULL,
                                env=dict(os.environ, **env))
        assert proc.wait(timeout=30) in (0, 1)
        data = read_pty(master, lambda d: d.endswith(b"\n") and b"job" in d)
        if env:
            assert b".#x" in data and b"\x1b[" not in data, data
        else:
            assert "▁█".encode() in data and b"\x1b[31m" in data, data
    os.close(slave)
    os.close(master)


# -- 15, 16. show on a terminal, times with their zone -----------------------------------------

def test_show_escapes_control_sequences_on_a_terminal_and_marks_a_gap_inside_a_line():
    jobwrap("run", "--", *py("import sys; sys.stdout.write('a\\x1b]0;pwned\\x07b\\rc\\n')"))
    master, slave = pty.openpty()
    proc = subprocess.Popen([*JOBWRAP, "show"], stdout=slave, stderr=subprocess.DEVNULL)
    assert proc.wait(timeout=30) == 0
    data = read_pty(master, lambda d: b"pwned" in d and d.endswith(b"\n"))
    os.close(slave)
    os.close(master)
    assert b"\x1b" not in data and b"\x07" not in data
    assert b"a\\x1b]0;pwned\\x07b\\x0dc" in data
    piped = jobwrap("show").stdout  # not a terminal: the bytes as the job wrote them
    assert b"a\x1b]0;pwned\x07b\rc" in piped
    jobwrap("run", "--", *py("print('H' + 'x' * 120_000 + 'T')"))
    text = out("show")
    assert "… the middle of a long line left out …" in text


def test_history_and_show_print_times_with_their_zone():
    jobwrap("run", "--", "true")
    zoned = {"TZ": "Europe/Paris"}
    [row] = jobwrap("history", env=zoned).stdout.decode().splitlines()[1:]
    assert row.split()[2] in ("CET", "CEST"), row
    started = next(line for line in jobwrap("show", env={"TZ": "UTC"}).stdout.decode()
                   .splitlines() if line.startswith("started"))
    assert started.endswith(" UTC"), started


# -- 12. doctor ------------------------------------------------------------------------------------

def doctor_lines(*args: str, **kw) -> tuple[int, list[str]]:
    result = jobwrap("doctor", *args, **kw)
    return result.returncode, result.stdout.decode().splitlines()


def test_doctor_puts_fail_lines_first_each_with_a_fix_and_takes_project(idlemon, env,
                                                                         monkeypatch):
    monkeypatch.delenv("JOBWRAP_IDLEMON_PROJECT")
    jobwrap("run", "-m", "nope", "--", "true")  # a refused report
    code, lines = doctor_lines()
    assert code == 1
    kinds = [line.split()[0] for line in lines]
    assert kinds == sorted(kinds, key=lambda k: k != "FAIL"), lines  # FAILs, then the rest
    assert all(" — " in line for line in lines if line.startswith("FAIL")), lines
    code, lines = doctor_lines("--project", PROJECT_ID)
    assert any("Idlemon accepted the token; project 'Foo'" in line for line in lines), lines


def test_doctor_names_the_config_files_it_read(tmp_path):
    user = tmp_path / "config" / "jobwrap" / "config.toml"
    user.parent.mkdir(parents=True)
    user.write_text('[run]\ntimeout = "1h"\n')
    _, lines = doctor_lines()
    assert f"ok    config files read: {user}" in lines
    assert any(line.startswith("ok    no config file at ") and "etc" in line for line in lines)


def test_doctor_gives_a_damaged_history_the_right_fix(state_dir):
    state_dir.mkdir(parents=True)
    (state_dir / "history.sqlite3").write_bytes(b"this is not a database" * 100)
    code, lines = doctor_lines()
    assert code == 1
    line = next(line for line in lines if "state dir" in line)
    assert line.startswith("FAIL") and "is damaged: move it aside" in line, line
    assert "writable" not in line


def test_a_spent_promonitor_budget_is_a_note_not_a_fail(monkeypatch):
    from tests.fakes.promonitor_server import KEY, MONITOR_API, ProMonitorServer

    with ProMonitorServer(per_minute=50) as server:
        monkeypatch.setenv("JOBWRAP_PROMONITOR_URL", server.url)
        monkeypatch.setenv("JOBWRAP_PROMONITOR_TOKEN", KEY)
        monkeypatch.setenv("JOBWRAP_PROMONITOR_RPM", "1")
        monkeypatch.setenv("JOBWRAP_REPORT", "never")
        jobwrap("run", "--promonitor", MONITOR_API, "--", "true")  # spends this minute's request
        _, lines = doctor_lines()
        line = next(line for line in lines if "requests/min" in line)
        assert line.startswith("note  ProMonitor not asked now") and "again" in line, lines
        assert not any(ln.startswith("FAIL") and "ProMonitor" in ln for ln in lines), lines


# -- 14. errors name their place -----------------------------------------------------------------

def test_a_bad_regex_in_a_monitor_section_names_the_file_and_key_as_written(tmp_path):
    user = tmp_path / "config" / "jobwrap" / "config.toml"
    user.parent.mkdir(parents=True)
    user.write_text("[monitors.backup.meta]\nrows = 'processed (\\d+ rows'\n")
    result = jobwrap("run", "-m", "backup", "--", "true")
    assert result.returncode == 2
    line = result.stderr.decode()
    assert line.startswith(f"jobwrap: {user} [monitors.backup.meta] rows: invalid regex "
                           "'processed (\\d+ rows': "), line
    assert "--meta" not in line and line.count("\n") == 1


# -- 13. config --------------------------------------------------------------------------------

def test_config_shows_values_as_written_typed_json_files_and_every_monitor_section(tmp_path):
    user = tmp_path / "config" / "jobwrap" / "config.toml"
    user.parent.mkdir(parents=True)
    user.write_text('[run]\ntimeout = "1h"\n[monitors.backup]\ntimeout = "30m"\n'
                    '[monitors.backup.meta]\nrows = \'processed (\\d+)\'\n'
                    '[monitors.db]\ninterval = 60\n')
    xdg = {"JOBWRAP_STATE_DIR": "", "XDG_STATE_HOME": str(tmp_path / "xdg")}
    text = out("config", env=xdg)
    assert text.startswith(f"config files read: {user}\n")
    rows: dict[str, str] = {}
    for line in text.splitlines():  # the effective settings come first
        if line and " " in line:
            rows.setdefault(line.split()[0], line)
    assert rows["timeout"].split()[1] == "1h" and "3600" not in text
    assert "env XDG_STATE_HOME" in rows["state_dir"]
    assert "[monitors.backup]" in text and "[monitors.db]" in text
    assert "30m" in text and "processed (\\d+)" in text
    data = json.loads(out("config", "--json", env=xdg))
    assert data["files_read"] == [str(user)]
    settings = {r["name"]: r for r in data["settings"]}
    assert settings["timeout"]["value"] == 3600 and settings["timeout"]["shown"] == "1h"
    assert settings["capture"]["value"] is True and settings["schedule"]["value"] is None
    assert settings["skipped_exit"]["value"] == 75
    assert {r["name"]: r["value"] for r in data["monitors"]["db"]} == {"interval": 60}
