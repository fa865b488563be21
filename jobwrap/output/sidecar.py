"""Pattern matching in a process of its own, so that no pattern can hold the job back.

Python's ``re`` keeps the GIL for the whole of a match, and some patterns take exponential time
on some lines (``(a+)+$`` on ``aaa…a!``).  Matched in jobwrap's own process, such a line would
stop the copy of the output and the ``--timeout`` thread alike.  So the :class:`PatternScan`
runs in a *sidecar*: a process forked from jobwrap before the child starts and fed the chunks
the pump has just written out, through a pipe.  The contract with the pump (README, "Metas"):

* :meth:`Sidecar.feed` waits for room in the pipe only while the sidecar keeps pace — each
  wait ends within ``STALL_S`` or the sidecar is *behind* — so a matcher slower than the job
  slows it down at most as matching inline did, and a stuck one costs the output one
  ``STALL_S`` pause.  While behind, chunks are skipped for matching (never half-seen: the
  sidecar drops the line around a gap) until the pipe has room again.
* :meth:`Sidecar.finish` waits at most ``GRACE_S`` for the results.  A sidecar still matching
  then is interrupted (``re`` checks for signals while it matches) and answers with what it has
  found; one that does not answer within ``STOP_S`` is killed.  The results say whether they
  are complete: not when anything was skipped, interrupted or lost.

The sidecar is forked twice, so it is not in jobwrap's process tree: killing the job's tree on
a timeout and reaping orphans leave it alone, and init reaps it.  It closes every descriptor but
its two pipes (stdin, stdout, stderr become ``/dev/null``: it never holds jobwrap's output
open), leaves the terminal's session, ignores the signals meant for jobwrap (jobwrap decides
when it stops), never runs the parent's finalizers or flushes its buffers (``gc.freeze``,
``os._exit``), and exits by itself once jobwrap is gone (its result pipe has no reader).
"""

from __future__ import annotations

import gc
import marshal
import os
import select
import signal
import struct
import time
import warnings

from jobwrap.output.patterns import PatternSpec
from jobwrap.output.scan import GAP, MID_LINE, PatternScan

STALL_S = 0.1  # how long the pump waits for a sidecar that makes no progress
GRACE_S = 0.5  # how long the results may take after the job's output has ended
STOP_S = 0.3  # how long an interrupted sidecar may take to answer
PIPE_SIZE = 1 << 20
STOP_SIGNAL = signal.SIGUSR1  # from jobwrap: stop matching and answer now
_CHECK_SIGNAL = signal.SIGALRM  # the sidecar's own timer: is jobwrap still there?
_IGNORED = (
    signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR2,
    signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU, signal.SIGPIPE,
)
_HEADER = struct.Struct("<BI")  # stream | gap flags << 1, payload length
_PID = struct.Struct("<i")

Results = tuple[list[tuple[str, str]], bool]  # metas in spec order, complete


