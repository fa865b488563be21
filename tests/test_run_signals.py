"""Issue 9.4–9.8: signal dispositions jobwrap inherits, and signals sent to it, at every edge."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from tests.fakes import Reply
from tests.fakes.idlemon_server import PROJECT_ID, TOKEN, IdlemonServer
from tests.helpers import JOBWRAP, py


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def gone_soon(pid: int, within_s: float = 5.0) -> bool:
    """SIGKILL is delivered asynchronously: the process may need a moment to finish dying."""
    deadline = time.monotonic() + within_s
    while alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def ignoring(*signals: signal.Signals):
    """A preexec_fn that starts jobwrap with ``signals`` ignored (as nohup or sh's ``&``)."""
    def preexec() -> None:
        for sig in signals:
            signal.signal(sig, signal.SIG_IGN)
    return preexec


def record_of(path: Path) -> dict:
    record = json.loads(path.read_text())
    record["meta"] = {m["name"]: m["value"] for m in record["metas"]}
    return record


def test_an_inherited_ignored_sigchld_still_gives_the_jobs_status(tmp_path):
    summary = tmp_path / "s.json"
    result = subprocess.run(
        [*JOBWRAP, "run", "--summary-json", str(summary), "--", "sh", "-c", "echo hi; exit 3"],
        capture_output=True, preexec_fn=ignoring(signal.SIGCHLD), timeout=60)
    assert result.returncode == 3, result.stderr
    assert result.stdout == b"hi\n"
    assert record_of(summary)["exit_code"] == 3


REPORTS_IGNORED = """
import signal, sys
names = ('SIGHUP', 'SIGINT', 'SIGQUIT')
print(' '.join(n for n in names if signal.getsignal(getattr(signal, n)) == signal.SIG_IGN),
      flush=True)
sys.stdin.readline()
print('done', flush=True)
"""


def test_signals_ignored_at_start_stay_ignored_for_jobwrap_and_the_child():
    # `nohup jobwrap run ...`, `jobwrap run ... &` in a script: a HUP or INT must not kill it.
    ignored = (signal.SIGHUP, signal.SIGINT, signal.SIGQUIT)
    with subprocess.Popen([*JOBWRAP, "run", "--", *py(REPORTS_IGNORED)], stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, preexec_fn=ignoring(*ignored)) as proc:
        assert proc.stdout.readline() == b"SIGHUP SIGINT SIGQUIT\n"
        for sig in ignored:
            proc.send_signal(sig)
        proc.stdin.write(b"go\n")
        proc.stdin.flush()
        assert proc.stdout.readline() == b"done\n"
        assert proc.wait(timeout=30) == 0


def test_signals_after_the_child_exits_are_absorbed_and_the_status_wins(tmp_path):
    # While the report is being sent (a slow Idlemon), USR1/USR2/QUIT used to kill jobwrap.
    with IdlemonServer() as idlemon:
        idlemon.fail_next(5, Reply.slow(30))
        env = dict(os.environ, JOBWRAP_IDLEMON_URL=idlemon.api_url,
                   JOBWRAP_IDLEMON_TOKEN=TOKEN, JOBWRAP_IDLEMON_PROJECT=PROJECT_ID)
        cmd = [*JOBWRAP, "run", "-m", "bar", "--report", "always", "--report-timeout", "20s",
               "--", "sh", "-c", "exit 3"]
        with subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE) as proc:
            deadline = time.monotonic() + 30
            while not idlemon.received and time.monotonic() < deadline:
                time.sleep(0.02)  # the report is on its way: the child is done
            assert idlemon.received
            for sig in (signal.SIGUSR1, signal.SIGUSR2, signal.SIGQUIT, signal.SIGTERM):
                proc.send_signal(sig)
            assert proc.wait(timeout=15) == 3  # TERM ends the sending: the report is kept
            assert b"kept for `jobwrap flush`" in proc.stderr.read()


TERM_PROOF_TREE = """
import os, signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
kid = subprocess.Popen(['sleep', '300'])  # inherits TERM ignored
print(kid.pid, flush=True)
time.sleep(300)
"""


def test_sigterm_stops_the_whole_tree_kills_it_after_kill_after_and_records_the_run(tmp_path):
    summary = tmp_path / "s.json"
    cmd = [*JOBWRAP, "run", "--kill-after", "1s", "--summary-json", str(summary), "--",
           *py(TERM_PROOF_TREE)]
    with subprocess.Popen(cmd, stdout=subprocess.PIPE) as proc:
        grandchild = int(proc.stdout.readline())
        start = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 143
        assert time.monotonic() - start < 10
    assert gone_soon(grandchild)
    record = record_of(summary)
    assert record["exit_code"] == 143
    assert record["signal"] == "SIGKILL"  # what it took


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_stop_signals_reach_every_process_of_the_tree(tmp_path, sig):
    pid_file = tmp_path / "pid"
    script = f"sleep 300 & echo $! > {pid_file}; echo ready; wait"
    cmd = [*JOBWRAP, "run", "--kill-after", "1s", "--", "sh", "-c", script]
    with subprocess.Popen(cmd, stdout=subprocess.PIPE) as proc:
        assert proc.stdout.readline() == b"ready\n"
        proc.send_signal(sig)
        assert proc.wait(timeout=20) == 128 + sig
    assert gone_soon(int(pid_file.read_text()))


def test_a_sigterm_while_many_patterns_are_compiled_is_not_lost(state_dir, tmp_path):
    # 200 large --meta take a while to compile for the run, after the lock is taken: a
    # SIGTERM sent as soon as the lock file appears lands there, and used to be dropped.
    metas = []
    for i in range(200):
        words = "|".join(f"w{i}q{j}" for j in range(150))
        metas += ["--meta", f"m{i}=({words})x{i}"]
    summary = tmp_path / "s.json"
    cmd = [*JOBWRAP, "run", "--lock", "--summary-json", str(summary), *metas, "--",
           "sleep", "30"]
    locks = state_dir / "locks"
    with subprocess.Popen(cmd) as proc:
        deadline = time.monotonic() + 30
        while not (locks.is_dir() and any(locks.iterdir())) and time.monotonic() < deadline:
            time.sleep(0.005)
        start = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=40) == 143
        assert time.monotonic() - start < 10, "the SIGTERM was lost: the job ran on"


def test_a_timed_out_child_that_ignores_term_is_killed_and_still_exits_124(tmp_path):
    # GNU `timeout -k` exits 137 here; jobwrap says 124 (a timeout) and records the SIGKILL.
    summary = tmp_path / "s.json"
    result = subprocess.run(
        [*JOBWRAP, "run", "--timeout", "0.5s", "--kill-after", "0.5s", "--summary-json",
         str(summary), "--", *py("import signal, time\n"
                                 "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
                                 "time.sleep(60)")],
        timeout=60)
    assert result.returncode == 124
    record = record_of(summary)
    assert record["timed_out"] is True
    assert record["signal"] == "SIGKILL"
