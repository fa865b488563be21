"""The ProMonitor cache shared by every jobwrap process on the host, and its way to the budget.

ProMonitor's Free plan allows 2 requests a minute for the whole account, and 40 cron jobs may
start in the same second.  So every process goes through one SQLite file in the state dir
(``promonitor.sqlite3``, apart from the history so neither can block the other) and the
host-wide budget file of the account (:mod:`jobwrap.promonitor.budget`: the request window and
the blocks).  The cache file holds:

* ``entries``: the last monitor object and check list per monitor id, as the API's JSON
  (``to_json``), with when they were fetched and when they expire (TTL: the monitor's
  ``interval_seconds`` unless configured).  An entry that no longer parses is a miss.
* ``flights``: who is fetching an entry now, or why that just failed
  (:mod:`jobwrap.promonitor.flight`).

Everything is keyed by a SHA-256 of the API key: two accounts on a host never share an entry or
a budget, and the key itself is never stored.  Each operation opens its own short connection
(WAL, busy timeout), so a cache object may be used from any thread.  Every failure of the file
is a :class:`StateError`.  Times are epoch seconds from the injectable ``clock``.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from jobwrap.errors import JobwrapError, StateError
from jobwrap.promonitor import budget, flight
from jobwrap.promonitor.budget import (
    BUDGET_DIR_ENV,
    BUSY_TIMEOUT_MS,
    DEFAULT_RPM,
    Block,
    BlockReason,
    budget_path,
    open_budget,
    token_hash,
)
from jobwrap.promonitor.client import PmCheck, PmMonitor
from jobwrap.promonitor.flight import Reservation
from jobwrap.store import sqlite as sqlitedb
from jobwrap.store.files import private_dir

T = TypeVar("T")

DB_NAME = "promonitor.sqlite3"
DEFAULT_TTL_S = 60.0  # checks of a monitor whose interval we do not know yet
# An interval of days (or 10**15 s) must not keep an "up" answer for that long.
MAX_TTL_S = 3600.0
_SOURCE = "ProMonitor cache"

MONITOR = "monitor"
CHECKS = "checks"

# Step 1 as released.  Its requests and blocks tables held the request budget before the
# budget moved to a file of its own (promonitor/budget.py); step 2 drops them.  A released
# step is never edited.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    token_hash TEXT NOT NULL,
    kind TEXT NOT NULL,               -- 'monitor' or 'checks'
    monitor_id TEXT NOT NULL,
    body TEXT NOT NULL,               -- the API's JSON, as to_json() writes it
    fetched_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    PRIMARY KEY (token_hash, kind, monitor_id)
);
CREATE TABLE IF NOT EXISTS requests (
    token_hash TEXT NOT NULL,
    sent_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS requests_by_token ON requests (token_hash, sent_at);
CREATE TABLE IF NOT EXISTS blocks (
    token_hash TEXT PRIMARY KEY,
    until REAL NOT NULL,
    reason TEXT NOT NULL              -- a BlockReason
);
CREATE TABLE IF NOT EXISTS flights (
    token_hash TEXT NOT NULL,
    kind TEXT NOT NULL,
    monitor_id TEXT NOT NULL,
    until REAL NOT NULL,              -- the marker means nothing after this
    failure_kind TEXT,                -- NULL: in progress, else why the fetch failed
    failure TEXT,
    PRIMARY KEY (token_hash, kind, monitor_id)
);
"""
_UNUSED_BUDGET_TABLES = """
DROP TABLE IF EXISTS requests;
DROP TABLE IF EXISTS blocks;
"""
_STEPS = (_SCHEMA, _UNUSED_BUDGET_TABLES)  # step N brings user_version N-1 to N (store/sqlite.py)
SCHEMA_VERSION = len(_STEPS)


@dataclass(frozen=True)
class Cached(Generic[T]):
    """A cached value, when it was fetched and until when it is fresh."""

    value: T
    fetched_at: float
    expires_at: float

    def fresh(self, now: float) -> bool:
        return now < self.expires_at


