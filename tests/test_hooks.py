"""`--on-failure` / `--on-success` hooks: run after the run, bounded, never change its status."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from tests.helpers import jobwrap, py

FAIL = "import sys; print('first line'); print('to stderr', file=sys.stderr); sys.exit(3)"
# A hook that keeps its environment (NUL-separated) and its stdin.
RECORD_HOOK = "env -0 > {out}/env; cat > {out}/stdin"


def _env(path: Path) -> dict[str, str]:
    items = path.read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in items if item)


def _metas(run: dict) -> dict[str, str]:
    return {m["name"]: m["value"] for m in run["metas"]}


def _last_run() -> dict:
    return json.loads(jobwrap("show", "--json").stdout)


def test_a_failure_hook_gets_the_runs_facts_and_its_output_but_no_tokens(tmp_path):
    env = {"JOBWRAP_IDLEMON_TOKEN": "im_secret_token", "JOBWRAP_PROMONITOR_TOKEN": "pm_secret",
           "JOBWRAP_LOCK_PASSWORD": "pw", "JOBWRAP_LOCK_URL": "redis://u:pw@h", "KEEP_ME": "yes"}
    result = jobwrap("run", "-m", "backup", "--report", "never", "--meta", "rows=(first)",
                     "--on-failure", RECORD_HOOK.format(out=tmp_path), "--", *py(FAIL), env=env)
    assert result.returncode == 3
    assert result.stdout == b"first line\n"
    assert result.stderr == b"to stderr\n"  # a hook that succeeds adds nothing
    hook_env = _env(tmp_path / "env")
    run = _last_run()
    assert hook_env["JOBWRAP_RUN_ID"] == run["run_id"]
    assert hook_env["JOBWRAP_EXIT_CODE"] == "3"
    assert hook_env["JOBWRAP_MONITOR"] == "backup"
    assert hook_env["JOBWRAP_RESULT"] == "failure"
    assert hook_env["JOBWRAP_COMMAND"] == run["command"]
    assert int(hook_env["JOBWRAP_DURATION_MS"]) == run["duration_ms"]
    assert hook_env["JOBWRAP_META_ROWS"] == "first"
    assert hook_env["JOBWRAP_META_STDERR_LINES"] == "1"
    assert "JOBWRAP_SIGNAL" not in hook_env and "JOBWRAP_TIMED_OUT" not in hook_env
    assert hook_env["KEEP_ME"] == "yes"
    for secret in ("JOBWRAP_IDLEMON_TOKEN", "JOBWRAP_PROMONITOR_TOKEN", "JOBWRAP_LOCK_PASSWORD",
                   "JOBWRAP_LOCK_URL"):
        assert secret not in hook_env
    assert not any("secret" in value for value in hook_env.values())
    assert (tmp_path / "stdin").read_bytes() == b"first line\nto stderr\n"
    metas = _metas(run)
    assert metas["hook"] == "on_failure"
    assert metas["hook_status"] == "exited 0"
    assert int(metas["hook_duration_ms"]) >= 0


def test_a_timed_out_run_tells_the_hook_so(tmp_path):
    code = "import time; time.sleep(60)"
    result = jobwrap("run", "--timeout", "0.3", "--on-failure", RECORD_HOOK.format(out=tmp_path),
                     "--", *py(code))
    assert result.returncode == 124
    hook_env = _env(tmp_path / "env")
    assert hook_env["JOBWRAP_TIMED_OUT"] == "true"
    assert hook_env["JOBWRAP_SIGNAL"] == "SIGTERM"
    assert hook_env["JOBWRAP_EXIT_CODE"] == "124"
    assert "JOBWRAP_MONITOR" not in hook_env


def test_the_success_hook_runs_after_success_and_the_failure_hook_does_not(tmp_path):
    ok = tmp_path / "ok"
    ok.mkdir()
    failed = tmp_path / "failed"
    result = jobwrap("run", "--on-success", RECORD_HOOK.format(out=ok),
                     "--on-failure", f"touch {failed}", "--", *py("print('fine')"))
    assert result.returncode == 0
    assert _env(ok / "env")["JOBWRAP_RESULT"] == "success"
    assert (ok / "stdin").read_bytes() == b"fine\n"
    assert not failed.exists()
    assert _metas(_last_run())["hook"] == "on_success"
    plain = jobwrap("run", "--on-success", f"touch {failed}", "--", *py("raise SystemExit(1)"))
    assert plain.returncode == 1 and not failed.exists()
    assert "hook" not in _metas(_last_run())


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state == "Z"


def test_a_hanging_hook_is_killed_with_its_tree_and_the_status_stands(tmp_path):
    # The hook leaves a child in its group and one in a session of its own, then hangs.
    hook = (f"sleep 600 & echo $! > {tmp_path}/a; setsid sleep 600 & echo $! > {tmp_path}/b;"
            " sleep 600")
    started = time.monotonic()
    result = jobwrap("run", "--hook-timeout", "1", "--on-failure", hook, "--", *py(FAIL))
    elapsed = time.monotonic() - started
    assert result.returncode == 3
    assert elapsed < 15
    lines = result.stderr.decode().splitlines()
    assert lines[0] == "to stderr"
    assert len(lines) == 2 and "on-failure hook" in lines[1] and "timed out" in lines[1]
    pids = [int((tmp_path / name).read_text()) for name in ("a", "b")]
    deadline = time.monotonic() + 10
    while not all(_gone(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert all(_gone(pid) for pid in pids)
    metas = _metas(_last_run())
    assert metas["hook_status"] == "timed out"
    assert 1000 <= int(metas["hook_duration_ms"]) < 10_000


def test_a_missing_hook_command_is_a_warning_and_the_run_is_recorded():
    result = jobwrap("run", "--on-failure", "no-such-hook-command-jw", "--", *py(FAIL))
    assert result.returncode == 3
    warning = result.stderr.decode().splitlines()[-1]
    assert warning.startswith("jobwrap: warning: the on-failure hook")
    assert "127" in warning
    run = _last_run()
    assert run["exit_code"] == 3
    assert _metas(run)["hook_status"] == "exited 127"


def test_a_failing_hook_is_one_warning_line():
    result = jobwrap("run", "--on-failure", "exit 5", "--", *py(FAIL))
    assert result.returncode == 3
    assert result.stderr.decode().splitlines()[1:] == [
        "jobwrap: warning: the on-failure hook exited 5"]


def test_hooks_come_from_the_monitor_section(tmp_path):
    config = tmp_path / "config" / "jobwrap" / "config.toml"
    config.parent.mkdir(parents=True)
    marker = tmp_path / "marker"
    config.write_text(f'[run]\non_failure = "echo general > {marker}"\nhook_timeout = "5s"\n'
                      f'[monitors.backup]\non_failure = "echo backup > {marker}"\n')
    jobwrap("run", "--report", "never", "--", *py(FAIL))
    assert marker.read_text() == "general\n"
    jobwrap("run", "-m", "backup", "--report", "never", "--", *py(FAIL))
    assert marker.read_text() == "backup\n"
    shown = jobwrap("config", "-m", "backup").stdout.decode()
    assert "on_failure" in shown and "hook_timeout" in shown


def test_a_skipped_run_runs_no_hook(tmp_path, state_dir):
    marker = tmp_path / "marker"
    os.makedirs(state_dir, exist_ok=True)
    from jobwrap.store import lock as locks

    held = locks.acquire(state_dir, "j", None)
    try:
        result = jobwrap("run", "--lock=j", "--on-failure", f"touch {marker}", "--", "true")
    finally:
        held.release()
    assert result.returncode == 75
    assert not marker.exists()


def test_a_stop_signal_during_the_hook_kills_it_and_jobwrap_exits_with_the_runs_status(tmp_path):
    import signal
    import subprocess

    from tests.helpers import JOBWRAP

    started = tmp_path / "started"
    hook = f"echo $$ > {started}; sleep 600"
    proc = subprocess.Popen([*JOBWRAP, "run", "--on-failure", hook, "--", *py(FAIL)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 20
    while not (started.exists() and started.read_text().endswith("\n")):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=10)
    assert proc.returncode == 3
    assert _gone(int(started.read_text()))
    assert _metas(_last_run())["hook_status"] == "stopped"
    assert b"on-failure hook stopped" in err


def test_the_hooks_stdin_says_how_many_lines_were_left_out_and_meta_names_become_env_names():
    from jobwrap.run.hooks import hook_environment, hook_input
    from jobwrap.store.history import RunRecord

    record = RunRecord(run_id="r", job="j", monitor=None, command="c", host="h",
                       started_at="2026-01-01T00:00:00+00:00", duration_ms=5, exit_code=1,
                       metas=(("db.rows-done", "4\0"),), output_head=b"a\nb\n",
                       output_tail=b"y\nz", output_omitted_lines=10)
    assert hook_input(record) == b"a\nb\n[... 10 lines omitted ...]\ny\nz"
    env = hook_environment(record, {"JOBWRAP_META_OLD": "x", "JOBWRAP_SIGNAL": "SIGHUP",
                                    "JOBWRAP_IDLEMON_TOKEN_FILE": "/run/secret", "PATH": "/bin"})
    assert env["JOBWRAP_META_DB_ROWS_DONE"] == "4"
    assert "JOBWRAP_META_OLD" not in env and "JOBWRAP_SIGNAL" not in env
    assert "JOBWRAP_IDLEMON_TOKEN_FILE" not in env and env["PATH"] == "/bin"
