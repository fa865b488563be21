"""Spawn the command, pump its output through unchanged, time it, stop it on timeout.

The contract (see the README's exit status table): the child's exit code is the result; a
child killed by signal N gives 128+N; a run that hit its timeout gives 124; a command that does
not exist gives 127 and one that cannot be executed 126.

How the hot loop stays fast: the child writes into pipes enlarged to 1 MiB, jobwrap reads large
chunks with one ``os.read`` and writes the very same bytes object to its own stdout or stderr,
then hands it to the analyzer and the capture, which never copy it on the common path.
"""

from __future__ import annotations

import os
import select
import signal
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from jobwrap.errors import ExitStatus
from jobwrap.output.analysis import Analysis, OutputAnalyzer
from jobwrap.output.capture import CapturedOutput, OutputCapture
from jobwrap.output.patterns import PatternSpec
from jobwrap.process import tree as proctree
from jobwrap.process.terminal import ForegroundHandover

# 256 KiB reads: large enough for few system calls, small enough that the analyzer's
# buffers are reused by the allocator (1 MiB reads fragmented the heap to 60 MiB with metas).
CHUNK = 256 << 10
PIPE_SIZE = 1 << 20
DRAIN_GRACE_S = 1.0  # how long output is still read after the child exits (see README)
FORWARDED_SIGNALS = (
    signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2,
)


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
    analysis: Analysis = field(default_factory=lambda: Analysis(0, 0, ()))
    cpu_user_s: float = 0.0
    cpu_sys_s: float = 0.0
    max_rss_kb: int = 0
    output: CapturedOutput | None = None


def new_run_id() -> str:
    return str(uuid.uuid4())


def run_command(spec: RunSpec, run_id: str | None = None) -> RunResult:
    """Run ``spec.argv`` to completion under supervision.  Never raises for the child's sake."""
    return _Run(spec, run_id or new_run_id()).execute()


class _Run:
    def __init__(self, spec: RunSpec, run_id: str) -> None:
        self.spec = spec
        self.run_id = run_id
        self.analyzer = OutputAnalyzer(spec.patterns)
        self.capture = OutputCapture() if spec.capture else None
        self.pid: int | None = None
        self.reaped = False
        self.pending_signals: list[int] = []

    def execute(self) -> RunResult:
        ensure_standard_fds()
        self.started_at = datetime.now(UTC)
        self.t0 = time.monotonic()
        in_main = threading.current_thread() is threading.main_thread()
        old_handlers = self._forward_signals() if in_main else {}
        try:
            return self._spawn_and_supervise(in_main)
        finally:
            for signum, handler in old_handlers.items():
                signal.signal(signum, handler)

    def _forward_signals(self) -> dict[int, Any]:
        old: dict[int, Any] = {}
        for signum in FORWARDED_SIGNALS:
            try:
                old[signum] = signal.signal(signum, self._on_signal)
            except (OSError, ValueError):
                continue
        return old

    def _on_signal(self, signum: int, _frame: object) -> None:
        # Only signal a pid we have not reaped: after reaping, the number may belong to another.
        if self.pid is None:
            self.pending_signals.append(signum)
        elif not self.reaped:
            try:
                os.kill(self.pid, signum)
            except ProcessLookupError:
                pass

    def _spawn_and_supervise(self, in_main: bool) -> RunResult:
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        for fd in (out_r, err_r):
            _enlarge_pipe(fd)
        if self.spec.timeout_s is not None:
            proctree.become_subreaper()
        try:
            self.pid = _spawn(self.spec, out_w, err_w)
        except OSError as exc:
            for fd in (out_r, out_w, err_r, err_w):
                os.close(fd)
            return self._spawn_failed(exc)
        os.close(out_w)
        os.close(err_w)
        for signum in self.pending_signals:
            self._on_signal(signum, None)
        terminal = ForegroundHandover(self.pid) if in_main else None
        watchdog = _Watchdog(self.pid, self.spec) if self.spec.timeout_s is not None else None
        try:
            status, rusage = _Pump(self, {out_r: (0, 1), err_r: (1, 2)}).run()
        finally:
            self.reaped = True
            if terminal:
                terminal.restore()
        duration_ms = int((time.monotonic() - self.t0) * 1000)
        timed_out = False
        if watchdog is not None:
            timed_out = watchdog.stop()
            if timed_out:
                proctree.signal_tree(self.pid, signal.SIGKILL)
                proctree.kill_leftovers(wait_s=self.spec.kill_after_s)
            proctree.reap_orphans()
        return self._result(status, rusage, duration_ms, timed_out)

    def _result(self, status: int, rusage, duration_ms: int, timed_out: bool) -> RunResult:
        code = os.waitstatus_to_exitcode(status)
        signame = proctree.signal_name(-code) if code < 0 else None
        exit_status = ExitStatus.SIGNAL_BASE - code if code < 0 else code
        if timed_out:
            exit_status = ExitStatus.TIMEOUT
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
            analysis=analysis,
            cpu_user_s=round(rusage.ru_utime, 3),
            cpu_sys_s=round(rusage.ru_stime, 3),
            max_rss_kb=int(rusage.ru_maxrss),
            output=self._captured(analysis),
        )

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