class PmCache:
    """The shared cache and budget of one ProMonitor account (one API key) on this host.

    Open it with :func:`open_pmcache`.  ``ttl_s`` (None: each monitor's ``interval_seconds``)
    is how long entries stay fresh; ``requests_per_minute`` is the budget (0: never ask).
    """

    def __init__(
        self,
        path: Path,
        token: str,
        *,
        requests_per_minute: int = DEFAULT_RPM,
        ttl_s: float | None = None,
        clock: Callable[[], float] = time.time,
        budget_file: Path,
    ) -> None:
        if requests_per_minute < 0:
            raise ValueError(f"requests_per_minute must be >= 0, not {requests_per_minute}")
        self.path = path
        self.requests_per_minute = requests_per_minute
        self.ttl_s = ttl_s
        self.clock = clock
        self._key = token_hash(token)
        self.budget_file = budget_file  # attached as "budget" to every connection

    def __repr__(self) -> str:
        return f"PmCache({str(self.path)!r}, requests_per_minute={self.requests_per_minute})"

    # Entries ---------------------------------------------------------------------------------

    def monitor(self, monitor_id: str) -> Cached[PmMonitor] | None:
        """The cached monitor, fresh or not; None when absent or unreadable."""
        return self._entry(MONITOR, monitor_id, _monitor_from)

    def checks(self, monitor_id: str) -> Cached[tuple[PmCheck, ...]] | None:
        """The cached checks (newest first, as the API gives them), fresh or not; or None."""
        return self._entry(CHECKS, monitor_id, _checks_from)

    def put_monitor(
        self, monitor_id: str, monitor: PmMonitor, *, now: float | None = None
    ) -> None:
        """Store ``monitor`` under the id it was asked by, and end the fetch marker for it.

        (Keyed by the id asked for, not ``monitor.id``: were ProMonitor to spell it
        differently, the entry would otherwise never be found again.)
        """
        now = self._now(now)
        ttl = self.ttl_s if self.ttl_s is not None else _ttl_of(monitor)
        self._store(MONITOR, monitor_id, monitor.to_json(), now, ttl)

    def put_checks(
        self, monitor_id: str, checks: tuple[PmCheck, ...], *, now: float | None = None
    ) -> None:
        """Store ``checks`` and end the fetch-in-progress marker for them.

        Their TTL is the configured one, else the cached monitor's interval, else 60 s.
        """
        now = self._now(now)
        ttl = self.ttl_s
        if ttl is None:
            monitor = self.monitor(monitor_id)
            ttl = _ttl_of(monitor.value) if monitor else DEFAULT_TTL_S
        self._store(CHECKS, monitor_id, [c.to_json() for c in checks], now, ttl)

    # Budget ----------------------------------------------------------------------------------

    def try_acquire(self, now: float | None = None) -> bool:
        """Take one request slot if neither the budget nor a block forbids it; atomic."""
        now = self._now(now)
        with self._write() as db:
            return (budget.blocked(db, self._key, now) is None
                    and budget.take_slot(db, self._key, now, self.requests_per_minute))

    def requests_in_window(self, now: float | None = None) -> int:
        """How many requests this host sent in the last window (for status and tests)."""
        now = self._now(now)
        with self._read() as db:
            return budget.sent_in_window(db, self._key, now)

    def blocked(self, now: float | None = None) -> Block | None:
        """The block in force, if any."""
        now = self._now(now)
        with self._read() as db:
            return budget.blocked(db, self._key, now)

    def note_retry_after(self, retry_after_s: float | None, *, now: float | None = None) -> None:
        """After a 429: block everyone for Retry-After (a whole window when it was not given)."""
        now = self._now(now)
        self._block(now + budget.retry_after_wait(retry_after_s), BlockReason.RATE_LIMITED)

    def note_exhausted(self, *, now: float | None = None) -> None:
        """After X-RateLimit-Remaining 0: block until our oldest request leaves the window.

        With no request of ours in the window (another host spent the account's limit), a
        whole window from now.
        """
        now = self._now(now)
        with self._read() as db:
            until = budget.exhausted_until(db, self._key, now)
        self._block(until, BlockReason.EXHAUSTED)

    # Single flight ---------------------------------------------------------------------------

    def reserve(
        self, kind: str, monitor_id: str, *, hold_s: float, now: float | None = None
    ) -> Reservation:
        """Decide, atomically, whether this process should fetch ``kind`` of ``monitor_id``.

        GRANTED takes a request slot and marks the fetch in progress for ``hold_s``; the caller
        must then :meth:`put_monitor`/:meth:`put_checks` or :meth:`release`.  The entry is
        re-checked under the lock, so a fetch that just finished elsewhere is never repeated.
        """
        now = self._now(now)
        with self._write() as db:
            return flight.decide(db, (self._key, kind, monitor_id), hold_s=hold_s, now=now,
                                 requests_per_minute=self.requests_per_minute)

    def peek(self, kind: str, monitor_id: str, *, now: float | None = None) -> Reservation:
        """What :meth:`reserve` would answer, read-only: GRANTED means "you may reserve".

        Waiting processes poll with this, so 40 of them waiting do not queue for the write lock
        that the one fetching process needs to store its answer.
        """
        now = self._now(now)
        with self._read() as db:
            return flight.decide(db, (self._key, kind, monitor_id), hold_s=0.0, now=now,
                                 requests_per_minute=self.requests_per_minute, grant=False)

    def release(
        self,
        kind: str,
        monitor_id: str,
        *,
        failure: tuple[str, str] | None = None,
        now: float | None = None,
    ) -> None:
        """End the fetch marker; with ``failure`` (kind, message), keep it for a while.

        Processes that waited on this fetch then share its failure instead of asking again.
        """
        now = self._now(now)
        with self._write(attach=False) as db:
            if failure is None:
                flight.end_flight(db, (self._key, kind, monitor_id))
            else:
                flight.hold_failure(db, (self._key, kind, monitor_id), failure, now)

    # Internals -------------------------------------------------------------------------------

    def _entry(self, kind: str, monitor_id: str, parse: Callable[[Any], T]) -> Cached[T] | None:
        key = (self._key, kind, monitor_id)
        with self._read(attach=False) as db:
            row = db.execute(
                "SELECT body, fetched_at, expires_at FROM entries "
                "WHERE token_hash = ? AND kind = ? AND monitor_id = ?",
                key,
            ).fetchone()
        if row is None:
            return None
        try:
            return Cached(parse(json.loads(row[0])), float(row[1]), float(row[2]))
        except (ValueError, TypeError, JobwrapError):
            # Corrupt or from an incompatible writer: a miss.  Dropping it lets the next
            # reserve() grant a fetch instead of answering FRESH for an unreadable entry.
            with self._write(attach=False) as db:
                db.execute(
                    "DELETE FROM entries WHERE token_hash = ? AND kind = ? AND monitor_id = ?",
                    key,
                )
            return None

    def _store(self, kind: str, monitor_id: str, body: Any, now: float, ttl_s: float) -> None:
        with self._write(attach=False) as db:
            db.execute(
                "INSERT OR REPLACE INTO entries VALUES (?, ?, ?, ?, ?, ?)",
                (self._key, kind, monitor_id, json.dumps(body), now, now + ttl_s),
            )
            flight.end_flight(db, (self._key, kind, monitor_id))

    def _block(self, until: float, reason: BlockReason) -> None:
        with self._write() as db:
            budget.extend_block(db, self._key, until, reason)

    def _now(self, now: float | None) -> float:
        return self.clock() if now is None else now

    @contextmanager
    def _read(self, *, attach: bool = True) -> Iterator[sqlitedb.Connection]:
        """A read transaction: every SELECT in it sees the same snapshot.

        In autocommit mode each statement would see its own: a fetch that ends between two of
        them reads as "no entry, and nobody fetching".
        """
        with self._connection(attach=attach) as db, sqlitedb.snapshot(db):
            yield db

    @contextmanager
    def _write(self, *, attach: bool = True) -> Iterator[sqlitedb.Connection]:
        """A short immediate transaction: waits its turn instead of failing on upgrade."""
        with self._connection(attach=attach) as db, sqlitedb.immediate(db):
            yield db

    @contextmanager
    def _connection(self, *, attach: bool) -> Iterator[sqlitedb.Connection]:
        """A connection to the cache; with ``attach``, the budget file attached as "budget"."""
        try:
            with closing(_connect(self.path)) as db:
                if attach:
                    db.execute("ATTACH DATABASE ? AS budget", (str(self.budget_file),))
                yield db
        except sqlitedb.Error as exc:
            raise StateError(f"cannot use the ProMonitor cache {self.path}: {exc}") from None


