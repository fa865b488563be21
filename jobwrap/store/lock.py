"""No overlap: an exclusive lock per job, held by the job's process tree, never stale.

``jobwrap run --lock [NAME]`` takes an ``flock(2)`` lock on ``<state dir>/locks/<name>.lock``
before it starts the command, and passes the locked descriptor to the command
(``RunSpec.pass_fds``).  A ``flock`` lock belongs to the *open file description*, which every
process that inherited the descriptor shares, and the kernel drops it when the last of them
closes it or exits.  So:

* the lock is held while jobwrap **or** any process of the job's tree that kept the
  descriptor is alive (descendants inherit it unless they close it);
* **who holds it when jobwrap itself is killed** (even ``kill -9``): the running command and
  its descendants do.  The next run is still skipped until the job has finished, as it should
  be: the job is still running;
* when the whole tree is gone -- exited, crashed, SIGKILLed, machine rebooted -- the kernel has
  already released the lock: there is no stale lock file to clean up, ever.  A lock file that
  exists but is not locked is free.

A command that closes every inherited descriptor (some daemons do) keeps the lock only while
jobwrap lives.  Lock files are never deleted: deleting one while another process waits on it
would let two runs lock two different files of the same name.

The file's content says who took the lock (jobwrap's pid, the run id, when), so a skipped run
can say which run it yielded to.  That pid is jobwrap's: if jobwrap was killed it may be gone
while its job still holds the lock.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from jobwrap.errors import StateError
from jobwrap.store.files import open_private, private_dir

LOCK_DIR = "locks"
# Waiting polls with LOCK_NB: a blocking flock cannot be given a timeout without a signal or a
# thread left blocked in the kernel.  The interval grows to this cap, so a lock freed while we
# wait is taken within ~0.1 s and a long wait costs ten wake-ups a second at most.
POLL_MIN_S = 0.005
POLL_MAX_S = 0.1
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class LockHolder:
    """What the lock file says about the run that took the lock (fields may be unknown)."""

    name: str
    pid: int | None = None
    run_id: str | None = None
    started_at: str | None = None  # ISO 8601, UTC

    def describe(self) -> str:
        """``previous run (pid 123, started 2024-05-01T02:30:00+00:00)``, for skip messages."""
        details = []
        if self.pid is not None:
            details.append(f"pid {self.pid}")
        if self.started_at:
            details.append(f"started {self.started_at}")
        return f"previous run ({', '.join(details)})" if details else "a previous run"

    def skip_message(self) -> str:
        """The one line a skipped run prints and records."""
        return f"skipped: {self.describe()} still holds lock {self.name!r}"


class JobLock:
    """A lock taken by :func:`acquire`.  Pass :attr:`fd` to the child; :meth:`release` after.

    Releasing only closes jobwrap's own descriptor: copies a running tree inherited keep the
    lock held until they are gone too, which is the point.
    """

    def __init__(self, name: str, path: Path, fd: int) -> None:
        self.name = name
        self.path = path
        self.fd: int | None = fd

    def holder(self) -> LockHolder | None:
        """Who the lock file names (this run, once acquired)."""
        return read_holder(self.path, self.name)

    def release(self) -> None:
        """Close jobwrap's descriptor; idempotent."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> JobLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def lock_path(state_dir: Path, name: str) -> Path:
    """``<state_dir>/locks/<readable part>-<hash>.lock``: any string works as a name.

    The hash of the whole name keeps two names that sanitise alike apart; the readable part
    lets a person find a job's lock with ``ls``.
    """
    digest = hashlib.sha256(name.encode("utf-8", "surrogateescape")).hexdigest()[:16]
    readable = _UNSAFE.sub("_", name).strip("._-")[:48] or "job"
    return Path(state_dir) / LOCK_DIR / f"{readable}-{digest}.lock"


def acquire(
    state_dir: Path,
    name: str,
    wait_s: float | None = None,
    *,
    run_id: str | None = None,
    monotonic: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> JobLock | None:
    """Take the lock called ``name``; None when another run holds it past ``wait_s``.

    ``wait_s`` None or 0: one attempt.  Otherwise try until ``wait_s`` seconds have passed.
    On success the file records this process's pid, ``run_id`` and the time.  StateError when
    the lock file cannot be created or opened (the caller decides whether to run unlocked).
    """
    path = lock_path(state_dir, name)
    fd = _open(path)
    try:
        if not wait_for_flock(fd, wait_s or 0.0, monotonic, sleep):
            os.close(fd)
            return None
        _write_holder(fd, name, run_id)
    except BaseException:
        os.close(fd)  # closing drops the lock if we had it
        raise
    return JobLock(name, path, fd)


def holder(state_dir: Path, name: str) -> LockHolder:
    """Who the lock file names (for a skip message); fields are None when unknown."""
    return read_holder(lock_path(state_dir, name), name) or LockHolder(name)


def read_holder(path: Path, name: str) -> LockHolder | None:
    """Parse a lock file; None when it is missing, empty or being rewritten."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as f:
            data = json.loads(f.read(64 * 1024))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    pid = data.get("pid")
    return LockHolder(
        name=name,
        pid=pid if isinstance(pid, int) else None,
        run_id=_str_or_none(data.get("run_id")),
        started_at=_str_or_none(data.get("started_at")),
    )


def _open(path: Path) -> int:
    try:
        private_dir(path.parent)
        # O_CLOEXEC keeps it from leaking into unrelated children (the runner makes it
        # inheritable for the job only); O_NOFOLLOW: a symlink planted at this predictable
        # name must not make us truncate and write its target.
        return open_private(path)
    except OSError as exc:
        raise StateError(f"cannot open lock file {path}: {exc.strerror}") from None


def wait_for_flock(
    fd: int,
    wait_s: float,
    monotonic: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> bool:
    """Take an exclusive ``flock`` on ``fd`` within ``wait_s`` seconds (0: one attempt)."""
    deadline = monotonic() + wait_s
    interval = POLL_MIN_S
    while True:
        if _try_lock(fd):
            return True
        remaining = deadline - monotonic()
        if remaining <= 0:
            return False
        sleep(min(interval, remaining))
        interval = min(interval * 2, POLL_MAX_S)


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError as exc:
        raise StateError(f"cannot lock: {exc.strerror}") from None
    return True


def _write_holder(fd: int, name: str, run_id: str | None) -> None:
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    record = {"name": name, "pid": os.getpid(), "run_id": run_id, "started_at": started_at}
    text = json.dumps(record)  # ASCII: any name, even one with undecodable bytes, is safe
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, (text + "\n").encode("ascii"), 0)
    except OSError:
        pass  # the lock is ours all the same; only the skip message of others gets vaguer


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) and value else None