class Sidecar:
    """jobwrap's end: feed chunks without ever blocking for long, then collect the results."""

    def __init__(self, specs: list[PatternSpec] | tuple[PatternSpec, ...]) -> None:
        scan = PatternScan(specs)  # compiled here, where a bad pattern is still a usage error
        self.complete = True
        self.pending: memoryview | None = None  # the unwritten end of a frame already begun
        self.behind = False
        self.gaps = [0, 0]  # per stream: the gap flags its next frame carries
        self.data_w = self.result_r = -1
        self.pid = self.pidfd = -1
        self.answer = bytearray()
        try:
            self._start(scan)
        except OSError:
            self._lost()

    # --- jobwrap's side ---------------------------------------------------------------------

    def _start(self, scan: PatternScan) -> None:
        data_r, self.data_w = (_high_fd(fd) for fd in os.pipe())
        self.result_r, result_w = (_high_fd(fd) for fd in os.pipe())
        try:
            _enlarge_pipe(self.data_w)
            with warnings.catch_warnings():
                # Python 3.12+ warns about forking with threads (the prewarm import may run):
                # the sidecar runs only code imported before the fork, and takes no locks.
                warnings.simplefilter("ignore", DeprecationWarning)
                middle = os.fork()
            if middle == 0:
                _middle(data_r, self.data_w, self.result_r, result_w, scan)
            try:
                os.waitpid(middle, 0)
            except ChildProcessError:
                pass  # SIGCHLD ignored: the kernel reaped it
        finally:
            os.close(data_r)
            os.close(result_w)
        raw = _read_all(self.result_r, _PID.size, time.monotonic() + GRACE_S)
        if len(raw) != _PID.size:
            raise OSError("the pattern sidecar did not start")
        (self.pid,) = _PID.unpack(raw)
        try:
            # while the sidecar waits for its first frame it cannot exit: this pid is it
            self.pidfd = os.pidfd_open(self.pid)
        except (AttributeError, OSError):
            self.pidfd = -1  # old kernel: signal the pid itself
        os.set_blocking(self.data_w, False)

    def feed(self, stream: int, data: bytes) -> None:
        """Hand one chunk to the sidecar, or skip it when the sidecar is behind."""
        if self.data_w < 0:
            return
        if self.pending is not None and not self._push(wait=not self.behind):
            self._skip(stream, data)
            return
        header = _HEADER.pack(stream | self.gaps[stream] << 1, len(data))
        try:
            written = os.writev(self.data_w, (header, data))
        except BlockingIOError:
            written = 0
        except OSError:  # the sidecar is gone
            self._lost()
            return
        if written == len(header) + len(data):
            self.gaps[stream] = 0
            self.behind = False
            return
        if written == 0 and self.behind:
            self._skip(stream, data)
            return
        self.gaps[stream] = 0  # this frame is begun: it will be finished before any other
        self.pending = memoryview(header + data)[written:]
        self._push(wait=True)

    def _push(self, wait: bool, deadline: float | None = None) -> bool:
        """Write what is left of the frame begun; wait for room only while the sidecar
        progresses (each wait at most STALL_S, all of them before ``deadline``)."""
        while self.pending is not None:
            try:
                written = os.write(self.data_w, self.pending)
            except BlockingIOError:
                written = 0
            except OSError:
                self._lost()
                return False
            self.pending = self.pending[written:] if written < len(self.pending) else None
            if self.pending is None:
                return True
            limit = STALL_S if deadline is None else min(STALL_S, deadline - time.monotonic())
            if not wait or limit <= 0 or not _wait(self.data_w, select.POLLOUT, limit):
                self.behind = True
                return False
        return True

    def _skip(self, stream: int, data: bytes) -> None:
        self.complete = False
        self.gaps[stream] = GAP | (0 if data.endswith(b"\n") else MID_LINE)

    def _lost(self) -> None:
        self.complete = False
        self.pending = None
        if self.data_w >= 0:
            os.close(self.data_w)
            self.data_w = -1

    def finish(self) -> Results:
        """The sidecar's results; they are final within GRACE_S + STOP_S whatever it does."""
        deadline = time.monotonic() + GRACE_S
        if self.data_w >= 0 and self.pending is not None:
            self._push(wait=True, deadline=deadline)
        if self.pending is not None:
            self.complete = False  # the last frame stays unfinished: the sidecar drops it
        if self.data_w >= 0:
            os.close(self.data_w)
            self.data_w = -1
        answer = self._answer(deadline)
        if answer is None and self.pid > 0:
            self._signal(STOP_SIGNAL)
            answer = self._answer(time.monotonic() + STOP_S)
            if answer is None:
                self._signal(signal.SIGKILL)
        self._close()
        metas, complete = answer if answer is not None else ([], False)
        return metas, complete and self.complete

    def _answer(self, deadline: float) -> Results | None:
        if self.result_r < 0:
            return None
        self.answer += _read_all(self.result_r, 1 << 24, deadline, until_eof=True)
        try:
            metas, complete = marshal.loads(bytes(self.answer))
            return [(str(n), str(v)) for n, v in metas], bool(complete)
        except (EOFError, ValueError, TypeError):
            return None

    def _signal(self, signum: int) -> None:
        try:
            if self.pidfd >= 0:
                signal.pidfd_send_signal(self.pidfd, signum)
            else:
                os.kill(self.pid, signum)
        except OSError:
            pass  # already gone

    def _close(self) -> None:
        for fd in (self.result_r, self.pidfd):
            if fd >= 0:
                os.close(fd)
        self.result_r = self.pidfd = -1


# --- the sidecar's side -------------------------------------------------------------------


