"""`jobwrap cron`: run_cron, then the real supervisor in a subprocess.

The pure parts are tested in test_cronjobs, test_scheduler, test_jobprocess and test_eventlog.
The real tests use every-second schedules (six fields, seconds first) and wait on events: the
supervisor's JSON log lines on its stderr, its jobs' output on its stdout, datagrams on a real
notify socket.  Each real test is a few seconds at most.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from jobwrap.cron import supervisor
from jobwrap.cron.supervisor import run_cron
from jobwrap.errors import ConfigError
from tests.helpers import jobwrap

# ---- run_cron --check, the seconds switch ------------------------------------------------


def test_check_only_exit_status(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good, bad, empty = (tmp_path / n for n in ("good", "bad", "empty"))
    good.write_text("0 3 * * * backup.sh\n")
    bad.write_text("0 3 * * * backup.sh\n0 25 * * * x\n")
    empty.write_text("# nothing\n")
    assert run_cron(good, check_only=True) == 0
    assert "backup.sh" in capsys.readouterr().out
    assert run_cron(bad, check_only=True) == 1
    assert run_cron(empty, check_only=True) == 0  # nothing to run is not an error (cronie)
    with pytest.raises(ConfigError, match="cannot read crontab"):
        run_cron(tmp_path / "missing", check_only=True)


def test_the_seconds_field_is_only_for_tests(monkeypatch: pytest.MonkeyPatch) -> None:
    assert supervisor.seconds_enabled({}) is False
    assert supervisor.seconds_enabled({"JOBWRAP_CRON_SECONDS": "1"}) is True


# ---- the real supervisor ------------------------------------------------------------------

MAIN = """
import sys
from jobwrap.errors import JobwrapError
from jobwrap.cron.supervisor import Supervisor
path, grace, kill_after = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
try:
    sys.exit(Supervisor(path, log_format="json", grace_s=grace, kill_after_s=kill_after,
                        allow_seconds=True).run())
except JobwrapError as exc:  # as the CLI does
    print(f"jobwrap: {exc}", file=sys.stderr)
    sys.exit(int(exc.exit_status))
