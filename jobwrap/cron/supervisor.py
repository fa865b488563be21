"""``jobwrap cron CRONTAB``: a foreground cron supervisor for containers and systemd.

It reads a user crontab and runs every job line through ``jobwrap run``, in a child process of
its own.  The parts, each in its module:

* :mod:`jobwrap.cron.table`: the job table (job lines, ``# jobwrap:`` directives) and ``--check``;
* :mod:`jobwrap.cron.due`: when jobs are due (one catch-up, clock jumps);
* :mod:`jobwrap.cron.launch`: how a job line runs (argv, environment, stdin, its session);
* :mod:`jobwrap.cron.instances`: the running jobs (overlap policies, reaping, kill escalation);
* :mod:`jobwrap.cron.eventlog`: the log, one line per event on stderr;
* this module: the loop, signals, systemd, and :func:`run_cron`.

The loop sleeps until the earliest next fire time of all jobs (at most :data:`MAX_SLEEP_S`, so
a clock step or a resume from suspend is noticed within a minute); a signal or a child's exit
wakes it at once.  ``@reboot`` lines run once, when the supervisor starts (not on reload).

Signals:

* SIGTERM/SIGINT: stop scheduling, wait up to the grace period (``grace_s``, 30 s by default)
  for running jobs to finish; then SIGTERM each running job's whole tree (its ``jobwrap run``
  records the run as killed by SIGTERM), SIGKILL what is left after the kill delay, do the same
  to anything jobs left running in the background, and exit 0.  A second SIGTERM/SIGINT ends
  the grace period at once.  Each job runs in a session of its own, so Ctrl-C in a terminal
  reaches the supervisor only, which then applies this rule.
* SIGHUP: re-read the file; bad lines are reported and skipped, good ones (re)scheduled; a job
  unchanged by the edit keeps its next time, running jobs keep running.  A file that cannot be
  read, or holds bad lines and no valid job line, keeps the previous jobs (``event=error``); a
  file of assignments alone removes every job.  A crontab read from stdin (``-``) cannot be
  re-read: a SIGHUP keeps its jobs (``event=error``).

The supervisor is a *child subreaper* (PID 1 is one already): orphaned descendants of jobs are
re-parented to it and reaped on SIGCHLD, so no zombies pile up.  A job's tree is the processes
of its session (``setsid``) among the supervisor's descendants.

systemd (``Type=notify``): ``READY=1`` once scheduling has started, ``WATCHDOG=1`` at half of
``WatchdogSec=`` from the scheduling loop, ``RELOADING=1`` then ``READY=1`` around a SIGHUP,
``STOPPING=1`` on stop.

Exit status: 0 after a stop by signal; 2 (a ConfigError raised before anything runs) when the
crontab cannot be read or holds bad lines and no valid job line.  A crontab with no job and no
bad line (assignments only) is supervised: the loop idles until a reload brings jobs.
``--check`` (:mod:`jobwrap.cron.check`): 0 when no line is bad, 1 otherwise.

No line can stop the supervisor: a job that cannot be started or fired is an ``error`` event
naming its line, and the loop goes on.  Assignments jobwrap does not act on (``MAILTO``) are a
``warning`` event at start and at each reload.

Testing: ``$JOBWRAP_CRON_SECONDS=1`` makes every field-based line take six fields, seconds
first, so tests can fire every second.  It exists for tests only.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable, Hashable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from jobwrap.config.values import parse_bool
from jobwrap.cron import sdnotify
from jobwrap.cron.check import RunValidator, check, ignored_variables
from jobwrap.cron.crontab import STDIN
from jobwrap.cron.due import Scheduler
from jobwrap.cron.eventlog import EventLog, utc_now
from jobwrap.cron.instances import RunningJobs
from jobwrap.cron.table import CronJob, JobTable, load_jobs
from jobwrap.cron.wakeup import Wakeup
from jobwrap.errors import ConfigError, ExitStatus
from jobwrap.process import tree as proctree
from jobwrap.process.child import ensure_standard_fds

DEFAULT_GRACE_S = 30.0
KILL_AFTER_S = 5.0  # SIGTERM → SIGKILL, for replace and after the grace period
MAX_SLEEP_S = 60.0  # bounds how late a clock step or a resume is noticed
SECONDS_VARIABLE = "JOBWRAP_CRON_SECONDS"
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
HANDLED_SIGNALS = (*STOP_SIGNALS, signal.SIGHUP, signal.SIGCHLD)


class Supervisor:
    """Run a crontab's jobs until SIGTERM/SIGINT.  See the module doc for the behaviour."""

    def __init__(
        self,
        path: str | Path,
        *,
        log_format: str = "text",
        grace_s: float = DEFAULT_GRACE_S,
        kill_after_s: float = KILL_AFTER_S,
        jobwrap_argv: Sequence[str] = (sys.executable, "-m", "jobwrap"),
        allow_seconds: bool = False,
        env: Mapping[str, str] | None = None,
        clock: Callable[[], datetime] = utc_now,
        monotonic: Callable[[], float] = time.monotonic,
        log_stream: TextIO | None = None,
    ) -> None:
        self.path = Path(path)
        self.grace_s = grace_s
        self.kill_after_s = kill_after_s
        self.allow_seconds = allow_seconds
        self.env = os.environ if env is None else env
        self.clock = clock
        self.monotonic = monotonic
        self.log = EventLog(log_format, log_stream, clock)
        self.scheduler = Scheduler()
        self.jobs = RunningJobs(
            self.log, kill_after_s=kill_after_s, jobwrap_argv=jobwrap_argv, env=self.env,
            clock=clock, monotonic=monotonic,
        )
        self.wakeup = Wakeup(HANDLED_SIGNALS)
        self.watchdog_s = sdnotify.watchdog_interval(self.env)
        self.table = JobTable(str(path), (), ())
        self.stop_signal: int | None = None
        self.next_ping: float | None = None  # monotonic time of the next WATCHDOG=1

    def run(self) -> int:
        """Supervise until stopped, then return 0.  Call once.

        Raises ConfigError, before starting anything, when the crontab cannot be read or has
        no valid job line (each bad line is logged first).
        """
        ensure_standard_fds()
        proctree.become_subreaper()
        self.wakeup.install()
        try:
            self.table = self._load_initial()
            self._start()
            while self.stop_signal is None:
                self.wakeup.wait(self._sleep_s())
                self._cycle()
            return self._shutdown()
        finally:
            self.wakeup.restore()

    # -- start and reload

    def _load_initial(self) -> JobTable:
        table = load_jobs(self.path, allow_seconds=self.allow_seconds)
        self._report_errors(table)
        if not table.jobs and table.errors:
            raise ConfigError(f"no valid job line in crontab {self.path}")
        return table  # no job and no bad line (assignments only): idle until a reload

    def _start(self) -> None:
        table = self.table
        self.scheduler.update({job.key: job.schedule for job in table.jobs}, self.clock())
        self.log.emit(
            "ready", crontab=str(self.path), jobs=len(table.jobs), bad_lines=len(table.errors),
            pid=os.getpid(),
        )
        for job in table.jobs:
            if job.schedule.is_reboot:
                self.jobs.launch(job, None)
        sdnotify.ready(self._status_text(), self.env)
        self._feed_watchdog()

    def _reload(self) -> None:
        """SIGHUP: take the file's good lines; keep the old jobs if it has none."""
        sdnotify.reloading(self.env)
        try:
            if str(self.path) == STDIN:
                raise ConfigError("a crontab read from stdin cannot be read again")
            table = load_jobs(self.path, allow_seconds=self.allow_seconds)
        except ConfigError as exc:
            self.log.emit("error", message=f"{exc}; keeping the previous jobs")
        else:
            self._report_errors(table)
            if table.jobs or not table.errors:
                self._install(table)
                self.log.emit("reload", jobs=len(table.jobs), bad_lines=len(table.errors))
            else:
                self.log.emit("error", message="no valid job line; keeping the previous jobs")
        sdnotify.ready(self._status_text(), self.env)

    def _install(self, table: JobTable) -> None:
        self.table = table
        self.scheduler.update({job.key: job.schedule for job in table.jobs}, self.clock())
        self.jobs.reattach(table.jobs)
        self.jobs.keep_replacements({job.key for job in table.jobs})

    def _report_errors(self, table: JobTable) -> None:
        for error in table.errors:
            self.log.emit("error", line=error.line_no, message=error.message)
        for warning in ignored_variables(table):
            self.log.emit("warning", line=warning.line_no, message=warning.message)

    def _status_text(self) -> str:
        return f"{len(self.table.jobs)} jobs from {self.path}"

    # -- the loop

    def _cycle(self) -> None:
        for signum in self.wakeup.take():
            if signum in STOP_SIGNALS and self.stop_signal is None:
                self.stop_signal = signum
            elif signum == signal.SIGHUP and self.stop_signal is None:
                self._reload()
        self.jobs.reap()
        self.jobs.escalate()
        if self.stop_signal is None:
            self._fire_due()
            self.jobs.start_replacements(self.table.jobs)
        self._feed_watchdog()

    def _sleep_s(self) -> float:
        now, mono = self.clock(), self.monotonic()
        wake = [MAX_SLEEP_S]
        next_time = self.scheduler.next_time()
        if next_time is not None:
            wake.append((next_time - now).total_seconds())
        if self.next_ping is not None:
            wake.append(self.next_ping - mono)
        wake += [deadline - mono for deadline in self.jobs.deadlines()]
        return max(0.0, min(wake))

    def _fire_due(self) -> None:
        tick = self.scheduler.advance(self.clock())
        if tick.rewound_s is not None:
            self.log.emit("clock", jump_s=round(tick.rewound_s), action="rescheduled")
        jobs: dict[Hashable, CronJob] = {job.key: job for job in self.table.jobs}
        for due in tick.due:
            job = jobs[due.key]
            try:
                self.jobs.fire(job, due)
            except Exception as exc:  # one line must never stop the supervisor (PID 1)
                self.log.emit("error", line=job.line_no, message=f"cannot fire: {exc!r}")

    def _feed_watchdog(self) -> None:
        if self.watchdog_s is None:
            return
        now = self.monotonic()
        if self.next_ping is None or now >= self.next_ping:
            sdnotify.watchdog(self.env)
            self.next_ping = now + self.watchdog_s / 2

    # -- stopping

    def _shutdown(self) -> int:
        signame = proctree.signal_name(self.stop_signal or signal.SIGTERM)
        self.log.emit("stop", signal=signame, running=len(self.jobs), grace_s=self.grace_s)
        sdnotify.stopping(env=self.env)
        self.jobs.replacing.clear()
        self._wait_for_jobs(self.grace_s, second_signal_ends=True)
        if self.jobs:
            self.jobs.terminate_all()
            self._wait_for_jobs(self.kill_after_s)
        self.jobs.kill_all()
        self.jobs.stop_leftovers()
        self.log.emit("stopped", signal=signame)
        return ExitStatus.OK

    def _wait_for_jobs(self, within_s: float, second_signal_ends: bool = False) -> None:
        deadline = self.monotonic() + within_s
        while self.jobs:
            remaining = deadline - self.monotonic()
            if remaining <= 0:
                return
            self.wakeup.wait(min(remaining, self._sleep_s()))
            signals = self.wakeup.take()
            self.jobs.reap()
            self._feed_watchdog()
            if second_signal_ends and any(s in STOP_SIGNALS for s in signals):
                return