class _Stop(Exception):
    """Raised in the sidecar by jobwrap's STOP_SIGNAL, even in the middle of a match."""


def _middle(data_r: int, data_w: int, result_r: int, result_w: int, scan: PatternScan) -> None:
    """The first fork: start a new session, fork the sidecar, tell jobwrap its pid, exit."""
    try:
        os.setsid()
        pid = os.fork()
        if pid == 0:
            _sidecar(data_r, data_w, result_r, result_w, scan)
        os.write(result_w, _PID.pack(pid))
    finally:
        os._exit(0)


def _sidecar(data_r: int, data_w: int, result_r: int, result_w: int, scan: PatternScan) -> None:
    try:
        gc.freeze()  # objects inherited from jobwrap are never collected (or finalized) here
        _name_self(b"jobwrap-match")
        os.close(data_w)
        os.close(result_r)
        _keep_only(data_r, result_w)
        for signum in _IGNORED:
            signal.signal(signum, signal.SIG_IGN)
        armed = [True]

        def stop(_signum, _frame) -> None:
            if armed[0]:
                armed[0] = False
                raise _Stop

        def check(_signum, _frame) -> None:
            if _wait(result_w, 0, 0):  # POLLERR: nobody will read the results any more
                os._exit(0)

        signal.signal(STOP_SIGNAL, stop)
        signal.signal(_CHECK_SIGNAL, check)
        signal.setitimer(signal.ITIMER_REAL, 1.0, 1.0)
        complete, metas = True, None
        try:
            try:
                _match_frames(data_r, scan)
                metas = scan.finish()
            finally:
                armed[0] = False
        except _Stop:
            complete = False
        if metas is None:
            metas = scan.results()
        signal.setitimer(signal.ITIMER_REAL, 0)
        os.set_blocking(result_w, True)
        _write_all(result_w, marshal.dumps((metas, complete)))
        os._exit(0)
    except BaseException:
        os._exit(1)


def _match_frames(data_r: int, scan: PatternScan) -> None:
    with open(data_r, "rb", buffering=1 << 18) as frames:
        while True:
            header = frames.read(_HEADER.size)
            if len(header) < _HEADER.size:
                return
            flags, size = _HEADER.unpack(header)
            data = frames.read(size)
            if len(data) < size:
                return  # jobwrap gave up on this frame at the end: drop it
            scan.feed(flags & 1, data, flags >> 1)


def _keep_only(*keep: int) -> None:
    """/dev/null on 0, 1 and 2; every other descriptor but ``keep`` closed."""
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        if fd != null:
            os.dup2(null, fd)
    if null > 2:
        os.close(null)
    lo = 3
    for fd in sorted(keep):
        os.closerange(lo, fd)
        lo = fd + 1
    os.closerange(lo, max(lo, os.sysconf("SC_OPEN_MAX")))


# --- small helpers ------------------------------------------------------------------------


def _name_self(name: bytes) -> None:
    """Show up in ``ps -o comm``/``top`` as what it is, not as a second ``jobwrap run``."""
    try:
        with open("/proc/self/comm", "wb") as comm:
            comm.write(name)
    except OSError:
        pass


def _high_fd(fd: int) -> int:
    """Keep the pipes off 0, 1 and 2, which a jobwrap started with them closed fills later."""
    if fd > 2:
        return fd
    import fcntl

    high = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3)
    os.close(fd)
    return high


def _enlarge_pipe(fd: int) -> None:
    try:
        import fcntl

        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
    except (ImportError, AttributeError, OSError):
        pass  # not Linux, or over the user's pipe quota: the default size still works


def _wait(fd: int, events: int, timeout_s: float) -> bool:
    poller = select.poll()
    poller.register(fd, events)
    try:
        return bool(poller.poll(max(0.0, timeout_s) * 1000))
    except InterruptedError:
        return False


def _read_all(fd: int, limit: int, deadline: float, until_eof: bool = False) -> bytes:
    """Read up to ``limit`` bytes (or to EOF) before ``deadline``."""
    got = bytearray()
    while len(got) < limit:
        if not _wait(fd, select.POLLIN, deadline - time.monotonic()):
            break
        chunk = os.read(fd, limit - len(got))
        if not chunk:
            break
        got += chunk
        if not until_eof and len(got) >= limit:
            break
    return bytes(got)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
