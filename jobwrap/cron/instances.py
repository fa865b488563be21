"""The running instances of ``jobwrap cron``'s jobs: start, overlap, reap, escalate, stop.

A due job starts unless an earlier run of it still runs; then its ``overlap`` policy decides
(see :mod:`jobwrap.cron.table`).  Every child that exits is collected here: our jobs (logged as
``exit``) and the orphans re-parented to the supervisor, so no zombie piles up.  A terminated
job gets SIGKILL after the kill delay, and so does what is left of its session once its
``jobwrap run`` has exited ("doomed" sessions).
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta

from jobwrap.cron.due import Due
from jobwrap.cron.eventlog import EventLog, iso_utc
from jobwrap.cron.launch import (
    JobProcess,
    exit_fields,
    is_jobwrap_run,
    job_argv,
    job_environment,
    job_shell,
    slot_options,
)
from jobwrap.cron.table import CronJob, JobKey
from jobwrap.process import tree as proctree
from jobwrap.process.spawn import new_run_id


class RunningJobs:
    """The jobs running now, by pid; each start and exit is logged.  ``len()``: how many."""

    def __init__(
        self,
        log: EventLog,
        *,
        kill_after_s: float,
        jobwrap_argv: Sequence[str],
        env: Mapping[str, str],
        clock: Callable[[], datetime],
        monotonic: Callable[[], float],
    ) -> None:
        self.log = log
        self.kill_after_s = kill_after_s
        self.jobwrap_argv = tuple(jobwrap_argv)
        self.env = env
        self.clock = clock
        self.monotonic = monotonic
        self.running: dict[int, JobProcess] = {}  # pid → instance
        self.replacing: dict[JobKey, Due] = {}  # starts awaiting an exit
        # Sessions whose leader exited after SIGTERM: what is left of them is killed at this time.
        self.doomed: dict[int, float] = {}

    def __len__(self) -> int:
        return len(self.running)

    def deadlines(self) -> list[float]:
        """Monotonic times at which :meth:`escalate` has a kill to do."""
        pending = [p.kill_at for p in self.running.values() if p.kill_at is not None]
        return pending + list(self.doomed.values())

    # -- starting

    def fire(self, job: CronJob, due: Due) -> None:
        """The job's time has come: start it, or apply its overlap policy."""
        running = [p for p in self.running.values() if p.job.key == job.key]
        if not running or job.overlap == "allow":
            self.launch(job, due)
        elif job.overlap == "skip":
            self.log.emit(
                "skip", line=job.line_no, reason="previous run still running",
                running_pid=running[0].pid, scheduled=iso_utc(due.fire_time),
            )
        else:  # replace: start once the running instances have exited
            for proc in running:
                if proc.kill_at is None:
                    self.log.emit("replace", line=job.line_no, pid=proc.pid)
                proc.terminate(self.monotonic() + self.kill_after_s)
            self.replacing[job.key] = due

    def start_replacements(self, jobs: Iterable[CronJob]) -> None:
        """Start the replacing runs whose predecessors have all exited."""
        running = {p.job.key for p in self.running.values()}
        by_key = {job.key: job for job in jobs}
        for key, due in list(self.replacing.items()):
            if key not in running:
                del self.replacing[key]
                self.launch(by_key[key], due)

    def reattach(self, jobs: Iterable[CronJob]) -> None:
        """After a reload, keep each running instance attached to its job.

        A job's key includes the assignments above it, so an edited ``A=1`` line gives the
        jobs below it new keys; an instance (or pending replacement) whose key is gone is
        handed to the one new job with the same schedule, command and stdin, so ``skip`` and
        ``replace`` still see it running.
        """
        by_key = {job.key: job for job in jobs}
        by_lineage: dict[JobKey, list[CronJob]] = {}
        for job in by_key.values():
            by_lineage.setdefault(_lineage(job.key), []).append(job)

        def successor(key: JobKey) -> CronJob | None:
            if key in by_key:
                return None
            candidates = by_lineage.get(_lineage(key), [])
            return candidates[0] if len(candidates) == 1 else None

        for proc in self.running.values():
            new = successor(proc.job.key)
            if new is not None:
                proc.job = new
        for key in list(self.replacing):
            new = successor(key)
            if new is not None:
                self.replacing[new.key] = self.replacing.pop(key)

    def keep_replacements(self, keys: set[JobKey]) -> None:
        """Drop pending replacements of jobs not in ``keys`` (removed by a reload)."""
        for key in [k for k in self.replacing if k not in keys]:
            del self.replacing[key]

    def launch(self, job: CronJob, due: Due | None) -> None:
        """Start a run of ``job`` (``due`` None for @reboot); a failure is logged."""
        command, entry_env = job.entry.command, job.entry.env
        run_id = new_run_id()  # the run's id in the history, named in start and exit events
        try:
            argv = job_argv(command, self.jobwrap_argv, job_shell(entry_env),
                            [f"--run-id={run_id}", *slot_options(job, due)])
            env = job_environment(entry_env, self.env, plain_line=not is_jobwrap_run(command))
            proc = JobProcess.spawn(job, argv, env, self.monotonic())
        except (OSError, ValueError) as exc:
            # One line never stops the supervisor (PID 1 in a container): ValueError is an
            # argv or environment that cannot be passed to exec (a NUL byte, say).
            self.log.emit("error", line=job.line_no, message=f"cannot start: {exc}")
            return
        if f"--run-id={run_id}" in argv:  # not for a jobwrap run line in shell syntax
            proc.run_id = run_id
        self.running[proc.pid] = proc
        self.log.emit(
            "start", line=job.line_no, pid=proc.pid, run_id=proc.run_id,
            command=job.entry.command,
            schedule=str(job.schedule), **self._timing(due),
        )

    def _timing(self, due: Due | None) -> dict[str, object]:
        """When the start was due and how late it is (None for @reboot)."""
        if due is None:
            return {}
        late_ms = (self.clock() - due.fire_time) // timedelta(milliseconds=1)
        catch_up = True if due.catch_up else None
        return {"scheduled": iso_utc(due.fire_time), "late_ms": late_ms, "catch_up": catch_up}

    # -- exits and kills

    def reap(self) -> None:
        """Collect every exited child: our jobs (logged) and re-parented orphans."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            proc = self.running.pop(pid, None)
            if proc is not None:
                self._log_exit(proc, status)
                if proc.kill_at is not None:
                    self.doomed[proc.pid] = proc.kill_at

    def _log_exit(self, proc: JobProcess, status: int) -> None:
        duration_ms = int((self.monotonic() - proc.started) * 1000)
        self.log.emit(
            "exit", line=proc.job.line_no, pid=proc.pid, run_id=proc.run_id,
            **exit_fields(status),
            duration_ms=duration_ms,
        )

    def escalate(self) -> None:
        """SIGKILL what is left of terminated jobs once their kill delay is over."""
        now = self.monotonic()
        for proc in self.running.values():
            if proc.kill_at is not None and proc.kill_at <= now:
                proc.kill()
        for sid, kill_at in list(self.doomed.items()):
            if kill_at <= now:
                del self.doomed[sid]
                if sid not in self.running:  # else the pid is reused by a new job
                    proctree.signal_tree(None, signal.SIGKILL, session=sid)

    # -- stopping

    def terminate_all(self) -> None:
        """SIGTERM every running job's tree; :meth:`escalate` kills it after the delay."""
        kill_at = self.monotonic() + self.kill_after_s
        for proc in self.running.values():
            proc.terminate(kill_at)

    def kill_all(self) -> None:
        """SIGKILL every running job's tree, wait for each and log its exit."""
        for proc in list(self.running.values()):
            proc.kill()
            _, status = os.waitpid(proc.pid, 0)
            del self.running[proc.pid]
            self._log_exit(proc, status)

    def stop_leftovers(self) -> None:
        """TERM, then KILL, what jobs left running below us (daemons, setsid escapes)."""
        proctree.stop_tree(None, self.kill_after_s)


def _lineage(key: JobKey) -> JobKey:
    """A job key without its assignments: schedule, command and stdin (see table.parse_jobs)."""
    return key[:3]