def _ttl_of(monitor: PmMonitor) -> float:
    """How long an answer about ``monitor`` stays fresh: its interval, within sane bounds."""
    return min(max(float(monitor.interval_seconds), 0.0), MAX_TTL_S)


def open_pmcache(
    state_dir: Path,
    token: str,
    *,
    requests_per_minute: int = DEFAULT_RPM,
    ttl_s: float | None = None,
    clock: Callable[[], float] = time.time,
) -> PmCache:
    """Open (creating or migrating if needed) the cache in ``state_dir``; StateError if not.

    The request budget is the host's (:func:`~jobwrap.promonitor.budget.budget_path`), or the
    state dir's when no host-wide directory can be used safely.
    """
    path = state_dir / DB_NAME
    try:
        private_dir(state_dir)
        with closing(_connect(path)) as db:
            sqlitedb.prepare(db, path, _STEPS, BUSY_TIMEOUT_MS / 1000)
    except (OSError, sqlitedb.Error) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise StateError(f"cannot open the ProMonitor cache {path}: {reason}") from None
    host_wide = budget_path(token)
    private = not os.environ.get(BUDGET_DIR_ENV)  # a directory named on purpose is trusted
    budget_file = (open_budget(host_wide, private=private)
                   or open_budget(state_dir / "promonitor-budget.sqlite3", private=False))
    if budget_file is None:
        raise StateError(f"cannot open the ProMonitor request budget in {state_dir}")
    return PmCache(path, token, requests_per_minute=requests_per_minute, ttl_s=ttl_s,
                   clock=clock, budget_file=budget_file)


def _connect(path: Path) -> sqlitedb.Connection:
    # Autocommit: we issue BEGIN IMMEDIATE ourselves (see PmCache._write).  A cache entry lost
    # in a crash costs one request: synchronous = NORMAL is plenty.
    return sqlitedb.connect(path, BUSY_TIMEOUT_MS)


def _monitor_from(body: Any) -> PmMonitor:
    return PmMonitor.from_json(body, source=_SOURCE)


def _checks_from(body: Any) -> tuple[PmCheck, ...]:
    if not isinstance(body, list):
        raise TypeError("cached checks should be a list")
    return tuple(
        PmCheck.from_json(item, path=f"checks[{index}]", source=_SOURCE)
        for index, item in enumerate(body)
    )
