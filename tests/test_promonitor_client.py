"""ProMonitorClient against the fake ProMonitor on 127.0.0.1: records, rate limits, errors."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from jobwrap.errors import (
    AuthError,
    ConfigError,
    MalformedResponseError,
    NotFoundError,
    RateLimitedError,
    TransientApiError,
)
from jobwrap.promonitor.client import (
    PmCheck,
    PmMonitor,
    ProMonitorClient,
    RateLimit,
    check_key_format,
)
from tests.fakes import FakeClock, Reply, json_error
from tests.fakes.promonitor_server import (
    KEY,
    MONITOR_API,
    MONITOR_DB,
    ProMonitorServer,
    default_checks,
    default_monitors,
)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def server(clock) -> Iterator[ProMonitorServer]:
    with ProMonitorServer(clock=clock, per_minute=50) as srv:
        yield srv


@pytest.fixture
def client(server) -> Iterator[ProMonitorClient]:
    with ProMonitorClient(server.url, KEY) as promonitor:
        yield promonitor


@pytest.fixture
def free_plan(clock) -> Iterator[ProMonitorServer]:
    with ProMonitorServer(clock=clock) as srv:  # the default: 2 requests a minute
        yield srv


# Reading -------------------------------------------------------------------------------------


def test_list_monitors_sends_the_documented_request(server, client):
    client.list_monitors()
    (request,) = server.received
    assert (request.method, request.path) == ("GET", "/api/v1/monitors")
    assert request.header("Authorization") == f"Bearer {KEY}"
    assert request.header("Accept") == "application/json"


def test_list_monitors_parses_every_monitor(client):
    api, db = client.list_monitors()
    assert api == PmMonitor(
        id=MONITOR_API,
        name="API",
        url="https://api.example.com/health",
        kind="http",
        status="up",
        interval_seconds=60,
        is_paused=False,
        created_at=datetime(2025, 1, 15, 10, 30, tzinfo=UTC),
    )
    assert (db.kind, db.status, db.interval_seconds) == ("tcp", "down", 300)


def test_get_monitor(server, client):
    monitor = client.get_monitor(MONITOR_DB)
    assert server.received[0].path == f"/api/v1/monitors/{MONITOR_DB}"
    assert monitor.name == "Database"


def test_get_checks_parses_nulls(server, client):
    up, down = client.get_checks(MONITOR_API)
    assert server.received[0].path == f"/api/v1/monitors/{MONITOR_API}/checks"
    assert (up.status_code, up.is_up, up.error_message) == (200, True, None)
    assert (down.status_code, down.is_up, down.error_message) == (503, False, "HTTP 503")
    (timeout,) = client.get_checks(MONITOR_DB)
    assert timeout.status_code is None
    assert timeout.error_message == "Connection timed out"
    assert timeout.checked_at == datetime(2025, 6, 15, 11, 0, tzinfo=UTC)


def test_monitor_id_is_quoted_into_one_path_segment(server, client):
    with pytest.raises(NotFoundError):
        client.get_checks("a/b c")
    assert server.received[0].path == "/api/v1/monitors/a%2Fb%20c/checks"


def test_unknown_kind_and_status_are_kept(server, client):
    server.monitors[0].update(kind="dns", status="maintenance")
    monitor = client.get_monitor(MONITOR_API)
    assert (monitor.kind, monitor.status) == ("dns", "maintenance")


def test_unknown_fields_are_ignored(server, client):
    server.monitors[0]["regions"] = ["eu"]
    server.checks[MONITOR_API][0]["region"] = "eu"
    assert client.list_monitors()[0].id == MONITOR_API
    assert client.get_checks(MONITOR_API)[0].id == "c1"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("kind", None),
        ("interval_seconds", "60"),
        ("interval_seconds", 60.5),
        ("interval_seconds", True),
        ("is_paused", "false"),
        ("created_at", "yesterday"),
        ("name", 7),
    ],
)
def test_mistyped_monitor_field_is_malformed_and_named(server, client, field, value):
    server.monitors[1][field] = value
    with pytest.raises(MalformedResponseError, match=rf"'monitors\[1\]\.{field}'"):
        client.list_monitors()


@pytest.mark.parametrize("field", list(default_monitors()[0]))
def test_missing_monitor_field_is_malformed_and_named(server, client, field):
    monitor = default_monitors()[0]
    del monitor[field]
    server.plan(Reply.json(200, monitor))
    with pytest.raises(MalformedResponseError, match=rf"field 'monitor\.{field}' is missing"):
        client.get_monitor(MONITOR_API)


@pytest.mark.parametrize("field", list(default_checks()[MONITOR_API][0]))
def test_missing_check_field_is_malformed_and_named(server, client, field):
    del server.checks[MONITOR_API][1][field]
    with pytest.raises(MalformedResponseError, match=rf"field 'checks\[1\]\.{field}' is missing"):
        client.get_checks(MONITOR_API)


def test_an_object_where_the_list_belongs_is_malformed(server, client):
    server.plan(Reply.json(200, {"monitors": []}))
    with pytest.raises(MalformedResponseError, match="'monitors' should be an array"):
        client.list_monitors()


# Records for the cache -----------------------------------------------------------------------


def test_monitor_round_trips_through_plain_json(client):
    monitors = client.list_monitors()
    assert len(monitors) == len(default_monitors()) == 2  # the loop below is not empty
    for monitor in monitors:
        stored = json.loads(json.dumps(monitor.to_json()))
        assert PmMonitor.from_json(stored) == monitor
        assert set(stored) == set(default_monitors()[0])


def test_check_round_trips_through_plain_json(client):
    checks = client.get_checks(MONITOR_API) + client.get_checks(MONITOR_DB)
    expected = default_checks()
    assert len(checks) == len(expected[MONITOR_API]) + len(expected[MONITOR_DB]) == 3
    for check in checks:
        stored = json.loads(json.dumps(check.to_json()))
        assert PmCheck.from_json(stored) == check
        assert set(stored) == set(default_checks()[MONITOR_API][0])


def test_from_json_names_its_source():
    with pytest.raises(MalformedResponseError, match="malformed ProMonitor cache: .*'check.id'"):
        PmCheck.from_json({}, source="ProMonitor cache")


# Rate limits ---------------------------------------------------------------------------------


def test_rate_limit_is_read_from_every_answer(free_plan, clock):
    with ProMonitorClient(free_plan.url, KEY) as promonitor:
        assert promonitor.last_rate_limit is None
        promonitor.list_monitors()
        assert promonitor.last_rate_limit == RateLimit(limit=2, remaining=1)
        promonitor.get_monitor(MONITOR_API)
        assert promonitor.last_rate_limit == RateLimit(limit=2, remaining=0)
        with pytest.raises(RateLimitedError) as caught:
            promonitor.get_checks(MONITOR_API)
        assert caught.value.retry_after == 60
        assert promonitor.last_rate_limit == RateLimit(limit=2, remaining=0)
        clock.advance(60)
        promonitor.get_checks(MONITOR_API)
        assert promonitor.last_rate_limit == RateLimit(limit=2, remaining=1)
    assert free_plan.hits == 4


def test_retry_after_counts_down_to_the_oldest_request(free_plan, clock):
    with ProMonitorClient(free_plan.url, KEY) as promonitor:
        promonitor.list_monitors()
        clock.advance(45)
        promonitor.list_monitors()
        with pytest.raises(RateLimitedError) as caught:
            promonitor.list_monitors()
    assert caught.value.retry_after == 15


def test_rate_limit_is_per_key(free_plan):
    with ProMonitorClient(free_plan.url, "pm_someone_else") as other:
        for _ in range(3):
            with pytest.raises((AuthError, RateLimitedError)):
                other.list_monitors()
    with ProMonitorClient(free_plan.url, KEY) as promonitor:
        promonitor.list_monitors()
        assert promonitor.last_rate_limit == RateLimit(limit=2, remaining=1)


@pytest.mark.parametrize(
    "headers",
    [
        (),
        (("X-RateLimit-Limit", "50"),),
        (("X-RateLimit-Limit", "lots"), ("X-RateLimit-Remaining", "3")),
        (("X-RateLimit-Limit", "50"), ("X-RateLimit-Remaining", "-1")),
    ],
)
def test_missing_or_garbage_rate_limit_headers_give_none(server, client, headers):
    client.list_monitors()
    assert client.last_rate_limit is not None
    server.plan(Reply.json(200, [], headers))
    assert client.list_monitors() == ()
    assert client.last_rate_limit is None


def test_rate_limit_is_kept_when_no_answer_came(server, client):
    client.list_monitors()
    before = client.last_rate_limit
    server.plan(Reply.dropped())
    with pytest.raises(TransientApiError):
        client.list_monitors()
    assert client.last_rate_limit == before


@pytest.mark.parametrize(
    "reply", [json_error(500, "boom"), Reply.html(503), Reply.rate_limited("1"), Reply.dropped()]
)
def test_client_never_retries(server, client, reply):
    server.plan(reply)
    with pytest.raises(TransientApiError):
        client.list_monitors()
    assert server.hits == 1


# Errors --------------------------------------------------------------------------------------


def test_unknown_monitor_is_not_found(client):
    with pytest.raises(NotFoundError) as caught:
        client.get_monitor("nope")
    assert str(caught.value) == "no ProMonitor monitor 'nope' (or not yours) (HTTP 404)"


def test_404_on_the_list_points_at_the_url(server):
    expected = r"HTTP 404.*GET http://127\.0\.0\.1:\d+/wrong/api/v1/monitors"
    with (
        ProMonitorClient(server.url + "/wrong", KEY) as promonitor,
        pytest.raises(NotFoundError, match=expected),
    ):
        promonitor.list_monitors()


def test_wrong_key_is_an_auth_error_without_the_key(server):
    wrong = "pm_wrong_key_0000000000000000"
    with ProMonitorClient(server.url, wrong) as promonitor, pytest.raises(AuthError) as caught:
        promonitor.list_monitors()
    assert str(caught.value) == "ProMonitor rejected the API key (HTTP 401)"
    assert wrong not in repr(promonitor)


# Key format ----------------------------------------------------------------------------------


def test_key_format():
    assert check_key_format(KEY) is None
    warning = check_key_format("sk_live_123")
    assert warning is not None and "pm_" in warning and "sk_live_123" not in warning
    for bad in ("", "  ", "pm_abc\n"):
        with pytest.raises(ConfigError):
            check_key_format(bad)