# ---- entry points ------------------------------------------------------------------------


def seconds_enabled(env: Mapping[str, str] | None = None) -> bool:
    """Whether ``$JOBWRAP_CRON_SECONDS`` asks for 6-field lines (for tests)."""
    value = (os.environ if env is None else env).get(SECONDS_VARIABLE, "")
    return bool(value) and parse_bool(value, f"${SECONDS_VARIABLE}")


def run_cron(
    path: str | Path,
    *,
    check_only: bool = False,
    log_format: str = "text",
    grace_s: float = DEFAULT_GRACE_S,
    allow_seconds: bool | None = None,
    validate_run: RunValidator | None = None,
) -> int:
    """What ``jobwrap cron [--check]`` does; returns the exit status (see the module doc).

    ``allow_seconds`` None reads ``$JOBWRAP_CRON_SECONDS``.  ``validate_run`` checks the
    options of ``jobwrap run`` lines (the CLI supplies it, see :mod:`jobwrap.cron.check`).
    Raises ConfigError (status 2) when the crontab cannot be read or, when supervising, holds
    bad lines and no valid job line.
    """
    seconds = seconds_enabled() if allow_seconds is None else allow_seconds
    if check_only:
        report = check(path, datetime.now(UTC), allow_seconds=seconds,
                       validate_run=validate_run, env=os.environ)
        sys.stdout.write(report.text)
        sys.stdout.flush()
        return ExitStatus.OK if report.ok else ExitStatus.FAILURE
    supervisor = Supervisor(path, log_format=log_format, grace_s=grace_s, allow_seconds=seconds)
    return supervisor.run()
