"""Spawn the command, pump its output through unchanged, time it, stop it on timeout.

The contract (see the README's exit status table): the child's exit code is the result; a
child killed by signal N gives 128+N; a run that hit its timeout gives 124; a command that does
not exist gives 127 and one that cannot be executed 126.

The parts: :mod:`~jobwrap.process.child` spawns and reaps the child, :mod:`~jobwrap.process.pump`
copies its output (the hot loop), :mod:`~jobwrap.process.drainer` keeps late descendants'
output flowing, :mod:`~jobwrap.process.tree` stops the whole tree.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from jobwrap.errors import ExitStatus, exit_status_of
from jobwrap.output.analysis import Analysis, OutputAnalyzer
from jobwrap.output.capture import CapturedOutput, OutputCapture
from jobwrap.output.patterns import PatternSpec
from jobwrap.process import tree as proctree
from jobwrap.process.child import (
    default_sigchld,
    enlarge_pipe,
    ensure_standard_fds,
    killpg,
    spawn,
)
from jobwrap.process.pump import Pump
from jobwrap.process.terminal import ForegroundHandover

# A stop signal stops the whole tree (TERM, --kill-after, KILL); the others go to the child.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
FORWARDED_SIGNALS = (*STOP_SIGNALS, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)
STREAM_NAMES = ("stdout", "stderr")


class Relay(Protocol):
    """Whoever owns the signal handlers around the run (``jobwrap run``'s guard).

    ``attach(forward)`` before the child is spawned: from then on every forwarded signal goes
    to ``forward`` (queued until the child exists); ``attach(None)`` once it has been reaped.
    """

    def attach(self, forward: Callable[[int], None] | None) -> None: ...


@dataclass(frozen=True)
class RunSpec:
    """What to run and how to supervise it."""

    argv: tuple[str, ...]
    patterns: tuple[PatternSpec, ...] = ()
    timeout_s: float | None = None
    kill_after_s: float = 10.0
    capture: bool = True
    env: Mapping[str, str] | None = None  # None: inherit jobwrap's environment
    pass_fds: tuple[int, ...] = ()  # extra descriptors the child keeps (the run's lock)
    # Where a chunk for fd 1 or 2 goes (``--output on-failure`` holds it); None: to the fd.
    sink: Callable[[int, bytes], None] | None = None


@dataclass(frozen=True)
class RunResult:
    """What happened.  ``exit_status`` is what jobwrap exits with for this run."""

    run_id: str
    argv: tuple[str, ...]
    started_at: datetime
    duration_ms: int
    exit_status: int
    returncode: int | None = None  # the child's own exit code, when it exited
    signal: str | None = None  # e.g. "SIGTERM" when a signal killed it
    timed_out: bool = False
    spawn_error: str | None = None
    write_error: str | None = None  # jobwrap could not write the output: the run failed
    analysis: Analysis = field(default_factory=lambda: Analysis(0, 0, ()))
    cpu_user_s: float = 0.0
    cpu_sys_s: float = 0.0
    max_rss_kb: int = 0
    output: CapturedOutput | None = None


def new_run_id() -> str:
    return str(uuid.uuid4())


def run_command(spec: RunSpec, run_id: str | None = None, relay: Relay | None = None) -> RunResult:
    """Run ``spec.argv`` to completion under supervision.  Never raises for the child's sake.

    Without a ``relay`` the run installs its own handlers for the forwarded signals (in the
    main thread), and puts the previous ones back when the child has been reaped.
    """
    return _Run(spec, run_id or new_run_id()).execute(relay)


class _Run:
    def __init__(self, spec: RunSpec, run_id: str) -> None:
        self.spec = spec
        self.run_id = run_id
        self.pid: int | None = None
        self.reaped = False
        self.pending_signals: list[int] = []
        self.stop_signal: int | None = None  # the first stop signal jobwrap received
        self.watchdog: _Watchdog | None = None
        self.write_error: str | None = None

    def execute(self, relay: Relay | None) -> RunResult:
        closed = ensure_standard_fds()
        self.started_at = datetime.now(UTC)
        self.t0 = time.monotonic()
        in_main = threading.current_thread() is threading.main_thread()
        old_chld = default_sigchld() if in_main else None
        old_handlers: dict[int, Any] = {}
        if relay is not None:
            relay.attach(self.forward)
        elif in_main:
            old_handlers = self._forward_signals()
        try:
            # Compiled with the handlers in place: a signal meanwhile is queued, not lost.
            self.analyzer = OutputAnalyzer(self.spec.patterns)
            self.capture = OutputCapture() if self.spec.capture else None
            return self._spawn_and_supervise(in_main, closed)
        finally:
            if relay is not None:
                relay.attach(None)
            for signum, handler in old_handlers.items():
                signal.signal(signum, handler)
            if old_chld is not None:
                signal.signal(signal.SIGCHLD, old_chld)

    def _forward_signals(self) -> dict[int, Any]:
        old: dict[int, Any] = {}
        for signum in FORWARDED_SIGNALS:
            if signal.getsignal(signum) == signal.SIG_IGN:
                continue  # ignored when we started (nohup): stays ignored, for the child too
            try:
                old[signum] = signal.signal(signum, lambda n, _f: self.forward(n))
            except (OSError, ValueError):
                continue
        return old

    def forward(self, signum: int) -> None:
        """A signal for the job: a stop signal stops its whole tree, the others go to the child."""
        if self.pid is None:
            self.pending_signals.append(signum)
            return
        if self.reaped:
            return  # after reaping, the pid may belong to another process: absorbed
        if signum in STOP_SIGNALS:
            self._stop(signum)
            return
        try:
            os.kill(self.pid, signum)
        except ProcessLookupError:
            pass

    def _stop(self, signum: int) -> None:
        if self.stop_signal is not None:
            killpg(self.pid, signum)  # a second one: passed on, the escalation already runs
            return
        self.stop_signal = signum
        if self.watchdog is None:
            assert self.pid is not None
            self.watchdog = _Watchdog(self.pid, self.spec, timeout_s=None)
        self.watchdog.stop_now(signum)

    def _spawn_and_supervise(self, in_main: bool, closed: tuple[int, ...]) -> RunResult:
        pipes: dict[int, tuple[int, int]] = {}
        child_ends: dict[int, int] = {}
        for stream, fd in enumerate((1, 2)):
            if fd not in closed:
                read_end, write_end = os.pipe()
                enlarge_pipe(read_end)
                pipes[read_end] = (stream, fd)
                child_ends[fd] = write_end
        if self.spec.timeout_s is not None:
            proctree.become_subreaper()
        try:
            self.pid = spawn(self.spec.argv, self.spec.env, self.spec.pass_fds, child_ends,
                             closed)
        except OSError as exc:
            for fd in (*pipes, *child_ends.values()):
                os.close(fd)
            return self._spawn_failed(exc)
        for fd in child_ends.values():
            os.close(fd)
        if self.spec.timeout_s is not None:
            self.watchdog = _Watchdog(self.pid, self.spec, self.spec.timeout_s)
        for signum in self.pending_signals:
            self.forward(signum)
        terminal = ForegroundHandover(self.pid) if in_main else None
        pump = Pump(self.pid, pipes, self.spec.sink, self.analyzer, self.capture,
                    self.note_write_error)
        try:
            status, rusage = pump.run()
        finally:
            self.reaped = True
            if terminal:
                terminal.restore()
        duration_ms = int((time.monotonic() - self.t0) * 1000)
        watchdog, timed_out = self.watchdog, False
        if watchdog is not None:
            deadline = watchdog.stop()
            timed_out = watchdog.timed_out
            if deadline is not None:  # the tree was told to stop: what is left gets its grace
                pump.close_all()
                proctree.finish_tree(deadline - time.monotonic(), pgid=self.pid)
            proctree.reap_orphans()
        pump.hand_off(self.spec.pass_fds)
        return self._result(status, rusage, duration_ms, timed_out)

    def _result(self, status: int, rusage, duration_ms: int, timed_out: bool) -> RunResult:
        exit_status, signame = exit_status_of(status)
        code = os.waitstatus_to_exitcode(status)
        if timed_out:
            exit_status = ExitStatus.TIMEOUT
        elif self.stop_signal is not None and signame == "SIGKILL":
            # It had to be KILLed after --kill-after: the stop signal is why it ended.
            exit_status = ExitStatus.SIGNAL_BASE + self.stop_signal
        if self.write_error is not None and exit_status == 0:
            exit_status = ExitStatus.FAILURE  # its output was lost: as coreutils, 1
        analysis = self.analyzer.finish()
        return RunResult(
            run_id=self.run_id,
            argv=self.spec.argv,
            started_at=self.started_at,
            duration_ms=duration_ms,
            exit_status=int(exit_status),
            returncode=code if code >= 0 else None,
            signal=signame,
            timed_out=timed_out,
            write_error=self.write_error,
            analysis=analysis,
            cpu_user_s=round(rusage.ru_utime, 3),
            cpu_sys_s=round(rusage.ru_stime, 3),
            max_rss_kb=int(rusage.ru_maxrss),
            output=self._captured(analysis),
        )

    def note_write_error(self, stream: int, exc: OSError) -> None:
        if self.write_error is None:
            self.write_error = (f"cannot write the command's {STREAM_NAMES[stream]}: "
                                f"{exc.strerror or exc}; the run fails")

    def _captured(self, analysis: Analysis) -> CapturedOutput | None:
        if self.capture is None:
            return None
        return self.capture.finish(analysis.stdout_lines + analysis.stderr_lines)

    def _spawn_failed(self, exc: OSError) -> RunResult:
        import errno

        missing = exc.errno in (errno.ENOENT, errno.ENOTDIR)
        status = ExitStatus.NOT_FOUND if missing else ExitStatus.NOT_EXECUTABLE
        what = "command not found" if missing else "cannot execute"
        return RunResult(
            run_id=self.run_id,
            argv=self.spec.argv,
            started_at=self.started_at,
            duration_ms=int((time.monotonic() - self.t0) * 1000),
            exit_status=int(status),
            spawn_error=f"{what}: {self.spec.argv[0]} ({exc.strerror})",
        )


class _Watchdog:
    """Stop the tree from a thread, so a blocked write cannot delay it.

    It fires after ``timeout_s`` (None: only when asked by :meth:`stop_now`), then runs the
    one escalation: a signal to the whole tree, ``--kill-after`` for it to go, then SIGKILL.
    """

    def __init__(self, pgid: int, spec: RunSpec, timeout_s: float | None) -> None:
        self.pgid = pgid
        self.spec = spec
        self.timeout_s = timeout_s
        self.wake = threading.Event()  # set: fire now (or the child is done)
        self.done = threading.Event()
        self.requested: int = signal.SIGTERM
        self.timed_out = False
        self.deadline: float | None = None  # when the KILL is due, once it fired
        self.thread = threading.Thread(target=self._watch, name="jobwrap-watchdog", daemon=True)
        self.thread.start()

    def stop_now(self, signum: int) -> None:
        self.requested = signum
        self.wake.set()

    def _watch(self) -> None:
        asked = self.wake.wait(self.timeout_s)
        if self.done.is_set():
            return
        self.timed_out = not asked
        self.deadline = time.monotonic() + self.spec.kill_after_s
        proctree.signal_tree(self.pgid, self.requested)
        if self.done.wait(self.spec.kill_after_s):
            return
        proctree.signal_tree(self.pgid, signal.SIGKILL)

    def stop(self) -> float | None:
        """The child is reaped: end the thread; the KILL deadline if it fired."""
        self.done.set()
        self.wake.set()
        self.thread.join()
        return self.deadline
