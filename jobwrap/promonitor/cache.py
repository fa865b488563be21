"""The ProMonitor cache and request budget shared by every jobwrap process on the host.

ProMonitor's Free plan allows 2 requests a minute for the whole account, and 40 cron jobs may
start in the same second.  So every process goes through one SQLite file in the state dir
(``promonitor.sqlite3``, apart from the history so neither can block the other) and one
*budget file per host and account* (see :func:`budget_path`), which holds the request budget
and the blocks so that jobs with different state dirs still share them.  Together they hold:

* ``entries``: the last monitor object and check list per monitor id, as the API's JSON
  (``to_json``), with when they were fetched and when they expire (TTL: the monitor's
  ``interval_seconds`` unless configured).  An entry that no longer parses is a miss.
* ``requests``: one row per request sent, for a sliding window: a request is allowed only when
  fewer than N rows are younger than the window, checked and recorded in one ``BEGIN
  IMMEDIATE`` transaction, so no 60 s window on this host ever holds more than N requests.
* ``blocks``: "ask nobody until" after a 429 (its Retry-After) or X-RateLimit-Remaining 0.
* ``flights``: "a fetch of this entry is in progress" (single-flight), and, for a few seconds
  after a failed fetch, why it failed, so a burst of jobs shares one failure too.

``requests`` and ``blocks`` live in the budget file: ``<dir>/jobwrap-<uid>/promonitor-<key
hash>.sqlite3``, where ``<dir>`` is ``/run/lock``, else ``/dev/shm``, else the temp dir (not
``/tmp`` first: systemd's ``PrivateTmp=`` gives every unit its own).  It covers every jobwrap
process of one Unix user on the host using that key, whatever its state dir; the directory is
0700 and the file 0600, so other Unix users sharing a key count their own budget.
``JOBWRAP_PROMONITOR_BUDGET_DIR`` names another directory (the tests give each test its
own).  When none is usable, the budget falls back to the state dir's file.

Everything is keyed by a SHA-256 of the API key: two accounts on a host never share an entry or
a budget, and the key itself is never stored.  Each operation opens its own short connection
(WAL, busy timeout), so a cache object may be used from any thread.  Every failure of the file
is a :class:`StateError`.  Times are epoch seconds from the injectable ``clock``.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import stat
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Generic, TypeVar

from jobwrap.errors import JobwrapError, StateError
from jobwrap.promonitor.client import PmCheck, PmMonitor
from jobwrap.store import sqlite as sqlitedb

T = TypeVar("T")

SCHEMA_VERSION = 1
DB_NAME = "promonitor.sqlite3"
# Short: transactions here take a millisecond; a cross-check that cannot get the lock in
# a few seconds should give up (and the job go on) rather than hold the job up.
BUSY_TIMEOUT_MS = 5_000
# ProMonitor counts a minute from when requests *arrive*; we count from when they leave.  The
# extra second covers network delay, so two requests sent 60 s apart cannot arrive 59.9 s apart.
WINDOW_S = 61.0
DEFAULT_RPM = 2  # the Free plan
DEFAULT_TTL_S = 60.0  # checks of a monitor whose interval we do not know yet
# An interval of days (or 10**15 s) must not keep an "up" answer for that long.
MAX_TTL_S = 3600.0
# A bogus Retry-After (a day, a year) must not silence every cross-check on the host for that
# long; an hour is far beyond any per-minute limit's real wait.
MAX_BLOCK_S = 3600.0
FAILURE_HOLD_S = 10.0  # how long a failed fetch answers for the processes that waited on it
_SOURCE = "ProMonitor cache"
BUDGET_DIR_ENV = "JOBWRAP_PROMONITOR_BUDGET_DIR"
BUDGET_SCHEMA_VERSION = 1
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

MONITOR = "monitor"
CHECKS = "checks"

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


class BlockReason(StrEnum):
    """Why nobody on this host may ask ProMonitor for now."""

    RATE_LIMITED = "rate_limited"  # a 429, for its Retry-After
    EXHAUSTED = "exhausted"  # X-RateLimit-Remaining reached 0: until our window ends


@dataclass(frozen=True)
class Block:
    """No request before ``until`` (epoch seconds)."""

    until: float
    reason: BlockReason


@dataclass(frozen=True)
class Cached(Generic[T]):
    """A cached value, when it was fetched and until when it is fresh."""

    value: T
    fetched_at: float
    expires_at: float

    def fresh(self, now: float) -> bool:
        return now < self.expires_at


class Outcome(StrEnum):
    """What :meth:`PmCache.reserve` decided."""

    GRANTED = "granted"  # a request slot is taken and the fetch is ours: fetch, then store/release
    FRESH = "fresh"  # a fresh entry is there (perhaps written just now): read it
    BUSY = "busy"  # another process is fetching it: poll for the entry a little
    FAILED = "failed"  # another process's fetch just failed: share its failure
    BLOCKED = "blocked"  # ProMonitor told us to wait
    SPENT = "spent"  # our own budget of requests per minute is spent


@dataclass(frozen=True)
class Reservation:
    """The outcome of :meth:`PmCache.reserve`, with what explains it."""

    outcome: Outcome
    block: Block | None = None  # BLOCKED
    failure_kind: str | None = None  # FAILED: the kind and message the fetcher recorded
    failure: str | None = None


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
            return _blocked(db, self._key, now) is None and self._take_slot(db, now)

    def requests_in_window(self, now: float | None = None) -> int:
        """How many requests this host sent in the last window (for status and tests)."""
        now = self._now(now)
        with self._read() as db:
            return self._sent_in_window(db, now)

    def blocked(self, now: float | None = None) -> Block | None:
        """The block in force, if any."""
        now = self._now(now)
        with self._read() as db:
            return _blocked(db, self._key, now)

    def note_retry_after(self, retry_after_s: float | None, *, now: float | None = None) -> None:
        """After a 429: block everyone for Retry-After (a whole window when it was not given)."""
        now = self._now(now)
        # At least a second: "Retry-After: 0" (or a past date) still means "not right now".
        wait = WINDOW_S if retry_after_s is None else min(max(retry_after_s, 1.0), MAX_BLOCK_S)
        self._block(now + wait, BlockReason.RATE_LIMITED)

    def note_exhausted(self, *, now: float | None = None) -> None:
        """After X-RateLimit-Remaining 0: block until our oldest request leaves the window.

        With no request of ours in the window (another host spent the account's limit), a
        whole window from now.
        """
        now = self._now(now)
        with self._read() as db:
            oldest = db.execute(
                "SELECT MIN(sent_at) FROM budget.requests WHERE token_hash = ? AND sent_at > ?",
                (self._key, now - WINDOW_S),
            ).fetchone()[0]
        self._block((now if oldest is None else oldest) + WINDOW_S, BlockReason.EXHAUSTED)

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
            return self._reserve(db, kind, monitor_id, hold_s, now)

    def peek(self, kind: str, monitor_id: str, *, now: float | None = None) -> Reservation:
        """What :meth:`reserve` would answer, read-only: GRANTED means "you may reserve".

        Waiting processes poll with this, so 40 of them waiting do not queue for the write lock
        that the one fetching process needs to store its answer.
        """
        now = self._now(now)
        with self._read() as db:
            return self._reserve(db, kind, monitor_id, 0.0, now, grant=False)

    def release(
        self,
        kind: str,
        monitor_id: str,
        *,
        failure: tuple[str, str] | None = None,
        now: float | None = None,
    ) -> None:
        """End the fetch marker; with ``failure`` (kind, message), keep it for FAILURE_HOLD_S.

        Processes that waited on this fetch then share its failure instead of asking again.
        """
        now = self._now(now)
        with self._write(budget=False) as db:
            if failure is None:
                _end_flight(db, self._key, kind, monitor_id)
            else:
                db.execute(
                    "INSERT OR REPLACE INTO flights VALUES (?, ?, ?, ?, ?, ?)",
                    (self._key, kind, monitor_id, now + FAILURE_HOLD_S, *failure),
                )

    # Internals -------------------------------------------------------------------------------

    def _reserve(
        self,
        db: sqlite3.Connection,
        kind: str,
        monitor_id: str,
        hold_s: float,
        now: float,
        *,
        grant: bool = True,
    ) -> Reservation:
        key = (self._key, kind, monitor_id)
        row = db.execute(
            "SELECT expires_at FROM entries WHERE token_hash = ? AND kind = ? AND monitor_id = ?",
            key,
        ).fetchone()
        if row is not None and now < row[0]:
            return Reservation(Outcome.FRESH)
        block = _blocked(db, self._key, now)  # before a shared failure: its wait is current
        if block is not None:
            return Reservation(Outcome.BLOCKED, block=block)
        flight = db.execute(
            "SELECT until, failure_kind, failure FROM flights "
            "WHERE token_hash = ? AND kind = ? AND monitor_id = ?",
            key,
        ).fetchone()
        if flight is not None and now < flight[0]:
            if flight[1] is None:
                return Reservation(Outcome.BUSY)
            return Reservation(Outcome.FAILED, failure_kind=flight[1], failure=flight[2])
        if not grant:
            spent = self._sent_in_window(db, now) >= self.requests_per_minute
            return Reservation(Outcome.SPENT if spent else Outcome.GRANTED)
        if not self._take_slot(db, now):
            return Reservation(Outcome.SPENT)
        db.execute("INSERT OR REPLACE INTO flights VALUES (?, ?, ?, ?, NULL, NULL)",
                   (*key, now + hold_s))
        return Reservation(Outcome.GRANTED)

    def _take_slot(self, db: sqlite3.Connection, now: float) -> bool:
        """Record a request at ``now`` if fewer than N were sent in the window ending at ``now``.

        Call inside a write transaction.  Rows dated after ``now`` (a clock stepped back) still
        count, so a clock change can make us stricter, never looser.
        """
        db.execute(
            "DELETE FROM budget.requests WHERE token_hash = ? AND sent_at <= ?",
            (self._key, now - WINDOW_S),
        )
        if self._sent_in_window(db, now) >= self.requests_per_minute:
            return False
        db.execute("INSERT INTO budget.requests VALUES (?, ?)", (self._key, now))
        return True

    def _sent_in_window(self, db: sqlite3.Connection, now: float) -> int:
        # Like _take_slot, rows dated after ``now`` count.
        query = "SELECT COUNT(*) FROM budget.requests WHERE token_hash = ? AND sent_at > ?"
        return int(db.execute(query, (self._key, now - WINDOW_S)).fetchone()[0])

    def _entry(self, kind: str, monitor_id: str, parse: Callable[[Any], T]) -> Cached[T] | None:
        key = (self._key, kind, monitor_id)
        with self._read(budget=False) as db:
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
            with self._write(budget=False) as db:
                db.execute(
                    "DELETE FROM entries WHERE token_hash = ? AND kind = ? AND monitor_id = ?",
                    key,
                )
            return None

    def _store(self, kind: str, monitor_id: str, body: Any, now: float, ttl_s: float) -> None:
        with self._write(budget=False) as db:
            db.execute(
                "INSERT OR REPLACE INTO entries VALUES (?, ?, ?, ?, ?, ?)",
                (self._key, kind, monitor_id, json.dumps(body), now, now + ttl_s),
            )
            _end_flight(db, self._key, kind, monitor_id)

    def _block(self, until: float, reason: BlockReason) -> None:
        with self._write() as db:
            current = _blocked(db, self._key, float("-inf"))
            if current is None or until > current.until:  # a block is only ever extended
                db.execute("INSERT OR REPLACE INTO budget.blocks VALUES (?, ?, ?)",
                           (self._key, until, reason.value))

    def _now(self, now: float | None) -> float:
        return self.clock() if now is None else now

    @contextmanager
    def _read(self, *, budget: bool = True) -> Iterator[sqlite3.Connection]:
        """A read transaction: every SELECT in it sees the same snapshot (WAL: no lock wait).

        In autocommit mode each statement would see its own: a fetch that ends between two of
        them reads as "no entry, and nobody fetching".
        """
        with self._connection(budget=budget) as db:
            db.execute("BEGIN")
            try:
                yield db
            finally:
                db.execute("COMMIT")

    @contextmanager
    def _write(self, *, budget: bool = True) -> Iterator[sqlite3.Connection]:
        """A short immediate transaction: waits its turn instead of failing on upgrade."""
        with self._connection(budget=budget) as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    @contextmanager
    def _connection(self, *, budget: bool) -> Iterator[sqlite3.Connection]:
        """A connection to the cache; with ``budget``, the budget file attached as "budget"."""
        try:
            with closing(_connect(self.path)) as db:
                if budget:
                    db.execute("ATTACH DATABASE ? AS budget", (str(self.budget_file),))
                yield db
        except sqlite3.Error as exc:
            raise StateError(f"cannot use the ProMonitor cache {self.path}: {exc}") from None


def _ttl_of(monitor: PmMonitor) -> float:
    """How long an answer about ``monitor`` stays fresh: its interval, within sane bounds."""
    return min(max(float(monitor.interval_seconds), 0.0), MAX_TTL_S)


def token_hash(token: str) -> str:
    """What identifies an account in the cache: never the key itself."""
    return hashlib.sha256(f"jobwrap promonitor key\0{token}".encode()).hexdigest()


def open_pmcache(
    state_dir: Path,
    token: str,
    *,
    requests_per_minute: int = DEFAULT_RPM,
    ttl_s: float | None = None,
    clock: Callable[[], float] = time.time,
) -> PmCache:
    """Open (creating or migrating if needed) the cache in ``state_dir``; StateError if not.

    The request budget is the host's (:func:`budget_path`), or the state dir's when no
    host-wide directory can be used safely.
    """
    path = state_dir / DB_NAME
    try:
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        with closing(_connect(path)) as db:
            sqlitedb.prepare(db, path, _SCHEMA, SCHEMA_VERSION, BUSY_TIMEOUT_MS / 1000)
    except (OSError, sqlite3.Error) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise StateError(f"cannot open the ProMonitor cache {path}: {reason}") from None
    host_wide = budget_path(token)
    private = not os.environ.get(BUDGET_DIR_ENV)  # a directory named on purpose is trusted
    budget = (_open_budget(host_wide, private=private)
              or _open_budget(state_dir / "promonitor-budget.sqlite3", private=False))
    if budget is None:
        raise StateError(f"cannot open the ProMonitor request budget in {state_dir}")
    return PmCache(path, token, requests_per_minute=requests_per_minute, ttl_s=ttl_s,
                   clock=clock, budget_file=budget)


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


def _open_budget(path: Path | None, *, private: bool) -> Path | None:
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
        with closing(_connect(path)) as db:
            sqlitedb.prepare(db, path, _BUDGET_SCHEMA, BUDGET_SCHEMA_VERSION,
                             BUSY_TIMEOUT_MS / 1000)
    except (OSError, sqlite3.Error, JobwrapError):
        return None
    return path


def _connect(path: Path) -> sqlite3.Connection:
    # Autocommit: we issue BEGIN IMMEDIATE ourselves (see PmCache._write).  A cache entry lost
    # in a crash costs one request: synchronous = NORMAL is plenty.
    return sqlitedb.connect(path, BUSY_TIMEOUT_MS)


def _blocked(db: sqlite3.Connection, key: str, now: float) -> Block | None:
    row = db.execute(
        "SELECT until, reason FROM budget.blocks WHERE token_hash = ?", (key,)
    ).fetchone()
    if row is None or now >= row[0]:
        return None
    return Block(float(row[0]), BlockReason(row[1]))


def _end_flight(db: sqlite3.Connection, key: str, kind: str, monitor_id: str) -> None:
    db.execute(
        "DELETE FROM flights WHERE token_hash = ? AND kind = ? AND monitor_id = ?",
        (key, kind, monitor_id),
    )


def _monitor_from(body: Any) -> PmMonitor:
    return PmMonitor.from_json(body, source=_SOURCE)


def _checks_from(body: Any) -> tuple[PmCheck, ...]:
    if not isinstance(body, list):
        raise TypeError("cached checks should be a list")
    return tuple(
        PmCheck.from_json(item, path=f"checks[{index}]", source=_SOURCE)
        for index, item in enumerate(body)
    )
