"""Exit statuses, timeouts on the whole tree, signal forwarding, and the daemonised grandchild."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from tests.helpers import JOBWRAP, jobwrap, py


def summary_of(tmp_path: Path, *args: str, **kw) -> tuple[subprocess.CompletedProcess, dict]:
    path = tmp_path / "summary.json"
    result = jobwrap("run", "--summary-json", str(path), *args, **kw)
    record = json.loads(path.read_text())
    record["meta"] = {m["name"]: m["value"] for m in record["metas"]}
    return result, record


@pytest.mark.parametrize("code", [0, 1, 3, 42, 255])
def test_exit_code_is_the_childs(tmp_path, code):
    result, record = summary_of(tmp_path, "--", *py(f"raise SystemExit({code})"))
    assert result.returncode == code
    assert record["exit_code"] == code
    assert record["meta"]["exit_code"] == str(code)
    assert "signal" not in record["meta"]


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGSEGV])
def test_killed_by_signal_is_128_plus_n(tmp_path, sig):
    result, record = summary_of(tmp_path, "--", "sh", "-c", f"kill -{sig.name[3:]} $$")
    assert result.returncode == 128 + sig
    assert record["meta"]["exit_code"] == str(128 + sig)
    assert record["meta"]["signal"] == sig.name
    assert record["signal"] == sig.name


def test_missing_command_is_127_with_a_clear_line(tmp_path):
    result, record = summary_of(tmp_path, "--", "no-such-command-xyz")
    assert result.returncode == 127
    assert result.stderr.decode().strip() == (
        "jobwrap: command not found: no-such-command-xyz (No such file or directory)"
    )
    assert record["meta"]["exit_code"] == "127"


@pytest.mark.parametrize("make", ["plain_file", "directory"])
def test_not_executable_is_126(tmp_path, make):
    target = tmp_path / "target"
    if make == "directory":
        target.mkdir()
    else:
        target.write_text("echo hi\n")
    result = jobwrap("run", "--", str(target))
    assert result.returncode == 126
    assert b"cannot execute" in result.stderr


def test_builtin_metas_come_first_in_a_fixed_order(tmp_path):
    code = "print('a 7'); import sys; print('e', file=sys.stderr)"
    _, record = summary_of(tmp_path, "--meta", "n=(\\d+)", "--", *py(code))
    names = [m["name"] for m in record["metas"]]
    builtin = ["exit_code", "stdout_lines", "stderr_lines", "duration_ms", "run_id", "host"]
    assert names == [*builtin, "n"]
    assert record["meta"]["stdout_lines"] == "1"
    assert record["meta"]["stderr_lines"] == "1"
    assert record["meta"]["n"] == "7"
    assert record["meta"]["run_id"] == record["run_id"]
    assert record["meta"]["host"] == os.uname().nodename


@pytest.mark.parametrize(
    "args, message",
    [
        (["--meta", "rows"], "NAME=REGEX"),
        (["--meta", "rows=("], "invalid regex"),
        (["--count", "exit_code=x"], "reserved"),
        (["--meta", "a=x", "--count", "a=y"], "given twice"),
        (["--timeout", "soon"], "bad --timeout"),
        (["--timeout", "-1"], "bad --timeout"),  # 0 is allowed: no timeout
        (["--kill-after", "-1s"], "bad --kill-after"),
        (["--monitor", "bad slug!"], "monitor"),
    ],
)
def test_bad_input_is_one_line_and_exit_2_before_the_command_starts(tmp_path, args, message):
    marker = tmp_path / "started"
    result = jobwrap("run", *args, "--", "touch", str(marker))
    assert result.returncode == 2
    lines = result.stderr.decode().splitlines()
    assert len(lines) == 1 and message in lines[0], lines
    assert "Traceback" not in result.stderr.decode()
    assert not marker.exists()


def test_no_command_is_a_usage_error():
    result = jobwrap("run", "--timeout", "5")
    assert result.returncode == 2
    assert b"no command given" in result.stderr


TREE = """
import os, subprocess, sys, time
pids = sys.argv[1]
# a grandchild in the same process group
a = subprocess.Popen(['sleep', '300'])
# a grandchild that left the group with setsid
b = subprocess.Popen(['sleep', '301'], start_new_session=True)
# an orphan: its parent exits at once, it stays (re-parented)
c = subprocess.Popen(['sh', '-c', 'setsid sleep 302 & echo $! > {0}.orphan'.format(pids)])
c.wait()
while not os.path.exists(pids + '.orphan') or not open(pids + '.orphan').read().strip():
    time.sleep(0.01)
with open(pids, 'w') as f:
    f.write(f"{a.pid} {b.pid} {open(pids + '.orphan').read().strip()}")
