"""The request budget of one ProMonitor account, shared by every jobwrap process on the host.

ProMonitor's Free plan allows 2 requests a minute for the whole account, and 40 cron jobs may
start in the same second.  So the budget lives in one *budget file per host and account* (see
:func:`budget_path`), so that jobs with different state dirs still share it.  It holds:

* ``requests``: one row per request sent, for a sliding window: a request is allowed only when
  fewer than N rows are younger than the window, checked and recorded in one ``BEGIN
  IMMEDIATE`` transaction, so no 60 s window on this host ever holds more than N requests.
* ``blocks``: "ask nobody until" after a 429 (its Retry-After) or X-RateLimit-Remaining 0.

The file is ``<dir>/jobwrap-<uid>/promonitor-<key hash>.sqlite3``, where ``<dir>`` is
``/run/lock``, else ``/dev/shm``, else the temp dir (not ``/tmp`` first: systemd's
``PrivateTmp=`` gives every unit its own).  It covers every jobwrap process of one Unix user on
the host using that key, whatever its state dir; the directory is 0700 and the file 0600, so
other Unix users sharing a key count their own budget.  ``JOBWRAP_PROMONITOR_BUDGET_DIR`` names
another directory (the tests give each test its own).  When none is usable, the budget falls
back to a file in the state dir (:func:`jobwrap.promonitor.cache.open_pmcache` decides).

Rows are keyed by :func:`token_hash`, never the key itself.  The functions taking a connection
expect the budget file attached to it as ``budget`` (see :class:`~jobwrap.promonitor.cache.PmCache`)
and run inside the caller's transaction.
"""

from __future__ import annotations

import hashlib
import os
import stat
import tempfile
from contextlib import closing
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from jobwrap.errors import JobwrapError
from jobwrap.store import sqlite as sqlitedb

# Short: transactions here take a millisecond; a cross-check that cannot get the lock in
# a few seconds should give up (and the job go on) rather than hold the job up.
BUSY_TIMEOUT_MS = 5_000
# ProMonitor counts a minute from when requests *arrive*; we count from when they leave.  The
# extra second covers network delay, so two requests sent 60 s apart cannot arrive 59.9 s apart.
WINDOW_S = 61.0
DEFAULT_RPM = 2  # the Free plan
# A bogus Retry-After (a day, a year) must not silence every cross-check on the host for that
# long; an hour is far beyond any per-minute limit's real wait.
MAX_BLOCK_S = 3600.0
BUDGET_DIR_ENV = "JOBWRAP_PROMONITOR_BUDGET_DIR"
_BUDGET_SCHEMA = """
CREATE TABLE IF NOT EXISTS requests (
    token_hash TEXT NOT NULL,
    sent_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS requests_by_token ON requests (token_hash, sent_at);
CREATE TABLE IF NOT EXISTS blocks (
    token_hash TEXT PRIMARY KEY,
    until REAL NOT NULL,
    reason TEXT NOT NULL
);
"""
_BUDGET_STEPS = (_BUDGET_SCHEMA,)  # step N brings user_version N-1 to N (see store/sqlite.py)


class BlockReason(StrEnum):
    """Why nobody on this host may ask ProMonitor for now."""

    RATE_LIMITED = "rate_limited"  # a 429, for its Retry-After
    EXHAUSTED = "exhausted"  # X-RateLimit-Remaining reached 0: until our window ends


@dataclass(frozen=True)
class Block:
    """No request before ``until`` (epoch seconds)."""

    until: float
    reason: BlockReason


def token_hash(token: str) -> str:
    """What identifies an account in the cache and the budget: never the key itself."""
    return hashlib.sha256(f"jobwrap promonitor key\0{token}".encode()).hexdigest()


def retry_after_wait(retry_after_s: float | None) -> float:
    """How long a 429 blocks everyone: its Retry-After (a whole window when not given)."""
    # At least a second: "Retry-After: 0" (or a past date) still means "not right now".
    return WINDOW_S if retry_after_s is None else min(max(retry_after_s, 1.0), MAX_BLOCK_S)


