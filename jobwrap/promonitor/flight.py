"""Single flight: which one of the host's jobwrap processes asks ProMonitor for an entry.

The cache file's ``flights`` table says "a fetch of this entry is in progress" and, for a few
seconds after a failed fetch, why it failed, so a burst of jobs shares one fetch and one failure
too.  :func:`decide` weighs it with the entry, the blocks and the budget, all read in the
caller's one transaction (the budget file attached as ``budget``, see
:mod:`jobwrap.promonitor.budget`).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from jobwrap.promonitor import budget
from jobwrap.promonitor.budget import Block
from jobwrap.store import sqlite as sqlitedb

FAILURE_HOLD_S = 10.0  # how long a failed fetch answers for the processes that waited on it


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


def decide(
    db: sqlitedb.Connection,
    entry: tuple[str, str, str],
    *,
    hold_s: float,
    now: float,
    requests_per_minute: int,
    grant: bool = True,
) -> Reservation:
    """Whether the process may fetch ``entry`` (token hash, kind, monitor id) now.

    With ``grant`` (inside a write transaction), GRANTED has taken a request slot and marked
    the fetch in progress for ``hold_s``; without, GRANTED only means "you may reserve".
    """
    key = entry[0]
    row = db.execute(
        "SELECT expires_at FROM entries WHERE token_hash = ? AND kind = ? AND monitor_id = ?",
        entry,
    ).fetchone()
    if row is not None and now < row[0]:
        return Reservation(Outcome.FRESH)
    block = budget.blocked(db, key, now)  # before a shared failure: its wait is current
    if block is not None:
        return Reservation(Outcome.BLOCKED, block=block)
    flight = db.execute(
        "SELECT until, failure_kind, failure FROM flights "
        "WHERE token_hash = ? AND kind = ? AND monitor_id = ?",
        entry,
    ).fetchone()
    if flight is not None and now < flight[0]:
        if flight[1] is None:
            return Reservation(Outcome.BUSY)
        return Reservation(Outcome.FAILED, failure_kind=flight[1], failure=flight[2])
    if not grant:
        spent = budget.sent_in_window(db, key, now) >= requests_per_minute
        return Reservation(Outcome.SPENT if spent else Outcome.GRANTED)
    if not budget.take_slot(db, key, now, requests_per_minute):
        return Reservation(Outcome.SPENT)
    db.execute("INSERT OR REPLACE INTO flights VALUES (?, ?, ?, ?, NULL, NULL)",
               (*entry, now + hold_s))
    return Reservation(Outcome.GRANTED)


def end_flight(db: sqlitedb.Connection, entry: tuple[str, str, str]) -> None:
    """The fetch of ``entry`` is over (its answer stored, or nothing to share)."""
    db.execute(
        "DELETE FROM flights WHERE token_hash = ? AND kind = ? AND monitor_id = ?", entry
    )


def hold_failure(
    db: sqlitedb.Connection, entry: tuple[str, str, str], failure: tuple[str, str], now: float
) -> None:
    """The fetch of ``entry`` failed: waiting processes share ``failure`` (kind, message)."""
    db.execute(
        "INSERT OR REPLACE INTO flights VALUES (?, ?, ?, ?, ?, ?)",
        (*entry, now + FAILURE_HOLD_S, *failure),
    )
