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
import sys
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
from jobwrap.process.terminal import ForegroundHandover

# 256 KiB reads: large enough for few system calls, small enough that the analyzer's
# buffers are reused by the allocator (1 MiB reads fragmented the heap to 60 MiB with metas).
CHUNK = 256 << 10
PIPE_SIZE = 1 << 20
DRAIN_GRACE_S = 1.0  # how long output is still read after the child exits (see README)
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
        old_chld = _default_sigchld() if in_main else None
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
            _killpg(self.pid, signum)  # a second one: passed on, the escalation already runs
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
                _enlarge_pipe(read_end)
                pipes[read_end] = (stream, fd)
                child_ends[fd] = write_end
        if self.spec.timeout_s is not None:
            proctree.become_subreaper()
        try:
            self.pid = _spawn(self.spec, child_ends, closed)
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
        pump = _Pump(self, pipes)
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
        except BaseException:
            self.close_all()
            raise
        finally:
            if self.pidfd is not None:
                os.close(self.pidfd)
        # None: the child closed its output but is still running, so wait for it.
        return exited if exited is not None else _reap(pid)

    def close_all(self) -> None:
        for fd in list(self.pipes):
            self._close(fd)

    def hand_off(self, keep_closed: tuple[int, ...]) -> None:
        """Pipes a descendant still holds open after the drain grace go to a drainer.

        Closing them would kill that descendant with SIGPIPE on its next write; without
        jobwrap it would have lived and its output reached our stdout/stderr.  So a small
        detached process copies them there until EOF, and the run ends now.
        """
        if not self.pipes:
            return
        try:
            _spawn_drainer(self.pipes, keep_closed)
        except OSError:
            pass  # no drainer: closing is what jobwrap did before
        self.close_all()

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
            except OSError as exc:
                # Full disk, file size limit...: keep draining (the child is not blocked),
                # stop copying, and fail the run (the output it promised is lost).
                self.pipes[fd] = (stream, -1)
                self.run_.note_write_error(stream, exc)
        run = self.run_
        run.analyzer.feed(stream, data)
        if run.capture is not None:
            run.capture.feed(data)

    def _close(self, fd: int) -> None:
        if self.pipes.pop(fd, None) is not None:
            self.poller.unregister(fd)
            os.close(fd)


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


def _spawn(spec: RunSpec, child_ends: Mapping[int, int], closed: tuple[int, ...]) -> int:
    """posix_spawn (vfork-fast) into a new process group with stdin inherited.

    A standard descriptor that was closed when jobwrap started is closed for the child too,
    so ``jobwrap run -- echo hi >&-`` fails as ``echo hi >&-`` does.
    """
    actions: list[tuple] = [(os.POSIX_SPAWN_DUP2, w, fd) for fd, w in child_ends.items()]
    actions += [(os.POSIX_SPAWN_CLOSE, fd) for fd in closed]
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


# The drainer: copy each pipe to its destination until EOF; EPIPE closes that pipe (the writer
# then meets SIGPIPE as it would have without jobwrap); another write error discards the rest.
_DRAINER = """
import os, select, sys
pipes = {int(a): int(b) for a, b in (arg.split(':') for arg in sys.argv[1:])}
poller = select.poll()
for fd in pipes:
    poller.register(fd, select.POLLIN)
def write_all(fd, data):
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view):]
        except BlockingIOError:
            select.select([], [fd], [])
while pipes:
    for fd, _ in poller.poll():
        data = os.read(fd, 262144)
        if data and pipes[fd] >= 0:
            try:
                write_all(pipes[fd], data)
            except BrokenPipeError:
                data = b''
            except OSError:
                pipes[fd] = -1
        if not data:
            poller.unregister(fd)
            os.close(fd)
            del pipes[fd]
"""


def _spawn_drainer(pipes: Mapping[int, tuple[int, int]], keep_closed: tuple[int, ...]) -> None:
    """Start the drainer in a session of its own (no terminal signals), not waited for."""
    for fd in pipes:
        os.set_inheritable(fd, True)
    pairs = [f"{fd}:{dest}" for fd, (_stream, dest) in pipes.items()]
    actions: list[tuple] = [(os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0)]
    actions += [(os.POSIX_SPAWN_CLOSE, fd) for fd in keep_closed]  # e.g. the run's lock
    os.posix_spawn(
        sys.executable, [sys.executable, "-I", "-S", "-c", _DRAINER, *pairs], os.environ,
        file_actions=actions, setsid=True,
    )


def _killpg(pgid: int | None, sig: int) -> None:
    if pgid is None:
        return
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _default_sigchld() -> Any:
    """An inherited SIGCHLD=SIG_IGN makes the kernel reap our child before we can: undo it.

    Returns the disposition to put back after the run, or None when it was fine.
    """
    if signal.getsignal(signal.SIGCHLD) != signal.SIG_IGN:
        return None
    return signal.signal(signal.SIGCHLD, signal.SIG_DFL)


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


_CLOSED_AT_START: set[int] = set()


def ensure_standard_fds() -> tuple[int, ...]:
    """If jobwrap was started with fd 0, 1 or 2 closed, put /dev/null there; return which.

    Otherwise the next file opened (a lock, ``os.pipe()``) could get fd 1 and the output would
    go there.  Call it first thing; later calls still return what was closed at the first.
    """
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            _CLOSED_AT_START.add(fd)
            null = os.open(os.devnull, os.O_RDWR)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)
    return tuple(sorted(_CLOSED_AT_START))
