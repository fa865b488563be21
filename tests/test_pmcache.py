"""The shared ProMonitor cache and budget: entries, TTL, sliding window, blocks, single flight."""

from __future__ import annotations

import os
import random
import sqlite3
import stat
import threading
from contextlib import closing
from datetime import UTC, datetime

import pytest

from jobwrap.errors import StateError
from jobwrap.promonitor.budget import WINDOW_S, BlockReason, budget_path, token_hash
from jobwrap.promonitor.cache import (
    _STEPS,
    CHECKS,
    DB_NAME,
    MONITOR,
    SCHEMA_VERSION,
    PmCache,
    open_pmcache,
)
from jobwrap.promonitor.client import PmCheck, PmMonitor
from jobwrap.promonitor.flight import FAILURE_HOLD_S, Outcome
from tests.fakes import FakeClock
from tests.fakes.promonitor_server import KEY

MONITOR_ID = "3f1c9a52-8d4e-4b7a-9c21-5e6f7a8b9c0d"


def a_monitor(interval_seconds: int = 60) -> PmMonitor:
    return PmMonitor(
        id=MONITOR_ID,
        name="API",
        url="https://api.example.com/health",
        kind="http",
        status="up",
        interval_seconds=interval_seconds,
        is_paused=False,
        created_at=datetime(2025, 1, 15, 10, 30, tzinfo=UTC),
    )


def a_check(check_id: str = "c1", up: bool = True) -> PmCheck:
    return PmCheck(
        id=check_id,
        status_code=200 if up else None,
        response_time_ms=120,
        is_up=up,
        error_message=None if up else "Connection timed out",
        checked_at=datetime(2025, 6, 15, 11, 5, tzinfo=UTC),
    )


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def cache(state_dir, clock) -> PmCache:
    return open_pmcache(state_dir, KEY, clock=clock)


# The file ------------------------------------------------------------------------------------


def sql(state_dir, statement: str) -> list[tuple]:
    """Run one statement on the cache file behind jobwrap's back."""
    with closing(sqlite3.connect(state_dir / DB_NAME, isolation_level=None)) as db:
        return db.execute(statement).fetchall()


def test_the_file_uses_wal_and_records_its_schema_version(state_dir, cache):
    assert sql(state_dir, "PRAGMA journal_mode") == [("wal",)]
    assert sql(state_dir, "PRAGMA user_version") == [(SCHEMA_VERSION,)]


def test_a_schema_1_file_loses_the_budget_tables_it_no_longer_uses_and_keeps_its_entries(
        state_dir):
    state_dir.mkdir(parents=True)
    with closing(sqlite3.connect(state_dir / DB_NAME, isolation_level=None)) as db:
        db.executescript(_STEPS[0])  # what a jobwrap of schema 1 wrote
        db.execute("INSERT INTO entries VALUES ('k', 'monitor', 'm', '{}', 1.0, 2.0)")
        db.execute("PRAGMA user_version = 1")
    open_pmcache(state_dir, KEY)
    tables = {name for (name,) in sql(state_dir, "SELECT name FROM sqlite_master "
                                                 "WHERE type = 'table'")}
    assert tables == {"entries", "flights"}
    assert sql(state_dir, "SELECT monitor_id FROM entries") == [("m",)]
    assert sql(state_dir, "PRAGMA user_version") == [(SCHEMA_VERSION,)] == [(2,)]


def test_a_file_from_a_newer_jobwrap_is_refused(state_dir, cache):
    sql(state_dir, "PRAGMA user_version = 99")
    with pytest.raises(StateError, match="newer jobwrap"):
        open_pmcache(state_dir, KEY)


def test_an_unusable_state_dir_is_a_state_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(StateError, match="cannot open the ProMonitor cache"):
        open_pmcache(blocker / "state", KEY)


def test_the_key_is_never_stored(state_dir, cache, clock):
    cache.put_monitor(MONITOR_ID, a_monitor())
    assert cache.try_acquire()
    cache.note_retry_after(30)
    stored = b"".join(path.read_bytes() for path in state_dir.iterdir() if path.is_file())
    assert KEY.encode() not in stored
    assert token_hash(KEY).encode() in stored


# Entries -------------------------------------------------------------------------------------