def take_slot(db: sqlitedb.Connection, key: str, now: float, requests_per_minute: int) -> bool:
    """Record a request at ``now`` if fewer than N were sent in the window ending at ``now``.

    Call inside a write transaction.  Rows dated after ``now`` (a clock stepped back) still
    count, so a clock change can make us stricter, never looser.
    """
    db.execute(
        "DELETE FROM budget.requests WHERE token_hash = ? AND sent_at <= ?",
        (key, now - WINDOW_S),
    )
    if sent_in_window(db, key, now) >= requests_per_minute:
        return False
    db.execute("INSERT INTO budget.requests VALUES (?, ?)", (key, now))
    return True


def sent_in_window(db: sqlitedb.Connection, key: str, now: float) -> int:
    """How many requests were sent in the window ending at ``now``."""
    # Like take_slot, rows dated after ``now`` count.
    query = "SELECT COUNT(*) FROM budget.requests WHERE token_hash = ? AND sent_at > ?"
    return int(db.execute(query, (key, now - WINDOW_S)).fetchone()[0])


def exhausted_until(db: sqlitedb.Connection, key: str, now: float) -> float:
    """When our oldest request in the window leaves it (with none, a whole window from now)."""
    oldest = db.execute(
        "SELECT MIN(sent_at) FROM budget.requests WHERE token_hash = ? AND sent_at > ?",
        (key, now - WINDOW_S),
    ).fetchone()[0]
    return (now if oldest is None else oldest) + WINDOW_S


def blocked(db: sqlitedb.Connection, key: str, now: float) -> Block | None:
    """The block in force at ``now``, if any."""
    row = db.execute(
        "SELECT until, reason FROM budget.blocks WHERE token_hash = ?", (key,)
    ).fetchone()
    if row is None or now >= row[0]:
        return None
    return Block(float(row[0]), BlockReason(row[1]))


def extend_block(db: sqlitedb.Connection, key: str, until: float, reason: BlockReason) -> None:
    """Block until ``until``, unless a longer block is there: a block is only ever extended."""
    current = blocked(db, key, float("-inf"))
    if current is None or until > current.until:
        db.execute("INSERT OR REPLACE INTO budget.blocks VALUES (?, ?, ?)",
                   (key, until, reason.value))


def budget_path(token: str) -> Path | None:
    """Where this host keeps the request budget of ``token``'s account; None if nowhere.

    ``<dir>/jobwrap-<uid>/promonitor-<hash>.sqlite3``: a directory of our own (0700, ours,
    not a symlink, checked) inside a world-writable one, so nobody can plant a link at the
    file's predictable name.
    """
    name = f"promonitor-{token_hash(token)[:32]}.sqlite3"
    override = os.environ.get(BUDGET_DIR_ENV)
    if override:
        return Path(override) / name
    for base in ("/run/lock", "/dev/shm", tempfile.gettempdir()):
        if os.path.isdir(base) and os.access(base, os.W_OK | os.X_OK):
            return Path(base) / f"jobwrap-{os.getuid()}" / name
    return None


def open_budget(path: Path | None, *, private: bool) -> Path | None:
    """``path`` ready for use (the schema in place), or None.

    With ``private`` its directory must be ours, a real directory and 0700.
    """
    if path is None:
        return None
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        info = os.lstat(path.parent)
        if private and (not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid()
                        or info.st_mode & 0o077):
            return None  # someone else's, or opened up: not safe to keep our budget in
        if os.path.islink(path):
            return None
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        os.close(fd)
        with closing(sqlitedb.connect(path, BUSY_TIMEOUT_MS)) as db:
            sqlitedb.prepare(db, path, _BUDGET_STEPS, BUSY_TIMEOUT_MS / 1000)
    except (OSError, sqlitedb.Error, JobwrapError):
        return None
    return path
