"""How jobwrap opens its SQLite files: the same safe settings and migration everywhere.

Every connection is in autocommit mode (callers issue ``BEGIN IMMEDIATE`` themselves, so a
writer waits its turn instead of failing with "database is locked"), waits up to
``busy_timeout_ms`` for other writers, and uses WAL with ``synchronous = NORMAL``.  The schema
version lives in ``PRAGMA user_version``.
"""

from __future__ import annotations

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


def use_wal(conn: sqlite3.Connection) -> None:
    if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
        conn.execute("PRAGMA journal_mode = WAL")


def migrate(conn: sqlite3.Connection, path: Path, schema: str, version: int) -> None:
    """Create the schema in a new file; refuse a file written by a newer jobwrap."""
    found = conn.execute("PRAGMA user_version").fetchone()[0]
    if found == version:
        return
    if found > version:
        raise StateError(f"{path} was written by a newer jobwrap (schema {found})")
    conn.execute("BEGIN IMMEDIATE")
    try:
        if conn.execute("PRAGMA user_version").fetchone()[0] == 0:  # re-check under the lock
            for statement in schema.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {version}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