def test_a_monitor_round_trips_and_stays_fresh_for_its_interval(cache, clock):
    cache.put_monitor(MONITOR_ID, a_monitor(interval_seconds=300))
    entry = cache.monitor(MONITOR_ID)
    assert entry is not None
    assert entry.value == a_monitor(interval_seconds=300)
    assert entry.fetched_at == clock.now
    clock.advance(299)
    assert entry.fresh(clock.now)
    clock.advance(1)
    assert not entry.fresh(clock.now)


def test_a_configured_ttl_overrides_the_interval(state_dir, clock):
    cache = open_pmcache(state_dir, KEY, ttl_s=10, clock=clock)
    cache.put_monitor(MONITOR_ID, a_monitor(interval_seconds=300))
    assert cache.monitor(MONITOR_ID).expires_at == clock.now + 10


def test_checks_expire_with_the_monitors_interval_or_after_a_minute(cache, clock):
    cache.put_checks("unknown", (a_check(),))
    assert cache.checks("unknown").expires_at == clock.now + 60
    cache.put_monitor(MONITOR_ID, a_monitor(interval_seconds=120))
    cache.put_checks(MONITOR_ID, (a_check("c1"), a_check("c2", up=False)))
    entry = cache.checks(MONITOR_ID)
    assert entry.value == (a_check("c1"), a_check("c2", up=False))
    assert entry.expires_at == clock.now + 120


def test_a_corrupt_entry_is_a_miss_and_is_dropped(state_dir, cache):
    cache.put_monitor(MONITOR_ID, a_monitor())
    sql(state_dir, "UPDATE entries SET body = '{\"id\": 1'")
    assert cache.monitor(MONITOR_ID) is None
    assert sql(state_dir, "SELECT COUNT(*) FROM entries") == [(0,)]


def test_an_entry_missing_a_field_is_a_miss(state_dir, cache):
    cache.put_checks(MONITOR_ID, (a_check(),))
    sql(state_dir, """UPDATE entries SET body = '[{"id": "c1"}]'""")
    assert cache.checks(MONITOR_ID) is None


def test_accounts_do_not_share_entries_or_budgets(state_dir, cache, clock):
    other = open_pmcache(state_dir, "pm_someone_else", clock=clock)
    cache.put_monitor(MONITOR_ID, a_monitor())
    assert other.monitor(MONITOR_ID) is None
    assert cache.try_acquire() and cache.try_acquire()
    assert not cache.try_acquire()
    assert other.try_acquire()


# Budget --------------------------------------------------------------------------------------


def test_the_budget_allows_n_requests_per_window(cache, clock):
    assert [cache.try_acquire() for _ in range(3)] == [True, True, False]
    assert cache.requests_in_window() == 2
    clock.advance(WINDOW_S - 0.5)
    assert not cache.try_acquire()
    clock.advance(0.5)
    assert cache.try_acquire()


def test_no_window_of_a_minute_ever_holds_more_than_n_requests(state_dir, clock):
    cache = open_pmcache(state_dir, KEY, requests_per_minute=3, clock=clock)
    rng = random.Random(4)
    granted = []
    for _ in range(400):
        clock.advance(rng.choice([0.0, 0.5, 3.0, 17.0, 29.9, 60.0]))
        if cache.try_acquire():
            granted.append(clock.now)
    assert len(granted) > 30  # the budget was used, not just refused
    for index, start in enumerate(granted):
        in_window = [t for t in granted[index:] if t < start + 60]
        assert len(in_window) <= 3


def test_a_budget_of_zero_never_asks(state_dir, clock):
    cache = open_pmcache(state_dir, KEY, requests_per_minute=0, clock=clock)
    assert not cache.try_acquire()
    assert cache.reserve(MONITOR, MONITOR_ID, hold_s=5).outcome is Outcome.SPENT


def test_a_clock_stepped_back_makes_the_budget_stricter_not_looser(cache, clock):
    assert cache.try_acquire() and cache.try_acquire()
    clock.advance(-3600)
    assert not cache.try_acquire()