"""

RUN_CRON = """
import sys
from jobwrap.cron.supervisor import run_cron
sys.exit(run_cron(sys.argv[1], log_format="json", grace_s=5))
"""


class Cron:
    """A supervisor subprocess; its events and output gathered as they arrive."""

    def __init__(self, crontab: Path, *, grace_s: float = 10, kill_after_s: float = 5,
                 env: dict[str, str] | None = None, code: str = MAIN) -> None:
        self.crontab = crontab
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code, str(crontab), str(grace_s), str(kill_after_s)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env={**os.environ, **(env or {})},
        )
        self.pid = self.proc.pid
        self.changed = threading.Condition()
        self.events: list[dict] = []
        self.stdout: list[str] = []
        self.other_stderr: list[str] = []
        self.readers = [
            threading.Thread(target=self._read, args=(self.proc.stdout, True), daemon=True),
            threading.Thread(target=self._read, args=(self.proc.stderr, False), daemon=True),
        ]
        for reader in self.readers:
            reader.start()

    def _read(self, stream, is_stdout: bool) -> None:
        for raw in stream:
            line = raw.decode(errors="replace").rstrip("\n")
            with self.changed:
                if is_stdout:
                    self.stdout.append(line)
                else:
                    self._stderr_line(line)
                self.changed.notify_all()

    def _stderr_line(self, line: str) -> None:
        try:
            self.events.append(json.loads(line))
        except ValueError:
            self.other_stderr.append(line)

    def until(self, what: str, condition: Callable[[], object], timeout: float = 15):
        """Wait until ``condition()`` is truthy; return it.  Fails with what was seen."""
        with self.changed:
            found = self.changed.wait_for(condition, timeout)
        assert found, f"timed out waiting for {what}; events: {self.events}; " \
            f"stdout: {self.stdout}; stderr: {self.other_stderr}"
        return found

    def matching(self, event: str, **fields) -> list[dict]:
        return [
            e for e in self.events
            if e["event"] == event and all(e.get(k) == v for k, v in fields.items())
        ]

    def event(self, event: str, timeout: float = 15, **fields) -> dict:
        """The first event of this name with these fields, waiting for it."""
        return self.until(f"{event} {fields}", lambda: self.matching(event, **fields), timeout)[0]

    def events_of(self, event: str, count: int, timeout: float = 15, **fields) -> list[dict]:
        """The first ``count`` events of this name with these fields, waiting for them."""
        self.until(
            f"{count} x {event} {fields}",
            lambda: len(self.matching(event, **fields)) >= count,
            timeout,
        )
        return self.matching(event, **fields)[:count]

    def output(self, text: str, timeout: float = 15) -> None:
        self.until(f"output {text!r}", lambda: text in self.stdout, timeout)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        self.proc.send_signal(sig)
        return self.wait(timeout)

    def wait(self, timeout: float = 30) -> int:
        code = self.proc.wait(timeout)
        for reader in self.readers:
            reader.join(5)
        return code

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()  # a failed test: do not leave it running
            self.proc.wait()
        self.proc.stdout.close()
        self.proc.stderr.close()


@pytest.fixture
def cron(tmp_path: Path) -> Iterator[Callable[..., Cron]]:
    started: list[Cron] = []

    def start(text: str, **kw) -> Cron:
        crontab = tmp_path / "crontab"
        crontab.write_text(text)
        started.append(Cron(crontab, **kw))
        return started[-1]

    yield start
    for each in started:
        each.close()


def history() -> list[dict]:
    result = jobwrap("history", "--json", "--limit", "100")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_a_job_runs_its_output_passes_through_and_it_is_recorded(cron) -> None:
    supervised = cron(
        "* * * * * * echo out-$((40 + 2))\n"
        "* * * * * * jobwrap run -m cron-direct -- echo direct\n",
        code=RUN_CRON, env={"JOBWRAP_CRON_SECONDS": "1"},
    )
    ready = supervised.event("ready", jobs=2, bad_lines=0)
    assert ready["pid"] == supervised.pid
    start = supervised.event("start", line=1)
    assert start["command"] == "echo out-$((40 + 2))" and start["schedule"] == "* * * * * *"
    assert start["late_ms"] >= 0 and start["scheduled"].endswith("Z")
    done = supervised.event("exit", pid=start["pid"])
    assert done["exit_status"] == 0 and done["duration_ms"] >= 0
    supervised.event("exit", line=2, exit_status=0)
    supervised.output("out-42")
    supervised.output("direct")
    assert supervised.stop() == 0
    assert supervised.events[-1]["event"] == "stopped"
    records = history()
    commands = {r["command"] for r in records}
    assert "/bin/sh -c 'echo out-$((40 + 2))'" in commands
    assert any(r["monitor"] == "cron-direct" and r["command"] == "echo direct" for r in records)


@pytest.mark.slow
def test_overlap_skip_runs_a_long_job_once_and_logs_the_skips(cron) -> None:
    supervised = cron("* * * * * * sleep 2.5\n", grace_s=0.2)
    first = supervised.event("start")
    supervised.events_of("skip", count=2)
    supervised.event("exit", pid=first["pid"], exit_status=0)
    starts_before_exit = [
        e for e in supervised.events[: supervised.events.index(
            supervised.matching("exit", pid=first["pid"])[0])]
        if e["event"] == "start"
    ]
    assert starts_before_exit == [first]
    skip = supervised.matching("skip")[0]
    assert skip["line"] == 1 and skip["running_pid"] == first["pid"]
    assert skip["reason"] == "previous run still running"
    assert supervised.stop() == 0


def test_overlap_allow_starts_alongside(cron) -> None:
    supervised = cron("# jobwrap: overlap=allow\n* * * * * * sleep 3\n", grace_s=0.2)
    first, _ = supervised.events_of("start", count=2)
    assert not supervised.matching("exit", pid=first["pid"]), "the second run did not overlap"
    assert supervised.matching("skip") == []
    assert supervised.stop() == 0


def test_overlap_replace_terminates_the_running_one_first(cron) -> None:
    supervised = cron(
        "# jobwrap: overlap=replace\n*/2 * * * * * sleep 30 & echo sleeper $!; wait\n",
        grace_s=0.2,
    )
    first = supervised.event("start")
    line = supervised.until("the sleeper", lambda: [s for s in supervised.stdout if "sleeper" in s])
    supervised.event("replace", pid=first["pid"])
    ended = supervised.event("exit", pid=first["pid"])
    assert ended["exit_status"] == 143  # its jobwrap run got SIGTERM: 128+15
    second = supervised.until(
        "the replacement", lambda: [e for e in supervised.matching("start") if e != first]
    )[0]
    assert supervised.events.index(ended) < supervised.events.index(second)
    sleeper = int(line[0].split()[1])
    assert _wait_for(lambda: not _alive(sleeper)), "the replaced run's tree was left running"
    assert supervised.stop() == 0


def test_sigterm_waits_for_a_running_job_to_finish_then_exits_0(cron) -> None:
    supervised = cron("@reboot sleep 1; echo finished\n", grace_s=20)
    supervised.event("start", line=1, schedule="@reboot")
    assert supervised.stop() == 0
    stop = supervised.matching("stop")[0]
    assert (stop["signal"], stop["running"]) == ("SIGTERM", 1)
    assert supervised.matching("exit")[0]["exit_status"] == 0
    assert "finished" in supervised.stdout
    assert supervised.events[-1]["event"] == "stopped"


def test_after_the_grace_period_jobs_are_terminated_and_their_runs_recorded(cron) -> None:
    supervised = cron("@reboot sleep 30\n", grace_s=0.5)
    start = supervised.event("start")
    started = time.monotonic()
    assert supervised.stop(signal.SIGINT) == 0
    assert time.monotonic() - started < 10
    ended = supervised.matching("exit", pid=start["pid"])[0]
    assert ended["exit_status"] == 143  # its jobwrap run got SIGTERM and forwarded it
    run = next(r for r in history() if r["command"] == "/bin/sh -c 'sleep 30'")
    assert run["exit_code"] == 143 and run["signal"] == "SIGTERM"


def test_a_second_stop_signal_ends_the_grace_period(cron) -> None:
    supervised = cron("@reboot sleep 30\n", grace_s=60)
    supervised.event("start")
    supervised.proc.send_signal(signal.SIGTERM)
    supervised.event("stop")
    assert supervised.stop(signal.SIGTERM, timeout=15) == 0


@pytest.mark.slow
def test_a_job_that_ignores_sigterm_is_killed_with_its_whole_tree(cron, tmp_path: Path) -> None:
    supervised = cron(
        "@reboot trap '' TERM; sleep 60 & echo sleeper $!; wait\n", grace_s=0.2, kill_after_s=0.5
    )
    start = supervised.event("start")
    line = supervised.until("the sleeper", lambda: [s for s in supervised.stdout if "sleeper" in s])
    sleeper = int(line[0].split()[1])
    assert supervised.stop() == 0
    ended = supervised.matching("exit", pid=start["pid"])[0]
    assert (ended["exit_status"], ended["signal"]) == (137, "SIGKILL")
    assert not _alive(sleeper), "the job's grandchild survived the stop"


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_sighup_reloads_the_file_and_keeps_running_jobs(cron) -> None:
    supervised = cron("@reboot sleep 1.5; echo long-done\n* * * * * * echo A\n")
    long_job = supervised.event("start", line=1)
    supervised.event("exit", line=2)
    supervised.crontab.write_text(
        "@reboot sleep 1.5; echo long-done\n* * * * * * echo A\n\n* * * * * * echo B\n"
    )
    supervised.proc.send_signal(signal.SIGHUP)
    assert supervised.event("reload")["jobs"] == 3
    supervised.event("start", line=4, command="echo B")
    supervised.output("B")
    assert supervised.event("exit", pid=long_job["pid"])["exit_status"] == 0  # not killed
    supervised.output("long-done")
    assert len(supervised.matching("start", line=1)) == 1  # @reboot is not run again
    assert supervised.stop() == 0


@pytest.mark.parametrize("policy", ["skip", "replace"])
def test_a_reload_that_changes_an_assignment_keeps_the_running_instance(cron, policy) -> None:
    job = "sleep 30; echo done"
    supervised = cron(f"A=1\n# jobwrap: overlap={policy}\n* * * * * * {job}\n", grace_s=0.5)
    first = supervised.event("start", line=3)
    supervised.crontab.write_text(f"A=2\n# jobwrap: overlap={policy}\n* * * * * * {job}\n")
    supervised.proc.send_signal(signal.SIGHUP)
    supervised.event("reload")
    event = supervised.event(policy, line=3)  # the new key still sees the running one
    if policy == "skip":
        assert event["running_pid"] == first["pid"]
        assert len(supervised.matching("start", line=3)) == 1
    else:
        assert event["pid"] == first["pid"]
        supervised.event("exit", pid=first["pid"])
    assert supervised.stop(signal.SIGINT) == 0


def test_a_reload_with_nothing_valid_keeps_the_previous_jobs(cron) -> None:
    supervised = cron("* * * * * * echo still-here\n")
    supervised.event("ready")
    supervised.crontab.write_text("61 * * * * * bad second\n")
    supervised.proc.send_signal(signal.SIGHUP)
    error = supervised.event("error", message="no valid job line; keeping the previous jobs")
    index = supervised.events.index(error)
    supervised.until(
        "a run after the failed reload",
        lambda: [e for e in supervised.events[index:] if e["event"] == "start"],
    )
    assert supervised.stop() == 0


def test_a_bad_line_is_reported_with_its_number_and_the_rest_runs(cron) -> None:
    supervised = cron("# good and bad\n* * * * * 61 echo bad\n* * * * * * echo good\n")
    error = supervised.event("error", line=2)
    assert "day-of-week 61 is out of range" in error["message"]
    assert supervised.event("ready")["bad_lines"] == 1
    supervised.event("exit", line=3, exit_status=0)
    supervised.output("good")
    assert supervised.stop() == 0


def test_no_valid_job_line_is_an_error_before_anything_runs(cron) -> None:
    supervised = cron("* * * * * 61 echo bad\n")
    assert supervised.wait() == 2
    assert supervised.matching("error", line=1)
    assert supervised.other_stderr[-1] == (
        f"jobwrap: no valid job line in crontab {supervised.crontab}"
    )
    assert supervised.matching("ready") == []


def test_assignments_alone_are_supervised_until_a_reload_brings_jobs(cron) -> None:
    supervised = cron("MAILTO=ops@example.com\nSHELL=/bin/bash\n")
    assert supervised.event("ready")["jobs"] == 0
    warning = supervised.event("warning", line=1)
    assert warning["message"].startswith("MAILTO is ignored: jobwrap cron sends no mail")
    supervised.crontab.write_text(
        "SHELL=/bin/bash\n* * * * * * [[ -n $BASH_VERSION ]] && echo under-bash\n"
    )
    supervised.proc.send_signal(signal.SIGHUP)
    assert supervised.event("reload")["jobs"] == 1
    supervised.event("exit", line=2, exit_status=0)  # /bin/sh would exit 127 on [[
    supervised.output("under-bash")
    assert supervised.stop() == 0


def test_a_crontab_from_stdin_runs_and_a_reload_keeps_it(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", "import sys; from jobwrap.cron.supervisor import Supervisor; "
         "sys.exit(Supervisor('-', log_format='json', allow_seconds=True).run())"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    assert proc.stdin is not None and proc.stderr is not None
    proc.stdin.write(b"* * * * * * echo from-stdin\n")
    proc.stdin.close()
    try:
        events = (json.loads(line) for line in proc.stderr)
        assert next(e for e in events if e["event"] == "exit")["exit_status"] == 0
        proc.send_signal(signal.SIGHUP)
        error = next(e for e in events if e["event"] == "error")
        assert "cannot be read again; keeping the previous jobs" in error["message"]
        assert next(e for e in events if e["event"] == "start")["command"] == "echo from-stdin"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()
        proc.stderr.close()


def test_reboot_lines_run_once_at_start(cron) -> None:
    supervised = cron("@reboot echo rebooted\n* * * * * * echo tick\n")
    supervised.event("exit", line=1, exit_status=0)
    supervised.events_of("exit", count=2, line=2)
    assert len(supervised.matching("start", line=1)) == 1
    assert supervised.stdout.count("rebooted") == 1
    assert supervised.stop() == 0


def test_stdin_is_the_percent_text_or_dev_null(cron) -> None:
    big = "x" * 10_000  # more than a pipe is sure to hold at once
    supervised = cron(
        "@reboot cat; echo no-stdin-eof\n"
        "@reboot cat%first%second\n"
        f"@reboot wc -c%{big}\n"
    )
    supervised.events_of("exit", count=3)
    supervised.output("no-stdin-eof")
    assert "first" in supervised.stdout and "second" in supervised.stdout
    assert str(len(big) + 1) in [s.strip() for s in supervised.stdout]  # cron adds a newline
    assert supervised.stop() == 0


class NotifySocket:
    """A real AF_UNIX datagram socket standing in for systemd's."""

    def __init__(self) -> None:
        self.directory = tempfile.TemporaryDirectory(prefix="jw-")  # short: sun_path limit
        self.path = str(Path(self.directory.name) / "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(10)
        self.received: list[str] = []

    def expect(self, state: str) -> None:
        """Receive until a datagram starting with ``state`` arrives."""
        while True:
            message = self.sock.recv(4096).decode()
            self.received.append(message)
            if message.startswith(state):
                return

    def close(self) -> None:
        self.sock.close()
        self.directory.cleanup()


def test_the_systemd_notify_protocol(cron) -> None:
    notify = NotifySocket()
    try:
        supervised = cron(
            "* * * * * * echo ns=${NOTIFY_SOCKET:-unset} wd=${WATCHDOG_USEC:-unset}\n",
            env={"NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": "400000"},
        )
        notify.expect("READY=1")
        assert notify.received == ["READY=1\nSTATUS=1 jobs from " + str(supervised.crontab)]
        notify.expect("WATCHDOG=1")
        notify.expect("WATCHDOG=1")  # again, from the loop, every 0.2 s
        supervised.proc.send_signal(signal.SIGHUP)
        notify.expect("RELOADING=1")
        assert "MONOTONIC_USEC=" in notify.received[-1]
        notify.expect("READY=1")
        supervised.output("ns=unset wd=unset")  # jobs do not inherit the notify variables
        supervised.proc.send_signal(signal.SIGTERM)
        notify.expect("STOPPING=1")
        assert supervised.wait() == 0
    finally:
        notify.close()


ORPHAN_MAKER = """
import os, subprocess, sys
flag = sys.argv[1]
code = f"import os, time\\nwhile not os.path.exists({flag!r}): time.sleep(0.02)"
orphan = subprocess.Popen([sys.executable, "-c", code])
print("orphan", orphan.pid, flush=True)
"""


def test_orphans_left_by_a_job_are_reaped(cron, tmp_path: Path) -> None:
    script, flag = tmp_path / "orphan_maker.py", tmp_path / "flag"
    script.write_text(ORPHAN_MAKER)
    supervised = cron(f"@reboot {sys.executable} {script} {flag}\n")
    line = supervised.until("the orphan", lambda: [s for s in supervised.stdout if "orphan" in s])
    orphan = psutil.Process(int(line[0].split()[1]))
    supervised.event("exit", line=1, exit_status=0)  # its parent is gone
    assert _wait_for(lambda: orphan.ppid() == supervised.pid), "not re-parented to the supervisor"
    flag.write_text("")  # let the orphan exit
    assert _wait_for(lambda: not psutil.pid_exists(orphan.pid)), "the orphan is left a zombie"
    assert supervised.stop() == 0


def _wait_for(condition: Callable[[], bool], timeout: float = 10) -> bool:
    """Poll a condition no event announces (a process's parent, its disappearance)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return False


def test_start_and_exit_events_name_the_run_they_recorded(cron) -> None:
    supervised = cron(
        "* * * * * * echo plain\n"
        "* * * * * * jobwrap run -m named -- echo direct\n",
        code=RUN_CRON, env={"JOBWRAP_CRON_SECONDS": "1"},
    )
    ids = {}
    for line in (1, 2):
        start = supervised.event("start", line=line)
        done = supervised.event("exit", pid=start["pid"])
        assert done["run_id"] == start["run_id"]
        ids[line] = done["run_id"]
    assert supervised.stop() == 0
    recorded = {r["run_id"]: r for r in history()}
    assert recorded[ids[1]]["command"] == "/bin/sh -c 'echo plain'"
    assert recorded[ids[2]]["monitor"] == "named"
