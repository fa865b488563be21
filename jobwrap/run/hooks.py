"""``--on-failure`` / ``--on-success``: a command of the user's, run after the run is recorded.

The hook runs through ``/bin/sh -c`` with the run's facts in its environment and the captured
output (head and tail) on its stdin, in a session of its own.  It is bounded by
``--hook-timeout``: after that its whole tree is killed.  It never changes the run's exit
status: its own failure is one warning line, and its outcome is recorded with the run as the
metas ``hook``, ``hook_status`` and ``hook_duration_ms`` (in the history; the run's report to
Idlemon, already made, does not wait for the hook).

The hook does not inherit jobwrap's secrets (the tokens, the lock's password and URL).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from jobwrap.run.options import HookSettings
    from jobwrap.store.history import RunRecord

Warn = Callable[[str], None]

FACT_ENV = ("JOBWRAP_RUN_ID", "JOBWRAP_EXIT_CODE", "JOBWRAP_RESULT", "JOBWRAP_MONITOR",
            "JOBWRAP_JOB", "JOBWRAP_COMMAND", "JOBWRAP_DURATION_MS", "JOBWRAP_SIGNAL",
            "JOBWRAP_TIMED_OUT")
SHELL = "/bin/sh"
POLL_S = 0.25  # how soon a stop signal to jobwrap ends a running hook


@dataclass(frozen=True)
class HookOutcome:
    which: str  # on_failure | on_success
    status: str  # "exited N", "killed by SIGx", "timed out", "stopped", "not started"
    duration_ms: int

    def metas(self) -> list[tuple[str, str]]:
        return [("hook", self.which), ("hook_status", self.status),
                ("hook_duration_ms", str(self.duration_ms))]


def hook_environment(record: RunRecord, env: Mapping[str, str]) -> dict[str, str]:
    """jobwrap's environment without its secrets, with the run's facts and metas."""
    from jobwrap.config.table import SECRET_ENV  # the one list of jobwrap's secret variables

    result = {k: v for k, v in env.items()
              if k not in SECRET_ENV and k not in FACT_ENV and not k.startswith("JOBWRAP_META_")}
    facts = {
        "JOBWRAP_RUN_ID": record.run_id,
        "JOBWRAP_EXIT_CODE": str(record.exit_code),
        "JOBWRAP_RESULT": "success" if record.exit_code == 0 else "failure",
        "JOBWRAP_JOB": record.job,
        "JOBWRAP_COMMAND": record.command,
        "JOBWRAP_DURATION_MS": str(record.duration_ms),
        "JOBWRAP_MONITOR": record.monitor,
        "JOBWRAP_SIGNAL": record.signal,
        "JOBWRAP_TIMED_OUT": "true" if record.timed_out else None,
    }
    result.update({k: v for k, v in facts.items() if v})
    for name, value in record.metas:
        result["JOBWRAP_META_" + re.sub(r"[^A-Z0-9_]", "_", name.upper())] = value
    return {k: v.replace("\0", "") for k, v in result.items()}


def hook_input(record: RunRecord) -> bytes:
    """The captured output: its head, a line saying how many were left out, its tail."""
    head = record.output_head or b""
    tail = record.output_tail or b""
    omitted = record.output_omitted_lines or 0
    if omitted:
        head += b"" if head.endswith(b"\n") or not head else b"\n"
        head += b"[... %d lines omitted ...]\n" % omitted
    return head + tail


def run_hook(settings: HookSettings, record: RunRecord, warn: Warn,
             stop: Callable[[], bool] = lambda: False) -> HookOutcome | None:
    """Run the hook the run calls for (if any) to its end or its timeout; never raises."""
    chosen = settings.chosen(record)
    if chosen is None:
        return None
    which, command = chosen
    label = which.replace("_", "-")
    started = time.monotonic()
    if stop():
        warn(f"warning: stopped by a signal: the {label} hook is not run")
        return HookOutcome(which, "not started", 0)
    try:
        status = _run(command, record, settings.timeout_s, stop)
    except OSError as exc:
        warn(f"warning: cannot start the {label} hook: {SHELL}: {exc.strerror}")
        return HookOutcome(which, "not started", 0)
    duration_ms = int((time.monotonic() - started) * 1000)
    if status == "timed out":
        warn(f"warning: the {label} hook timed out after {settings.timeout_s:g} s "
             "and was killed (with its processes)")
    elif status != "exited 0":
        hint = {"exited 127": " (command not found)", "exited 126": " (not executable)"}
        warn(f"warning: the {label} hook {status}{hint.get(status, '')}")
    return HookOutcome(which, status, duration_ms)


def _run(command: str, record: RunRecord, timeout_s: float,
         stop: Callable[[], bool]) -> str:
    import subprocess

    from jobwrap.process import tree

    tree.become_subreaper()  # a daemonising hook's orphans stay ours, so they can be killed
    spare = tree.descendant_pids()
    deadline = time.monotonic() + timeout_s
    proc = subprocess.Popen(
        [SHELL, "-c", command], stdin=subprocess.PIPE, close_fds=True, start_new_session=True,
        env=hook_environment(record, os.environ),
    )
    data: bytes | None = hook_input(record)
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or stop():
            tree.kill_group_tree(proc.pid, spare)
            proc.wait()
            tree.reap_orphans()
            return "timed out" if remaining <= 0 else "stopped"
        try:
            proc.communicate(data, timeout=min(remaining, POLL_S))
            break
        except subprocess.TimeoutExpired:
            data = None  # sent in part already: communicate carries on with it
    tree.reap_orphans()
    code = proc.returncode
    return f"exited {code}" if code >= 0 else f"killed by {tree.signal_name(-code)}"


def record_hook(history_dir, run_id: str, outcome: HookOutcome, warn: Warn) -> None:
    """Add the hook's metas to the stored run; a broken store costs them, nothing more."""
    from jobwrap.errors import JobwrapError
    from jobwrap.store.history import open_history

    try:
        history = open_history(history_dir)
        try:
            history.add_metas(run_id, outcome.metas())
        finally:
            history.close()
    except JobwrapError as exc:
        warn(f"warning: the hook's outcome is not recorded: {exc}")