def test_threads_with_their_own_cache_objects_share_one_budget(state_dir):
    results: list[bool] = []
    lock = threading.Lock()

    def ask() -> None:
        cache = open_pmcache(state_dir, KEY)  # the real clock
        for _ in range(5):
            granted = cache.try_acquire()
            with lock:
                results.append(granted)

    threads = [threading.Thread(target=ask) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 60
    assert results.count(True) == 2


# Blocks --------------------------------------------------------------------------------------


def test_retry_after_blocks_every_request_until_it_passes(cache, clock):
    cache.note_retry_after(42)
    assert cache.blocked() == cache.blocked(clock.now)
    assert cache.blocked().reason is BlockReason.RATE_LIMITED
    assert not cache.try_acquire()
    clock.advance(41.9)
    assert not cache.try_acquire()
    clock.advance(0.1)
    assert cache.blocked() is None
    assert cache.try_acquire()


def test_a_429_without_retry_after_blocks_for_a_whole_window(cache, clock):
    cache.note_retry_after(None)
    assert cache.blocked().until == clock.now + WINDOW_S


def test_remaining_zero_blocks_until_the_oldest_request_leaves_the_window(cache, clock):
    assert cache.try_acquire()
    first = clock.now
    clock.advance(20)
    cache.note_exhausted()
    block = cache.blocked()
    assert block.reason is BlockReason.EXHAUSTED
    assert block.until == first + WINDOW_S


def test_an_absurd_retry_after_blocks_for_an_hour_at_most(cache, clock):
    cache.note_retry_after(10**9)
    assert cache.blocked().until == clock.now + 3600


def test_a_block_is_only_ever_extended(cache, clock):
    cache.note_retry_after(100)
    cache.note_retry_after(5)
    assert cache.blocked().until == clock.now + 100


# Single flight -------------------------------------------------------------------------------


def test_one_process_fetches_the_others_are_told_to_wait(state_dir, cache, clock):
    other = open_pmcache(state_dir, KEY, clock=clock)
    assert cache.reserve(MONITOR, MONITOR_ID, hold_s=5).outcome is Outcome.GRANTED
    assert other.reserve(MONITOR, MONITOR_ID, hold_s=5).outcome is Outcome.BUSY
    assert other.peek(MONITOR, MONITOR_ID).outcome is Outcome.BUSY
    assert other.reserve(CHECKS, MONITOR_ID, hold_s=5).outcome is Outcome.GRANTED
    cache.put_monitor(MONITOR_ID, a_monitor())
    assert other.reserve(MONITOR, MONITOR_ID, hold_s=5).outcome is Outcome.FRESH
    assert cache.requests_in_window() == 2


def test_a_fetch_marker_expires_so_a_dead_fetcher_blocks_nobody_for_long(cache, clock):
    assert cache.reserve(MONITOR, MONITOR_ID, hold_s=5).outcome is Outcome.GRANTED
    clock.advance(5)
    assert cache.reserve(MONITOR, MONITOR_ID, hold_s=5).outcome is Outcome.GRANTED


def test_a_failed_fetch_is_shared_for_a_while_then_forgotten(cache, clock):
    cache.reserve(MONITOR, MONITOR_ID, hold_s=5)
    cache.release(MONITOR, MONITOR_ID, failure=("unreachable", "ProMonitor unreachable: x"))
    reservation = cache.reserve(MONITOR, MONITOR_ID, hold_s=5)
    assert reservation.outcome is Outcome.FAILED
    assert (reservation.failure_kind, reservation.failure) == (
        "unreachable",
        "ProMonitor unreachable: x",
    )
    clock.advance(FAILURE_HOLD_S)
    assert cache.reserve(MONITOR, MONITOR_ID, hold_s=5).outcome is Outcome.GRANTED


def test_a_released_fetch_lets_the_next_one_try(cache):
    cache.reserve(MONITOR, MONITOR_ID, hold_s=5)
    cache.release(MONITOR, MONITOR_ID)
    assert cache.peek(MONITOR, MONITOR_ID).outcome is Outcome.GRANTED


def test_reserve_says_blocked_and_spent_without_taking_a_slot(cache, clock):
    cache.note_retry_after(10)
    reservation = cache.reserve(MONITOR, MONITOR_ID, hold_s=5)
    assert reservation.outcome is Outcome.BLOCKED
    assert reservation.block.until == clock.now + 10
    assert cache.requests_in_window() == 0
    clock.advance(10)
    assert cache.try_acquire() and cache.try_acquire()
    assert cache.peek(MONITOR, MONITOR_ID).outcome is Outcome.SPENT
    assert cache.reserve(MONITOR, MONITOR_ID, hold_s=5).outcome is Outcome.SPENT
    assert cache.requests_in_window() == 2


def test_peek_reads_one_snapshot_while_a_fetch_ends(state_dir, cache, clock):
    """peek's reads form one snapshot: a fetch ending between them (entry stored, marker
    gone) was once seen as "no entry, no fetch, budget spent" by a waiting process."""
    assert cache.try_acquire() and cache.try_acquire()  # the budget is spent from here on
    key = (token_hash(KEY), MONITOR, MONITOR_ID)
    stop = threading.Event()

    def start_a_fetch(db: sqlite3.Connection) -> None:  # no entry, a marker
        db.execute("BEGIN IMMEDIATE")
        db.execute("DELETE FROM entries WHERE token_hash=? AND kind=? AND monitor_id=?", key)
        db.execute("INSERT OR REPLACE INTO flights VALUES (?, ?, ?, ?, NULL, NULL)",
                   (*key, clock.now + 60))
        db.execute("COMMIT")

    def fetches_ending_and_starting(db: sqlite3.Connection) -> None:
        while not stop.is_set():
            cache.put_monitor(MONITOR_ID, a_monitor())  # the fetch ends: entry in, marker out
            start_a_fetch(db)

    db = sqlite3.connect(state_dir / DB_NAME, isolation_level=None, check_same_thread=False)
    start_a_fetch(db)
    writer = threading.Thread(target=fetches_ending_and_starting, args=(db,))
    writer.start()
    try:
        seen = {cache.peek(MONITOR, MONITOR_ID).outcome for _ in range(3000)}
    finally:
        stop.set()
        writer.join()
        db.close()
    assert seen <= {Outcome.BUSY, Outcome.FRESH}, seen


# The budget is the host's, not the state dir's (issue 9, item 21) ----------------------------


def test_two_state_dirs_share_one_budget(tmp_path):
    clock = FakeClock()
    first = open_pmcache(tmp_path / "a", KEY, requests_per_minute=2, clock=clock)
    second = open_pmcache(tmp_path / "b", KEY, requests_per_minute=2, clock=clock)
    assert first.try_acquire() and second.try_acquire()
    assert not first.try_acquire() and not second.try_acquire()
    assert first.requests_in_window() == 2


def test_a_block_holds_for_every_state_dir(tmp_path):
    clock = FakeClock()
    first = open_pmcache(tmp_path / "a", KEY, clock=clock)
    second = open_pmcache(tmp_path / "b", KEY, clock=clock)
    first.note_retry_after(30)
    assert second.blocked() is not None


def test_another_key_has_its_own_host_budget(tmp_path):
    clock = FakeClock()
    mine = open_pmcache(tmp_path / "a", KEY, requests_per_minute=1, clock=clock)
    theirs = open_pmcache(tmp_path / "b", "pm_someone_else", requests_per_minute=1, clock=clock)
    assert mine.try_acquire() and theirs.try_acquire()
    assert mine.budget_file != theirs.budget_file


def test_the_default_budget_dir_is_private_and_outside_tmp(monkeypatch, tmp_path):
    monkeypatch.delenv("JOBWRAP_PROMONITOR_BUDGET_DIR")
    path = budget_path("pm_test_" + tmp_path.name)
    assert path is not None and not str(path).startswith("/tmp/")  # PrivateTmp= units
    cache = open_pmcache(tmp_path / "s", "pm_test_" + tmp_path.name)
    try:
        assert cache.budget_file == path
        assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert KEY not in path.name
    finally:
        for leftover in path.parent.glob(path.name + "*"):
            leftover.unlink()


def test_a_foreign_budget_dir_falls_back_to_the_state_dir(monkeypatch, tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)  # opened up: not safe, so not used
    monkeypatch.delenv("JOBWRAP_PROMONITOR_BUDGET_DIR")
    monkeypatch.setattr("tempfile.gettempdir", lambda: str(shared))
    monkeypatch.setattr("os.access", lambda path, mode: str(path) == str(shared))
    (shared / f"jobwrap-{os.getuid()}").mkdir(mode=0o777)
    (shared / f"jobwrap-{os.getuid()}").chmod(0o777)
    cache = open_pmcache(tmp_path / "s", KEY)
    assert cache.budget_file == tmp_path / "s" / "promonitor-budget.sqlite3"
    assert cache.try_acquire()