signal_ignored = __import__('signal')
signal_ignored.signal(signal_ignored.SIGTERM, signal_ignored.SIG_IGN)  # needs the KILL step
print('tree ready', flush=True)
time.sleep(300)
"""


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_timeout_kills_the_whole_tree_including_orphans_and_setsid(tmp_path):
    pids_file = tmp_path / "pids"
    result, record = summary_of(
        tmp_path, "--timeout", "2s", "--kill-after", "1s", "--", *py(TREE), str(pids_file),
        timeout=120,
    )
    assert result.returncode == 124
    assert record["timed_out"] is True
    assert record["meta"]["timed_out"] == "true"
    assert record["meta"]["exit_code"] == "124"
    assert b"tree ready" in result.stdout
    pids = [int(p) for p in pids_file.read_text().split()]
    assert len(pids) == 3
    survivors = [p for p in pids if alive(p)]
    assert survivors == [], "left behind: " + str(survivors)


def test_timeout_on_a_term_respecting_child_is_still_124(tmp_path):
    result, record = summary_of(tmp_path, "--timeout", "0.5", "--", "sleep", "60", timeout=60)
    assert result.returncode == 124
    assert record["meta"]["signal"] == "SIGTERM"


def test_the_run_ends_when_the_child_exits_even_if_a_daemon_holds_the_pipes(tmp_path):
    pid_file = tmp_path / "daemon.pid"
    script = f"sleep 120 & echo $! > {pid_file}; echo parent done"
    out = tmp_path / "out"
    try:
        with out.open("wb") as sink:
            # Not a pipe: a pipe's reader would wait for the daemon, with or without jobwrap.
            result = subprocess.run([*JOBWRAP, "run", "--", "sh", "-c", script], stdout=sink,
                                    timeout=60)
        assert result.returncode == 0
        assert out.read_bytes() == b"parent done\n"
    finally:
        if pid_file.exists():
            os.kill(int(pid_file.read_text()), signal.SIGKILL)


def wait_for(predicate, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_a_descendant_outliving_the_drain_lives_and_its_output_still_flows(tmp_path):
    # Issue 9.2: it used to die of SIGPIPE on its first write after the 1 s drain grace.
    marker, out, err = tmp_path / "f", tmp_path / "out", tmp_path / "err"
    script = f"(sleep 1.5; echo late; echo late-err >&2; touch {marker}) & echo early"
    with out.open("wb") as sink, err.open("wb") as err_sink:
        start = time.monotonic()
        result = subprocess.run([*JOBWRAP, "run", "--", "sh", "-c", script], stdout=sink,
                                stderr=err_sink, timeout=60)
        ended = time.monotonic() - start
    assert result.returncode == 0
    assert ended < 1.5 + 1.0, "the run must end with the child (and its drain grace)"
    assert wait_for(marker.exists), "the descendant died"
    assert wait_for(lambda: out.read_bytes() == b"early\nlate\n"), out.read_bytes()
    assert wait_for(lambda: err.read_bytes() == b"late-err\n"), err.read_bytes()


def test_output_written_by_a_lingering_descendant_right_after_exit_is_kept():
    script = "(sleep 0.2; echo late) & echo early"
    result = jobwrap("run", "--", "sh", "-c", script, timeout=60)
    assert result.stdout == b"early\nlate\n"


HANDLER = """
import signal, sys, time
def on(sig, frame):
    print('got', signal.Signals(sig).name, flush=True)
    sys.exit(7)
for name in ('SIGTERM', 'SIGINT', 'SIGHUP', 'SIGQUIT', 'SIGUSR1', 'SIGUSR2'):
    signal.signal(getattr(signal, name), on)
print('ready', flush=True)
time.sleep(120)
"""


@pytest.mark.parametrize(
    "sig",
    [signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2],
)
def test_signals_are_forwarded_to_the_child(sig):
    with subprocess.Popen([*JOBWRAP, "run", "--", *py(HANDLER)], stdout=subprocess.PIPE) as proc:
        assert proc.stdout.readline() == b"ready\n"
        proc.send_signal(sig)
        assert proc.stdout.readline() == f"got {sig.name}\n".encode()
        assert proc.wait(timeout=30) == 7


def test_sigterm_to_jobwrap_ends_an_ordinary_child_with_143(tmp_path):
    path = tmp_path / "s.json"
    cmd = [*JOBWRAP, "run", "--summary-json", str(path), "--", *py(
        "import time; print('ready', flush=True); time.sleep(120)")]
    with subprocess.Popen(cmd, stdout=subprocess.PIPE) as proc:
        assert proc.stdout.readline() == b"ready\n"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 143
    metas = {m["name"]: m["value"] for m in json.loads(path.read_text())["metas"]}
    assert metas["signal"] == "SIGTERM"


def test_no_zombies_are_left_by_a_timed_out_tree(tmp_path):
    # jobwrap reaps what it killed: after it returns, none of its children remain as zombies.
    # (Only new ones count: earlier in-process tests may have left this process orphans.)
    def zombies() -> set[int]:
        return {c.pid for c in psutil.Process().children(recursive=True)
                if c.status() == psutil.STATUS_ZOMBIE}

    before = zombies()
    result = jobwrap(
        "run", "--timeout", "1", "--", "sh", "-c", "sleep 100 & sleep 100 & wait", timeout=60
    )
    assert result.returncode == 124
    assert zombies() - before == set()


def test_resources_are_recorded(tmp_path):
    burn = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass"
    _, record = summary_of(tmp_path, "--", *py(burn))
    assert record["cpu_user_s"] + record["cpu_sys_s"] >= 0.25
    assert record["max_rss_kb"] > 0
    assert "cpu_user_s" not in record["meta"]  # resources are history, not metas


def test_duration_is_measured(tmp_path):
    start = time.monotonic()
    _, record = summary_of(tmp_path, "--", "sleep", "0.3")
    assert 300 <= record["duration_ms"] <= (time.monotonic() - start) * 1000 + 50
