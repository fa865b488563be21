"""The ProMonitor cross-check against the fake ProMonitor on 127.0.0.1, with a shared cache."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from jobwrap.promonitor.answer import DependencyState, Reason, Unavailable
from jobwrap.promonitor.cache import CHECKS, MONITOR, PmCache, open_pmcache
from jobwrap.promonitor.client import PmCheck, ProMonitorClient
from jobwrap.promonitor.crosscheck import CrossCheck
from jobwrap.promonitor.downtime import Diagnosis, clock_time, down_periods, overlapping_period
from tests.fakes import FakeClock, Reply
from tests.fakes.promonitor_server import (
    KEY,
    MONITOR_API,
    MONITOR_DB,
    ProMonitorServer,
    default_monitors,
)

ROOT = Path(__file__).resolve().parent.parent
NOW = datetime(2025, 6, 15, 11, 6, tzinfo=UTC).timestamp()


def at(hh_mm: str, day: int = 15) -> datetime:
    hour, minute = map(int, hh_mm.split(":"))
    return datetime(2025, 6, day, hour, minute, tzinfo=UTC)


def check(check_id: str, hh_mm: str, up: bool, error: str | None = None) -> dict:
    return {
        "id": check_id,
        "status_code": 200 if up else None,
        "response_time_ms": 95 if up else 3000,
        "is_up": up,
        "error_message": error,
        "checked_at": at(hh_mm).isoformat(),
    }


# Checks of MONITOR_API, newest first: down from 10:55 to 11:02.
OUTAGE = [
    check("k6", "11:04", True),
    check("k5", "11:02", True),
    check("k4", "10:57", False, "Connection timed out"),
    check("k3", "10:56", False, "Connection refused"),
    check("k2", "10:55", False, "Connection refused"),
    check("k1", "10:50", True),
]


def monitor(monitor_id: str, **fields) -> dict:
    base = dict(default_monitors()[0], id=monitor_id, name=f"Service {monitor_id}")
    return base | fields


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(start=NOW)


@pytest.fixture
def server(clock) -> Iterator[ProMonitorServer]:
    # The server allows plenty: these tests count what *we* send, not what it refuses.
    with ProMonitorServer(clock=clock, per_minute=50) as srv:
        yield srv


@pytest.fixture
def make_check(state_dir, clock, server) -> Callable[..., CrossCheck]:
    """A CrossCheck as a separate process would have it: its own cache object, same file."""

    def make(key: str = KEY, url: str | None = None, **options) -> CrossCheck:
        rpm = options.pop("requests_per_minute", 2)
        cache = open_pmcache(state_dir, key, requests_per_minute=rpm, clock=clock)
        base = url or server.url
        options = {"timer": clock, "sleep": clock.sleep, "tz": UTC} | options
        return CrossCheck(lambda: ProMonitorClient(base, key), cache, **options)

    return make


@pytest.fixture
def crosscheck(make_check) -> CrossCheck:
    return make_check()


def spend_budget(cache: PmCache) -> None:
    while cache.try_acquire():
        pass


# State and metas -----------------------------------------------------------------------------


def test_an_up_monitor_gives_its_state_and_status_meta(server, crosscheck):
    state = crosscheck.fetch_state(MONITOR_API)
    assert state == DependencyState(
        monitor_id=MONITOR_API,
        name="API",
        url="https://api.example.com/health",
        kind="http",
        status="up",
        response_ms=None,
        checked_at=None,
        source="live",
        fetched_at=NOW,
    )
    assert state.metas() == [("promonitor_status", "up")]
    assert [r.path for r in server.received] == [f"/api/v1/monitors/{MONITOR_API}"]


def test_response_time_is_added_when_fresh_checks_are_known(server, crosscheck):
    crosscheck.diagnose(MONITOR_API, NOW)  # reads (and caches) the checks
    state = crosscheck.fetch_state(MONITOR_API)
    assert state.metas() == [("promonitor_status", "up"), ("promonitor_response_ms", "120")]
    assert state.checked_at == at("11:05")
    assert server.hits == 2


def test_a_paused_monitor_is_paused_whatever_its_status(server, crosscheck):
    server.monitors[1]["is_paused"] = True  # the Database monitor says "down"
    assert crosscheck.fetch_state(MONITOR_DB).status == "paused"


def test_an_unknown_status_is_kept(server, crosscheck):
    server.monitors[0]["status"] = "maintenance"
    state = crosscheck.fetch_state(MONITOR_API)
    assert state.metas() == [("promonitor_status", "maintenance")]


# Cache ---------------------------------------------------------------------------------------


def test_a_fresh_cache_entry_saves_the_request_for_every_process(server, make_check):
    assert make_check().fetch_state(MONITOR_API).source == "live"
    again = make_check().fetch_state(MONITOR_API)
    assert (again.source, again.status) == ("cache", "up")
    assert server.hits == 1


def test_the_cache_expires_after_the_monitors_interval(server, crosscheck, clock):
    crosscheck.fetch_state(MONITOR_API)  # interval_seconds: 60
    clock.advance(59)
    assert crosscheck.fetch_state(MONITOR_API).source == "cache"
    server.monitors[0]["status"] = "down"
    clock.advance(1)
    state = crosscheck.fetch_state(MONITOR_API)
    assert (state.source, state.status) == ("live", "down")
    assert server.hits == 2


def test_an_expired_entry_stands_in_when_the_budget_is_spent(server, crosscheck, clock):
    crosscheck.fetch_state(MONITOR_API)
    clock.advance(120)
    spend_budget(crosscheck.cache)
    state = crosscheck.fetch_state(MONITOR_API)
    assert (state.source, state.fetched_at) == ("cache", NOW)
    clock.advance(600)
    spend_budget(crosscheck.cache)
    assert crosscheck.fetch_state(MONITOR_API).reason is Reason.BUDGET  # too old to stand in
    assert server.hits == 1


# Budget --------------------------------------------------------------------------------------


def test_the_budget_holds_across_many_crosscheck_instances(server, make_check, clock):
    ids = [f"m{n}" for n in range(8)]
    server.monitors = [monitor(monitor_id) for monitor_id in ids]
    answers = [make_check().fetch_state(monitor_id) for monitor_id in ids]
    assert [a.source for a in answers if isinstance(a, DependencyState)] == ["live", "live"]
    refusals = [a for a in answers if isinstance(a, Unavailable)]
    assert {(a.reason, a.message) for a in refusals} == {
        (Reason.BUDGET, "ProMonitor budget of 2 requests/min spent")
    }
    assert server.hits == 2
    clock.advance(61)
    assert [make_check().fetch_state(m).source for m in ids[2:4]] == ["live", "live"]
    assert server.hits == 4


def test_forty_processes_at_once_stay_within_the_budget(state_dir, tmp_path):
    """40 real processes, three cold monitors, a budget of 2: at most 2 requests, one each."""
    ids = ["alpha", "beta", "gamma"]
    with ProMonitorServer(per_minute=50) as server:  # real clock; we count our own hits
        server.monitors = [monitor(monitor_id) for monitor_id in ids]
        go = tmp_path / "go"
        procs = [_start_asker(server.url, state_dir, ids[n % 3], go) for n in range(40)]
        try:
            for proc in procs:  # every one has imported jobwrap and opened the cache
                assert proc.stdout.readline().strip() == "ready"
            go.touch()
            answers = [json.loads(proc.communicate(timeout=30)[0]) for proc in procs]
        finally:
            for proc in procs:
                proc.kill()
        paths = [request.path for request in server.received]
    assert len(paths) == 2
    assert len(set(paths)) == 2  # single flight: nobody fetched a monitor already being fetched
    fetched = {path.rsplit("/", 1)[1] for path in paths}
    for n, answer in enumerate(answers):
        if ids[n % 3] in fetched:
            assert answer in ("up", "busy")  # it shared the one fetch (or timed out waiting)
        else:
            assert answer in ("budget", "busy")
    # Sharing works: more processes got "up" than the two that fetched (usually ~26; under a
    # loaded machine some give up waiting after 2 s and say "busy", which is allowed).
    assert answers.count("up") >= 3


_ASKER = """
import json, os, sys, time
from pathlib import Path
from jobwrap.promonitor.answer import Unavailable
from jobwrap.promonitor.crosscheck import CrossCheck
from jobwrap.promonitor.cache import open_pmcache
from jobwrap.promonitor.client import ProMonitorClient
url, key, state, monitor_id, go = sys.argv[1:]
cache = open_pmcache(Path(state), key)
check = CrossCheck(lambda: ProMonitorClient(url, key), cache)
print("ready", flush=True)
while not os.path.exists(go):
    time.sleep(0.002)
