"""The child process itself: spawning it, reaping it, and the descriptors it gets."""

from __future__ import annotations

import os
import signal
from collections.abc import Mapping, Sequence
from typing import Any

PIPE_SIZE = 1 << 20


def spawn(argv: Sequence[str], env: Mapping[str, str] | None, pass_fds: Sequence[int],
          child_ends: Mapping[int, int], closed: tuple[int, ...]) -> int:
    """posix_spawn (vfork-fast) into a new process group with stdin inherited.

    A standard descriptor that was closed when jobwrap started is closed for the child too,
    so ``jobwrap run -- echo hi >&-`` fails as ``echo hi >&-`` does.
    """
    actions: list[tuple] = [(os.POSIX_SPAWN_DUP2, w, fd) for fd, w in child_ends.items()]
    actions += [(os.POSIX_SPAWN_CLOSE, fd) for fd in closed]
    for fd in pass_fds:
        os.set_inheritable(fd, True)
    return os.posix_spawnp(
        argv[0],
        list(argv),
        os.environ if env is None else env,
        file_actions=actions,
        setpgroup=0,
        # Python ignores these two; the child must get the defaults, as with subprocess.
        setsigdef=(signal.SIGPIPE, signal.SIGXFSZ),
    )


def killpg(pgid: int | None, sig: int) -> None:
    if pgid is None:
        return
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def default_sigchld() -> Any:
    """An inherited SIGCHLD=SIG_IGN makes the kernel reap our child before we can: undo it.

    Returns the disposition to put back after the run, or None when it was fine.
    """
    if signal.getsignal(signal.SIGCHLD) != signal.SIG_IGN:
        return None
    return signal.signal(signal.SIGCHLD, signal.SIG_DFL)


def pidfd_of(pid: int) -> int | None:
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None  # old kernel or not Linux: the loop polls the child every 50 ms instead


def try_reap(pid: int):
    got, status, rusage = os.wait4(pid, os.WNOHANG)
    return (status, rusage) if got == pid else None


def reap(pid: int):
    _, status, rusage = os.wait4(pid, 0)
    return status, rusage


def enlarge_pipe(fd: int) -> None:
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