class _Pump:
    """Copy both pipes to jobwrap's own stdout/stderr until the child is gone."""

    def __init__(self, run: _Run, pipes: dict[int, tuple[int, int]]) -> None:
        self.run_ = run
        self.pipes = pipes  # read fd -> (stream index, destination fd or -1 once broken)
        self.write = run.spec.sink or _write_all
        self.poller = select.poll()
        for fd in pipes:
            self.poller.register(fd, select.POLLIN)

    def run(self):
        """Pump until the pipes close (or the drain grace ends); return (status, rusage)."""
        pid = self.run_.pid
        assert pid is not None
        self.pidfd = _pidfd(pid)
        if self.pidfd is not None:
            self.poller.register(self.pidfd, select.POLLIN)
        try:
            exited = self._loop(pid)
        finally:
            for fd in list(self.pipes):
                self._close(fd)
            if self.pidfd is not None:
                os.close(self.pidfd)
        # None: the child closed its output but is still running, so wait for it.
        return exited if exited is not None else _reap(pid)

    def _loop(self, pid: int):
        exited, drain_until = None, 0.0
        while self.pipes:
            timeout_ms: float | None
            if exited is not None:
                timeout_ms = max(0.0, (drain_until - time.monotonic()) * 1000)
            else:
                timeout_ms = None if self.pidfd is not None else 50
            child_event = False
            for fd, _ in self.poller.poll(timeout_ms):
                if fd in self.pipes:
                    self._pump_once(fd)
                elif fd == self.pidfd:
                    child_event = True
            if exited is None:
                if child_event or self.pidfd is None:
                    exited = _try_reap(pid)
                if exited is not None:
                    drain_until = time.monotonic() + DRAIN_GRACE_S
                    if self.pidfd is not None:
                        self.poller.unregister(self.pidfd)
            elif time.monotonic() >= drain_until:
                break  # a descendant still holds the pipes open: stop waiting for it
        return exited

    def _pump_once(self, fd: int) -> None:
        data = os.read(fd, CHUNK)
        if not data:
            self._close(fd)
            return
        stream, dest = self.pipes[fd]
        if dest >= 0:
            try:
                self.write(dest, data)
            except BrokenPipeError:
                # Our reader went away: close the pipe so the child meets the same fate it
                # would have met writing there directly (SIGPIPE / EPIPE).
                self._close(fd)
            except OSError:
                self.pipes[fd] = (stream, -1)  # destination unusable: keep draining, stop copying
        run = self.run_
        run.analyzer.feed(stream, data)
        if run.capture is not None:
            run.capture.feed(data)

    def _close(self, fd: int) -> None:
        if self.pipes.pop(fd, None) is not None:
            self.poller.unregister(fd)
            os.close(fd)


class _Watchdog:
    """Enforce the timeout from a thread, so a blocked write cannot delay it."""

    def __init__(self, pgid: int, spec: RunSpec) -> None:
        self.pgid = pgid
        self.spec = spec
        self.done = threading.Event()
        self.timed_out = False
        self.thread = threading.Thread(target=self._watch, name="jobwrap-timeout", daemon=True)
        self.thread.start()

    def _watch(self) -> None:
        assert self.spec.timeout_s is not None
        if self.done.wait(self.spec.timeout_s):
            return
        self.timed_out = True
        proctree.signal_tree(self.pgid, signal.SIGTERM)
        if self.done.wait(self.spec.kill_after_s):
            return
        proctree.signal_tree(self.pgid, signal.SIGKILL)

    def stop(self) -> bool:
        self.done.set()
        self.thread.join()
        return self.timed_out


def _spawn(spec: RunSpec, out_w: int, err_w: int) -> int:
    """posix_spawn (vfork-fast) into a new process group with stdin inherited."""
    actions = [(os.POSIX_SPAWN_DUP2, out_w, 1), (os.POSIX_SPAWN_DUP2, err_w, 2)]
    for fd in spec.pass_fds:
        os.set_inheritable(fd, True)
    env = os.environ if spec.env is None else spec.env
    return os.posix_spawnp(
        spec.argv[0],
        list(spec.argv),
        env,
        file_actions=actions,
        setpgroup=0,
        # Python ignores these two; the child must get the defaults, as with subprocess.
        setsigdef=(signal.SIGPIPE, signal.SIGXFSZ),
    )


def _write_all(fd: int, data: bytes) -> None:
    """Write every byte, also to a descriptor someone else made non-blocking."""
    try:
        written = os.write(fd, data)
    except BlockingIOError:
        written = 0
    if written < len(data):
        view = memoryview(data)
        while written < len(data):
            try:
                written += os.write(fd, view[written:])
            except BlockingIOError:
                # A non-blocking stdout (set by whoever shares it) is full: wait, don't drop.
                poller = select.poll()
                poller.register(fd, select.POLLOUT)
                poller.poll()


def _pidfd(pid: int) -> int | None:
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None  # old kernel or not Linux: the loop polls the child every 50 ms instead


def _try_reap(pid: int):
    got, status, rusage = os.wait4(pid, os.WNOHANG)
    return (status, rusage) if got == pid else None


def _reap(pid: int):
    _, status, rusage = os.wait4(pid, 0)
    return status, rusage


def _enlarge_pipe(fd: int) -> None:
    try:
        import fcntl

        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
    except (ImportError, AttributeError, OSError):
        pass  # not Linux, or over the user's pipe quota: the default size still works


def ensure_standard_fds() -> None:
    """If jobwrap was started with fd 0, 1 or 2 closed, put /dev/null there.

    Otherwise ``os.pipe()`` could hand out fd 1 and the child would lose its stdout.
    """
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)