answer = check.fetch_state(monitor_id, max_wait_s=10)
print(json.dumps(answer.reason if isinstance(answer, Unavailable) else answer.status))
"""


def _start_asker(url: str, state_dir: Path, monitor_id: str, go: Path) -> subprocess.Popen:
    args = [sys.executable, "-c", _ASKER, url, KEY, str(state_dir), monitor_id, str(go)]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen(args, stdout=subprocess.PIPE, text=True, cwd=ROOT, env=env)


# Rate limits ---------------------------------------------------------------------------------


def test_a_429_is_honoured_by_every_process_without_sleeping(server, make_check, clock):
    server.plan(Reply.rate_limited("42"))
    first = make_check().fetch_state(MONITOR_API)
    assert first == Unavailable(Reason.RATE_LIMITED, "ProMonitor rate-limited us for 42 s")
    clock.advance(2)
    second = make_check().fetch_state(MONITOR_API)  # the wait left, not the 429's old figure
    assert second == Unavailable(Reason.RATE_LIMITED, "ProMonitor rate-limited us for 40 s")
    assert server.hits == 1
    assert clock.sleeps == []  # nobody waited for Retry-After
    clock.advance(40)
    assert make_check().fetch_state(MONITOR_DB).source == "live"
    assert server.hits == 2


def test_the_real_limiter_429_when_another_host_spent_the_account(clock, make_check):
    with ProMonitorServer(clock=clock) as server:  # the Free plan: 2 a minute
        with ProMonitorClient(server.url, KEY) as other_host:
            other_host.list_monitors()
            clock.advance(10)
            other_host.list_monitors()
        check = make_check(url=server.url)
        answer = check.fetch_state(MONITOR_API)
        assert answer == Unavailable(Reason.RATE_LIMITED, "ProMonitor rate-limited us for 50 s")
        assert check.fetch_state(MONITOR_DB).reason is Reason.RATE_LIMITED
        assert server.hits == 3


def test_remaining_zero_stops_every_process_asking(clock, make_check):
    with ProMonitorServer(clock=clock) as server:
        with ProMonitorClient(server.url, KEY) as other_host:
            other_host.list_monitors()  # leaves 1 of the account's 2
        assert make_check(url=server.url).fetch_state(MONITOR_API).source == "live"
        # Our own budget would allow one more; ProMonitor said 0 remaining.
        answer = make_check(url=server.url).fetch_state(MONITOR_DB)
        assert answer == Unavailable(
            Reason.RATE_LIMITED, "ProMonitor's request limit is used up for 61 s (none remaining)"
        )
        assert server.hits == 2


# Failures ------------------------------------------------------------------------------------


def test_a_dropped_connection_is_unavailable_and_shared_with_waiting_processes(
    server, make_check
):
    server.plan(Reply.dropped())
    answer = make_check().fetch_state(MONITOR_API)
    assert answer.reason is Reason.UNREACHABLE
    assert answer.message.startswith("ProMonitor unreachable: connection closed")
    assert make_check().fetch_state(MONITOR_API) == answer  # no second request
    assert server.hits == 1


def test_an_outage_is_unavailable_at_once(make_check):
    gone = ProMonitorServer().start()
    gone.close()  # nothing listens on its port any more
    started = time.monotonic()
    answer = make_check(url=gone.url).fetch_state(MONITOR_API)
    assert answer.reason is Reason.UNREACHABLE
    assert "connection refused" in answer.message
    assert time.monotonic() - started < 2


def test_a_rejected_key_is_a_configuration_problem(server, make_check):
    answer = make_check(key="pm_wrong").fetch_state(MONITOR_API)
    assert answer == Unavailable(Reason.AUTH, "ProMonitor rejected the API key (HTTP 401)")
    assert answer.is_config_problem


def test_an_unknown_monitor_is_a_configuration_problem_never_hidden_by_the_cache(
    server, crosscheck, clock
):
    crosscheck.fetch_state(MONITOR_API)
    server.monitors.pop(0)  # deleted in ProMonitor since
    clock.advance(61)
    answer = crosscheck.fetch_state(MONITOR_API)
    assert answer == Unavailable(
        Reason.NOT_FOUND, f"no ProMonitor monitor '{MONITOR_API}' (or not yours) (HTTP 404)"
    )
    assert answer.is_config_problem
    assert not Unavailable(Reason.UNREACHABLE, "x").is_config_problem


def test_malformed_json_is_unavailable(server, crosscheck):
    server.plan(Reply.malformed())
    answer = crosscheck.fetch_state(MONITOR_API)
    assert answer.reason is Reason.MALFORMED
    assert "not JSON" in answer.message


def test_a_monitor_missing_a_field_is_unavailable_and_named(server, crosscheck):
    del server.monitors[0]["name"]
    answer = crosscheck.fetch_state(MONITOR_API)
    assert answer.reason is Reason.MALFORMED
    assert "'monitor.name' is missing" in answer.message


def test_an_unusable_cache_is_unavailable_not_a_crash(tmp_path, server):
    state = tmp_path / "state"
    cache = open_pmcache(state, KEY)
    (state / "promonitor.sqlite3").write_bytes(b"this is not a database" * 100)
    check = CrossCheck(lambda: ProMonitorClient(server.url, KEY), cache)
    answer = check.fetch_state(MONITOR_API)
    assert answer.reason is Reason.STATE
    assert server.hits == 0  # without the budget, no request


# Single flight -------------------------------------------------------------------------------


def test_a_process_waits_briefly_for_anothers_fetch_and_uses_it(server, make_check, clock):
    fetcher = make_check()
    assert fetcher.cache.reserve(MONITOR, MONITOR_API, hold_s=6).outcome.value == "granted"
    waits: list[float] = []

    def sleep(seconds: float) -> None:  # the other process's answer lands while we wait
        waits.append(seconds)
        clock.advance(seconds)
        if len(waits) == 3:
            with ProMonitorClient(server.url, KEY) as client:
                fetcher.cache.put_monitor(MONITOR_API, client.get_monitor(MONITOR_API))

    state = make_check(sleep=sleep).fetch_state(MONITOR_API)
    assert (state.source, state.status) == ("cache", "up")
    assert len(waits) == 3
    assert server.hits == 1  # only the other process's request


def test_a_process_gives_up_waiting_after_the_flight_wait(server, make_check, clock):
    make_check().cache.reserve(MONITOR, MONITOR_API, hold_s=6)
    answer = make_check().fetch_state(MONITOR_API)
    assert answer.reason is Reason.BUSY
    assert sum(clock.sleeps) == pytest.approx(2.0, abs=0.051)  # FLIGHT_WAIT_S, injected clock
    assert server.hits == 0


# Gate ----------------------------------------------------------------------------------------


def test_gate_runs_when_up(crosscheck):
    assert crosscheck.gate(crosscheck.fetch_state(MONITOR_API), strict=True).run


def test_gate_refuses_when_down_and_says_since_when_and_why(server, crosscheck):
    decision = crosscheck.gate(crosscheck.fetch_state(MONITOR_DB), strict=False)
    assert not decision.run
    assert decision.message == (
        "dependency 'Database' (db.example.com:5432) is down since 11:00 (Connection timed out)"
    )
    assert [r.path for r in server.received][1] == f"/api/v1/monitors/{MONITOR_DB}/checks"


def test_gate_says_what_it_knows_when_the_checks_would_exceed_the_budget(server, crosscheck):
    state = crosscheck.fetch_state(MONITOR_DB)
    spend_budget(crosscheck.cache)
    decision = crosscheck.gate(state, strict=False)
    assert decision.message == "dependency 'Database' (db.example.com:5432) is down"
    assert not decision.run
    assert server.hits == 1


def test_gate_on_cached_data_says_how_old_it_is(server, make_check, clock):
    make_check().fetch_state(MONITOR_DB)
    make_check().diagnose(MONITOR_DB, NOW)
    clock.advance(120)
    check = make_check()
    message = check.gate(check.fetch_state(MONITOR_DB), strict=False).message
    assert message.endswith("since 11:00 (Connection timed out) (ProMonitor as of 11:06)")


@pytest.mark.parametrize("field, value, shown", [
    ("is_paused", True, "paused"),
    ("status", "pending", "pending"),
    ("status", "maintenance", "maintenance"),
])
def test_gate_runs_on_paused_or_pending_unless_strict(server, crosscheck, field, value, shown):
    server.monitors[0][field] = value
    state = crosscheck.fetch_state(MONITOR_API)
    said = (
        f"dependency 'API' (https://api.example.com/health) is {shown} in ProMonitor, "
        "which says nothing about whether it is up now"
    )
    relaxed = crosscheck.gate(state, strict=False)
    assert (relaxed.run, relaxed.message) == (True, f"{said}; running anyway")
    strict = crosscheck.gate(state, strict=True)
    assert (strict.run, strict.message) == (False, f"{said}; not running (--require-up=strict)")


def test_gate_runs_when_promonitor_cannot_be_asked_unless_strict(crosscheck):
    spend_budget(crosscheck.cache)
    answer = crosscheck.fetch_state(MONITOR_API)
    relaxed, strict = crosscheck.gate(answer, strict=False), crosscheck.gate(answer, strict=True)
    why = "cannot ask ProMonitor: ProMonitor budget of 2 requests/min spent"
    assert (relaxed.run, relaxed.message) == (True, f"{why}; running anyway")
    assert (strict.run, strict.message) == (False, f"{why}; not running (--require-up=strict)")


# Diagnosis -----------------------------------------------------------------------------------


@pytest.fixture
def outage(server) -> ProMonitorServer:
    server.checks[MONITOR_API] = OUTAGE
    return server


def test_diagnosis_names_the_down_period_overlapping_the_run(outage, crosscheck):
    crosscheck.fetch_state(MONITOR_API)  # the name comes from the cached monitor
    diagnosis = crosscheck.diagnose(
        MONITOR_API, at("10:58").timestamp(), started_at=at("10:54").timestamp()
    )
    assert diagnosis == Diagnosis(
        "dependency 'API' was down from 10:55 (Connection timed out)", at("10:55")
    )
    assert diagnosis.metas() == [("promonitor_down_since", "2025-06-15T10:55:00Z")]


def test_diagnosis_of_a_run_that_outlived_the_outage_says_when_it_ended(outage, crosscheck):
    diagnosis = crosscheck.diagnose(
        MONITOR_API, at("11:03").timestamp(), started_at=at("10:54").timestamp()
    )
    assert diagnosis.line == (
        f"dependency '{MONITOR_API}' was down from 10:55 to 11:02 (Connection timed out)"
    )


def test_no_diagnosis_when_it_was_up_throughout(outage, crosscheck):
    assert crosscheck.diagnose(MONITOR_API, at("11:04").timestamp(),
                               started_at=at("11:03").timestamp()) is None
    assert crosscheck.diagnose(MONITOR_API, at("10:52").timestamp()) is None
    assert outage.hits == 1  # the second question used the cached checks


def test_diagnosis_explains_when_the_budget_is_spent(crosscheck):
    spend_budget(crosscheck.cache)
    diagnosis = crosscheck.diagnose(MONITOR_API, NOW)
    assert diagnosis.line == "no ProMonitor diagnosis: ProMonitor budget of 2 requests/min spent"
    assert diagnosis.metas() == []


def test_times_are_local_with_the_date_when_not_today(outage, make_check, clock):
    clock.advance(86_400)
    check = make_check(tz=timezone(timedelta(hours=2)))
    diagnosis = check.diagnose(MONITOR_API, at("10:58").timestamp())
    assert diagnosis.line.startswith(f"dependency '{MONITOR_API}' was down from 2025-06-15 12:55")
    assert clock_time(at("23:30"), at("12:00").timestamp(), timezone(timedelta(hours=2))) == (
        "2025-06-16 01:30"
    )


def test_down_periods_from_checks_in_any_order():
    checks = [_check(c) for c in reversed(OUTAGE)] + [_check(check("k7", "11:05", False))]
    assert [(p.start, p.end, p.error) for p in down_periods(checks)] == [
        (at("10:55"), at("11:02"), "Connection timed out"),
        (at("11:05"), None, None),
    ]
    assert overlapping_period(checks, at("11:03").timestamp(), at("11:04").timestamp()) is None
    assert overlapping_period(checks, at("11:02").timestamp(), at("11:06").timestamp()).start == (
        at("11:05")
    )


def _check(data: dict) -> PmCheck:
    return PmCheck.from_json(data)


def test_kinds_of_entries_are_separate(crosscheck):
    crosscheck.fetch_state(MONITOR_API)
    assert crosscheck.cache.checks(MONITOR_API) is None
    assert crosscheck.cache.peek(CHECKS, MONITOR_API).outcome.value == "granted"
