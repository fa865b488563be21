"""How jobwrap opens its SQLite files: the same safe settings and migrations everywhere.

Every connection is in autocommit mode (writers use :func:`immediate`, so a writer waits its
turn instead of failing with "database is locked"), waits up to ``busy_timeout_ms`` for other
writers, and uses WAL with ``synchronous = NORMAL``.  The files are 0600 (see
:mod:`jobwrap.store.files`; SQLite gives the ``-wal`` and ``-shm`` files the database's mode).

The schema is a list of steps: step N (1-based) brings a file from ``user_version`` N-1 to N,
so a new file runs them all and an old one only those it lacks.  A step is never edited once
released: a change is a new step.

:func:`prepare` does the one-time set-up (WAL, migrations) under an ``flock`` on a side file:
two processes creating the same new file at once would otherwise race, and switching a file to
WAL fails at once with "database is locked" (SQLite does not wait for it) while another
connection is reading it.
"""

from __future__ import annotations

import errno
import fcntl
import os
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from jobwrap.errors import StateError
from jobwrap.store.files import open_private

# What callers outside store/ need of sqlite3, so that store/ stays its one owner: the type of
# a connection and the family of every error SQLite raises.
Connection = sqlite3.Connection
Error = sqlite3.Error


def connect(path: Path, busy_timeout_ms: int) -> sqlite3.Connection:
    """A read-write connection (read-only if the file may only be read); creates it 0600."""
    try:
        os.close(open_private(path))
    except OSError as exc:
        if exc.errno not in (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC):
            raise
    conn = sqlite3.connect(path, timeout=busy_timeout_ms / 1000, isolation_level=None)
    try:
        conn.execute(f"PRAGMA busy_timeout = {busy_timeout_ms}")
        conn.execute("PRAGMA synchronous = NORMAL")  # with WAL: durable across app crashes
    except BaseException:
        conn.close()
        raise
    return conn


def connect_read_only(path: Path, busy_timeout_ms: int) -> sqlite3.Connection:
    """A connection that writes nothing, for a file on a read-only or full filesystem.

    ``mode=ro`` still needs the WAL index (``-shm``): where that cannot be created either,
    ``immutable=1`` reads the database file alone (the last changes may still be in an
    uncheckpointed ``-wal``, which is then not seen).  Raises sqlite3.Error.
    """
    errors: list[sqlite3.Error] = []
    for query in ("mode=ro", "immutable=1"):
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?{query}", uri=True,
                               timeout=busy_timeout_ms / 1000, isolation_level=None)
        try:
            conn.execute(f"PRAGMA busy_timeout = {busy_timeout_ms}")
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
            return conn
        except sqlite3.Error as exc:
            conn.close()
            errors.append(exc)
    raise errors[0]


@contextmanager
def immediate(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """A ``BEGIN IMMEDIATE`` transaction: committed on success, rolled back on any exception.

    Immediate, because a deferred transaction that later wants to write can fail with
    "database is locked" without waiting; an immediate one waits its turn (busy timeout).
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


@contextmanager
def snapshot(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """A read transaction: every SELECT in it sees the same snapshot (WAL: no lock wait).

    In autocommit mode each statement would see its own, so two related reads could see a
    writer's change half done.  Ended (COMMIT, which a read-only transaction makes cheap)
    whatever happens inside.
    """
    conn.execute("BEGIN")
    try:
        yield conn
    finally:
        conn.execute("COMMIT")


def prepare(conn: sqlite3.Connection, path: Path, steps: Sequence[str], wait_s: float) -> None:
    """Make the file ready (WAL mode, every migration step), one process at a time.

    Every opener takes the side lock, even for a file long set up (an ``flock`` costs
    microseconds): a process merely reading the file while another switches it to WAL would
    make that switch fail.  The lock is held for two reads, or for the set-up of a new file;
    a holder that is stopped (Ctrl-Z) delays the others ``wait_s`` at most.  Raises
    sqlite3.Error; StateError for a file of a newer jobwrap or a lock not had in time; OSError
    if the side lock file cannot be made for another reason than permissions.
    """
    version = len(steps)
    fd = _open_side_lock(Path(f"{path}.setup-lock"))
    try:
        if fd is not None:
            _lock_side_file(fd, path, wait_s)  # released by os.close
        found = conn.execute("PRAGMA user_version").fetchone()[0]
        if found > version:
            raise StateError(f"{path} was written by a newer jobwrap (schema {found})")
        if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            conn.execute("PRAGMA journal_mode = WAL")
        if found != version:
            _migrate(conn, steps, found)
    finally:
        if fd is not None:
            os.close(fd)


def _lock_side_file(fd: int, path: Path, wait_s: float) -> None:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return
    except BlockingIOError:
        pass  # another process opens it right now: wait (a rare path, hence the late import)
    from jobwrap.store.lock import wait_for_flock

    if not wait_for_flock(fd, wait_s):
        raise StateError(f"{path}: another process held its set-up lock for {wait_s:g} s")


def _open_side_lock(path: Path) -> int | None:
    """The side lock file, or None where a reader may not create it (nor the database)."""
    try:
        return open_private(path)
    except OSError as exc:
        if exc.errno not in (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC):
            raise
    try:
        # flock works on a read-only fd
        return os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None


def _migrate(conn: sqlite3.Connection, steps: Sequence[str], found: int) -> None:
    """Apply the steps after ``found`` in one transaction: all of them or none."""
    with immediate(conn):
        for step in steps[found:]:
            for statement in _statements(step):
                conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {len(steps)}")


def _statements(script: str) -> Iterator[str]:
    """The statements of a script (a ``;`` in a comment or a string does not end one)."""
    pending = ""
    for piece in script.split(";"):
        pending += piece + ";"
        if sqlite3.complete_statement(pending):
            if pending.strip(" \n;"):
                yield pending
            pending = ""
    if pending.strip(" \n;"):
        yield pending


def unwritable(exc: BaseException) -> bool:
    """Does this failure mean the file may be read but not written (read-only, full)?"""
    if isinstance(exc, OSError):
        return exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC)
    text = str(exc).lower()
    return any(s in text for s in ("readonly", "unable to open", "disk is full", "disk i/o"))


def reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return str(exc)
