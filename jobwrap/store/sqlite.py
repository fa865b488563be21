"""How jobwrap opens its SQLite files: the same safe settings and migration everywhere.

Every connection is in autocommit mode (callers issue ``BEGIN IMMEDIATE`` themselves, so a
writer waits its turn instead of failing with "database is locked"), waits up to
``busy_timeout_ms`` for other writers, and uses WAL with ``synchronous = NORMAL``.  The schema
version lives in ``PRAGMA user_version``.

:func:`prepare` does the one-time set-up (WAL, schema) under an ``flock`` on a side file: two
processes creating the same new file at once would otherwise race, and switching a file to WAL
fails at once with "database is locked" (SQLite does not wait for it) while another
connection is reading it.
"""

from __future__ import annotations

import errno
import fcntl
import os
import sqlite3
from pathlib import Path

from jobwrap.errors import StateError


def connect(path: Path, busy_timeout_ms: int) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=busy_timeout_ms / 1000, isolation_level=None)
    try:
        conn.execute(f"PRAGMA busy_timeout = {busy_timeout_ms}")
        conn.execute("PRAGMA synchronous = NORMAL")  # with WAL: durable across app crashes
    except BaseException:
        conn.close()
        raise
    return conn


def prepare(
    conn: sqlite3.Connection, path: Path, schema: str, version: int, wait_s: float
) -> None:
    """Make the file ready (WAL mode, the schema), one process at a time.

    Every opener takes the side lock, even for a file long set up (an ``flock`` costs
    microseconds): a process merely reading the file while another switches it to WAL would
    make that switch fail.  The lock is held for two reads, or for the set-up of a new file;
    a holder that is stopped (Ctrl-Z) delays the others ``wait_s`` at most.  Raises
    sqlite3.Error; StateError for a file of a newer jobwrap or a lock not had in time; OSError
    if the side lock file cannot be made for another reason than permissions.
    """
    fd = _open_side_lock(f"{path}.setup-lock")
    try:
        if fd is not None:
            _lock_side_file(fd, path, wait_s)  # released by os.close
        found = conn.execute("PRAGMA user_version").fetchone()[0]
        if found > version:
            raise StateError(f"{path} was written by a newer jobwrap (schema {found})")
        if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            conn.execute("PRAGMA journal_mode = WAL")
        if found != version:
            _create_schema(conn, schema, version)
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


def _open_side_lock(name: str) -> int | None:
    """The side lock file, or None where a reader may not create it (nor the database)."""
    try:
        return os.open(name, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        if exc.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise
    try:
        return os.open(name, os.O_RDONLY | os.O_CLOEXEC)  # flock works on a read-only fd
    except OSError:
        return None


def _create_schema(conn: sqlite3.Connection, schema: str, version: int) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        for statement in schema.split(";"):
            if statement.strip():
                conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {version}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
