"""IdlemonClient against the fake Idlemon on 127.0.0.1: request shape, receipts, errors."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone

import pytest

from jobwrap.errors import (
    AuthError,
    ConfigError,
    MalformedResponseError,
    NotFoundError,
    RejectedError,
    TransientApiError,
)
from jobwrap.idlemon.client import IdlemonClient, LogMeta, check_token_format
from jobwrap.net.http import make_session
from jobwrap.net.retry import retry
from tests.fakes import FakeClock, Reply, json_error
from tests.fakes.idlemon_server import PROJECT_ID, TOKEN, IdlemonServer, StoredLog

METAS = [("run_id", "r-42"), ("processed", "42")]


@pytest.fixture
def server() -> Iterator[IdlemonServer]:
    with IdlemonServer() as srv:
        yield srv


@pytest.fixture
def client(server) -> Iterator[IdlemonClient]:
    with IdlemonClient(server.api_url, TOKEN) as idlemon:
        yield idlemon


def errors_of(server: IdlemonServer, client: IdlemonClient, reply: Reply) -> str:
    server.plan(reply)
    with pytest.raises(Exception) as caught:
        client.post_log("bar", 1, METAS)
    return str(caught.value)


# Posting a log -------------------------------------------------------------------------------


def test_post_log_sends_exactly_the_documented_request(server, client):
    client.post_log("bar", 7, METAS)
    (request,) = server.received
    assert request.method == "POST"
    assert request.path == "/api/monitors/bar/logs"
    assert request.header("Accept") == "application/json"
    assert request.header("Content-Type") == "application/json"
    assert request.header("Api-Token") == TOKEN
    assert request.body == {
        "duration": 7,
        "metas": [{"name": "run_id", "value": "r-42"}, {"name": "processed", "value": "42"}],
    }
    assert server.logs == [StoredLog("bar", 7, tuple(METAS))]


def test_post_log_returns_the_receipt(client):
    receipt = client.post_log("bar", 7, METAS)
    uuid.UUID(receipt.id)
    assert receipt.duration == 7
    assert [(meta.name, meta.value) for meta in receipt.metas] == METAS
    assert all(isinstance(meta, LogMeta) and meta.id for meta in receipt.metas)


def test_post_log_without_metas_sends_an_empty_list(server, client):
    assert client.post_log("bar", 0, []).metas == ()
    assert server.received[0].body == {"duration": 0, "metas": []}


def test_slug_is_quoted_into_one_path_segment(server, client):
    client.post_log("backup job/1", 3, [])
    assert server.received[0].path == "/api/monitors/backup%20job%2F1/logs"
    assert server.logs[0].slug == "backup job/1"


def test_log_request_is_what_post_log_sends(server, client):
    call = client.log_request("bar", 7, METAS)
    client.post_log("bar", 7, METAS)
    request = server.received[0]
    assert call.method == request.method
    assert call.url == server.url + request.path
    assert call.body == request.body
    for name, value in call.headers.items():
        assert request.header(name) == value


def test_base_url_trailing_slash_is_ignored(server):
    with IdlemonClient(server.api_url + "/", TOKEN) as idlemon:
        idlemon.post_log("bar", 1, [])
    assert server.received[0].path == "/api/monitors/bar/logs"


def test_dry_run_description_masks_the_token(client):
    text = client.log_request("bar", 7, METAS).describe()
    assert TOKEN not in text
    assert "Api-Token: 0123…cdef" in text
    assert text.startswith(f"POST {client.base_url}/monitors/bar/logs\n")
    assert '"name": "run_id",' in text


def test_client_repr_hides_the_token(client):
    assert TOKEN not in repr(client)


@pytest.mark.parametrize(
    ("duration", "metas", "error"),
    [
        (1.5, [], TypeError),
        (True, [], TypeError),
        (-1, [], ValueError),
        (1, [("n", 42)], TypeError),
        (1, [("n", "v", "extra")], ValueError),
    ],
)
def test_bad_arguments_are_refused_before_sending(server, client, duration, metas, error):
    with pytest.raises(error):
        client.post_log("bar", duration, metas)
    assert server.hits == 0


def test_empty_slug_is_a_config_error(server, client):
    with pytest.raises(ConfigError, match="slug is empty"):
        client.log_request("", 1, [])


# Errors --------------------------------------------------------------------------------------


def test_unknown_slug_is_not_found(client):
    with pytest.raises(NotFoundError) as caught:
        client.post_log("nope", 1, [])
    assert str(caught.value) == "no Idlemon monitor with slug 'nope' (HTTP 404)"
    assert caught.value.status == 404


@pytest.mark.parametrize("status", [401, 403])
def test_rejected_token_is_an_auth_error_without_the_token(server, status):
    wrong = "fedcba9876543210fedcba9876543210"
    server.plan(json_error(status, f"Token {wrong} unknown."))
    with IdlemonClient(server.api_url, wrong) as idlemon, pytest.raises(AuthError) as caught:
        idlemon.post_log("bar", 1, [])
    assert str(caught.value) == f"Idlemon rejected the API token (HTTP {status})"
    assert caught.value.status == status


def test_wrong_token_against_the_fake_is_refused(server):
    with IdlemonClient(server.api_url, "f" * 32) as idlemon, pytest.raises(AuthError):
        idlemon.post_log("bar", 1, [])
    assert server.logs == []


def test_rejected_body_keeps_the_server_reason(server, client):
    server.plan(json_error(422, "The duration field must be an integer."))
    with pytest.raises(RejectedError, match="Idlemon .*HTTP 422.*duration field must be"):
        client.post_log("bar", 1, [])


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        (Reply.html(503), TransientApiError),
        (json_error(500, f"leaked {TOKEN}"), TransientApiError),
        (Reply.rate_limited("5"), TransientApiError),
        (Reply.malformed(502), TransientApiError),
        (Reply.dropped(), TransientApiError),
        (json_error(401, f"bad {TOKEN}"), AuthError),
        (json_error(422, f"bad {TOKEN}"), RejectedError),
    ],
)
def test_no_error_message_contains_the_token(server, client, reply, error):
    server.plan(reply)
    with pytest.raises(error) as caught:
        client.post_log("bar", 1, METAS)
    assert TOKEN not in str(caught.value)
    assert "\n" not in str(caught.value)


def test_receipt_missing_a_field_is_delivered_with_the_field_named(server, client):
    server.plan(Reply.json(201, {"log": {"id": "x", "duration": 1}}))
    receipt = client.post_log("bar", 1, [])
    assert receipt.warning is not None
    assert "field 'log.metas' is missing" in receipt.warning


def test_project_answer_that_is_not_json_is_malformed(server, client):
    server.plan(Reply.malformed())
    with pytest.raises(MalformedResponseError):
        client.get_project(PROJECT_ID)


def test_attempt_timeout_is_capped_by_the_caller(server, client):
    server.plan(Reply.slow(30))
    started = time.monotonic()
    with pytest.raises(TransientApiError, match="within 0.2 s"):
        client.post_log("bar", 1, [], timeout=0.2)
    assert time.monotonic() - started < 3


def test_retried_post_after_outage_stores_one_log(server, client):
    clock = FakeClock()
    server.fail_next(2, Reply.html(503))
    receipt = retry(
        lambda remaining: client.post_log("bar", 5, METAS, timeout=remaining),
        budget_s=30,
        clock=clock,
        sleep=clock.sleep,
    )
    assert receipt.duration == 5
    assert server.hits == 3
    assert len(server.logs) == 1


def test_client_closes_only_its_own_session(server):
    with make_session() as shared:
        with IdlemonClient(server.api_url, TOKEN, session=shared) as idlemon:
            idlemon.post_log("bar", 1, [])
        IdlemonClient(server.api_url, TOKEN, session=shared).post_log("bar", 2, [])
    assert server.hits == 2


# Reading a project ---------------------------------------------------------------------------


def test_get_project_parses_the_project_and_its_monitors(server, client):
    project = client.get_project(PROJECT_ID)
    assert server.received[0].method == "GET"
    assert server.received[0].path == f"/api/projects/{PROJECT_ID}"
    assert project.id == PROJECT_ID
    assert project.name == "Foo"
    assert project.token_last_used == datetime(2025, 6, 15, 11, 6, 7, tzinfo=UTC)
    bar, backup = project.monitors
    assert (bar.slug, bar.interval, bar.interval_avg, bar.duration_avg) == ("bar", 60, 60, 42)
    assert bar.is_idle is False and bar.last_idle is None
    assert bar.last_contact == datetime(2025, 6, 15, 11, 0, tzinfo=UTC)
    assert backup.is_idle is True
    assert backup.last_idle == datetime(2025, 6, 14, 3, tzinfo=timezone(timedelta(hours=2)))
    assert backup.last_idle.utcoffset() == timedelta(hours=2)


def test_unknown_fields_are_ignored(server, client):
    server.project["plan"] = "gold"
    server.project["monitors"][0]["colour"] = "red"
    assert client.get_project(PROJECT_ID).monitors[0].name == "Bar"


def test_null_averages_and_description_are_accepted(server, client):
    monitor = server.project["monitors"][0]
    monitor.update(interval_avg=None, duration_avg=None, description=None, last_contact=None)
    parsed = client.get_project(PROJECT_ID).monitors[0]
    assert (parsed.interval_avg, parsed.duration_avg, parsed.description) == (None, None, None)
    assert parsed.last_contact is None


M0 = r"project\.monitors\[0\]"  # regex for the first monitor's path


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (lambda p: p.pop("name"), r"project\.name"),
        (lambda p: p["monitors"][1].pop("slug"), r"project\.monitors\[1\]\.slug"),
        (lambda p: p["monitors"][0].update(interval="60"), M0 + r"\.interval"),
        (lambda p: p["monitors"][0].update(is_idle="no"), M0 + r"\.is_idle"),
        (lambda p: p["monitors"][0].update(interval=True), M0 + r"\.interval"),
        (lambda p: p["monitors"][0].update(last_contact="now"), M0 + r"\.last_contact"),
        (lambda p: p.update(monitors={}), r"project\.monitors"),
    ],
)
def test_missing_or_mistyped_field_is_malformed_and_named(server, client, change, named):
    change(server.project)
    with pytest.raises(MalformedResponseError, match=rf"malformed Idlemon answer: .*'{named}'"):
        client.get_project(PROJECT_ID)


def test_unknown_project_is_not_found(client):
    with pytest.raises(NotFoundError) as caught:
        client.get_project("nope")
    assert str(caught.value) == "no Idlemon project 'nope' (HTTP 404)"


def test_project_with_bad_token_is_an_auth_error(server):
    with IdlemonClient(server.api_url, "x" * 32) as idlemon, pytest.raises(AuthError) as caught:
        idlemon.get_project(PROJECT_ID)
    assert str(caught.value) == "Idlemon rejected the API token (HTTP 401)"


# Token format --------------------------------------------------------------------------------


def test_documented_token_shape_passes_silently():
    assert check_token_format(TOKEN) is None
    assert check_token_format(TOKEN.upper()) is None


@pytest.mark.parametrize("token", ["abc", "g" * 32, TOKEN + "0"])
def test_unusual_token_only_warns_without_quoting_it(token):
    warning = check_token_format(token)
    assert warning is not None and "32 hex" in warning
    assert token not in warning


@pytest.mark.parametrize("token", ["", "   ", TOKEN + "\n", "ab cd", "ab\x00cd"])
def test_unusable_token_is_a_config_error(token):
    with pytest.raises(ConfigError) as caught:
        check_token_format(token)
    if token.strip():
        assert token.strip() not in str(caught.value)


@pytest.mark.parametrize("url", ["www.idlemon.net/api", "ftp://idlemon.net", "https://"])
def test_base_url_must_be_http(url):
    with pytest.raises(ConfigError, match="Idlemon base URL"):
        IdlemonClient(url, TOKEN)


# A 2xx is delivered whatever its body (issue 9, item 15) -------------------------------------


@pytest.mark.parametrize(
    "reply",
    [Reply.html(200), Reply.json(201, {"log": {"id": 7}}), Reply.malformed(200)],
    ids=["html", "undocumented", "cut"],
)
def test_post_log_answered_2xx_with_an_odd_body_is_a_receipt_with_a_warning(server, client,
                                                                            reply):
    server.plan(reply)
    receipt = client.post_log("bar", 3, [("a", "1")])
    assert receipt.warning is not None and "accepted the log" in receipt.warning
    assert receipt.duration == 3
    assert server.hits == 1


def test_a_documented_receipt_has_no_warning(client):
    assert client.post_log("bar", 1, []).warning is None


def test_an_echoed_token_in_a_404_message_is_not_shown(server, client):
    server.plan(Reply.json(404, {"message": f"nothing for {TOKEN.upper()}"}))
    with pytest.raises(NotFoundError) as caught:
        client.post_log("bar", 1, [])
    assert TOKEN.lower() not in str(caught.value).lower()
