"""jobwrap.net.http against a real HTTP server on 127.0.0.1: session, status mapping, bounds."""

from __future__ import annotations

import email.utils
import json
import socket
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from jobwrap import __version__
from jobwrap.errors import (
    ApiError,
    AuthError,
    MalformedResponseError,
    NotFoundError,
    RateLimitedError,
    RejectedError,
    TransientApiError,
)
from jobwrap.net.deadline import DEFAULT_TIMEOUT, Timeout
from jobwrap.net.http import make_session, send_json
from jobwrap.net.jsonfields import JsonRecord, json_records
from jobwrap.net.retry import retry
from tests.fakes import FakeClock, FakeServer, Reply, json_error

SECRET = "0123456789abcdef0123456789abcdef"
AUTH = {"Api-Token": SECRET}


@pytest.fixture
def server() -> Iterator[FakeServer]:
    with FakeServer() as srv:
        yield srv


@pytest.fixture
def session():
    with make_session() as sess:
        yield sess


def get(session, server: FakeServer, **kwargs):
    kwargs.setdefault("headers", AUTH)
    return send_json(session, "GET", f"{server.url}/thing", **kwargs)


# Session -------------------------------------------------------------------------------------


def test_importing_the_api_modules_does_not_import_requests():
    code = (
        "import sys, jobwrap.net.api, jobwrap.net.http, jobwrap.idlemon.client,"
        " jobwrap.promonitor.client, jobwrap.idlemon.delivery\n"
        "print(sorted(m for m in ('requests', 'urllib3', 'ssl') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_session_sends_jobwrap_user_agent_and_accepts_json(server, session):
    get(session, server, headers={})
    request = server.received[0]
    assert request.header("User-Agent") == f"jobwrap/{__version__}"
    assert request.header("Accept") == "application/json"


def test_session_user_agent_can_be_replaced(server):
    with make_session("jobwrap/9 (test)") as sess:
        get(sess, server)
    assert server.received[0].header("User-Agent") == "jobwrap/9 (test)"


def test_session_does_not_retry_behind_our_back(server, session):
    # urllib3 would retry a GET whose connection dropped if the adapter allowed retries.
    server.plan(Reply.dropped(), Reply.dropped())
    with pytest.raises(TransientApiError):
        get(session, server)
    assert server.hits == 1


def test_netrc_does_not_replace_the_authorization_header(server, session, tmp_path, monkeypatch):
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login someone password hunter2\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    get(session, server, headers={"Authorization": "Bearer pm_key"})
    assert server.received[0].header("Authorization") == "Bearer pm_key"


def test_default_timeouts_and_capping():
    assert (DEFAULT_TIMEOUT.connect_s, DEFAULT_TIMEOUT.read_s) == (3.05, 10.0)
    assert DEFAULT_TIMEOUT.capped(None) is DEFAULT_TIMEOUT
    assert DEFAULT_TIMEOUT.capped(5) == Timeout(3.05, 5, 5)
    assert DEFAULT_TIMEOUT.capped(1) == Timeout(1, 1, 1)
    assert DEFAULT_TIMEOUT.capped(-2).read_s > 0  # urllib3 refuses 0 and negatives


# Answers and their errors --------------------------------------------------------------------


def test_2xx_json_body_is_parsed_and_headers_are_case_insensitive(server, session):
    server.plan(Reply.json(201, {"log": {"id": "x"}}, (("X-Thing", "1"),)))
    response = get(session, server, json_body={"duration": 1})
    assert response.status == 201
    assert response.body == {"log": {"id": "x"}}
    assert response.header("x-THING") == "1"
    assert server.received[0].body == {"duration": 1}


def test_204_has_no_body(server, session):
    server.plan(Reply(204))
    assert get(session, server).body is None


@pytest.mark.parametrize(
    ("reply", "error", "retriable"),
    [
        (json_error(500, "database down"), TransientApiError, True),
        (Reply.html(503), TransientApiError, True),
        (json_error(502, "bad gateway"), TransientApiError, True),
        (json_error(408, "too slow"), TransientApiError, True),
        (Reply.rate_limited("7"), RateLimitedError, True),
        (json_error(401, "Unauthenticated."), AuthError, False),
        (json_error(403, "Forbidden."), AuthError, False),
        (json_error(404, "Monitor not found."), NotFoundError, False),
        (json_error(422, "The duration must be an integer."), RejectedError, False),
        (json_error(400, "Bad request."), RejectedError, False),
        (json_error(409, "Conflict."), RejectedError, False),
    ],
)
def test_each_status_maps_to_its_error(server, session, reply, error, retriable):
    server.plan(reply)
    with pytest.raises(ApiError) as caught:
        get(session, server)
    exc = caught.value
    assert type(exc) is error
    assert exc.retriable is retriable
    assert exc.status == reply.status
    message = str(exc)
    assert f"HTTP {reply.status}" in message
    assert "\n" not in message
    assert SECRET not in message
    assert "<html" not in message


def test_error_message_quotes_the_server_message(server, session):
    server.plan(json_error(422, "The duration must be an integer."))
    with pytest.raises(RejectedError, match="HTTP 422.*: The duration must be an integer"):
        get(session, server)


def test_error_message_reads_a_nested_error_object(server, session):
    server.plan(Reply.json(500, {"error": {"message": "queue full"}}))
    with pytest.raises(TransientApiError, match="queue full"):
        get(session, server)


def test_error_excerpt_is_one_short_line_without_the_token(server, session):
    echoed = f"token {SECRET} is\nnot valid here. " * 20
    server.plan(json_error(401, echoed))
    with pytest.raises(AuthError) as caught:
        get(session, server)
    message = str(caught.value)
    assert SECRET not in message
    assert "[redacted]" in message
    assert "\n" not in message
    assert len(message) < 250


def test_bearer_credential_is_scrubbed_from_error_messages(server, session):
    server.plan(json_error(401, "unknown key pm_secret_key"))
    with pytest.raises(AuthError) as caught:
        get(session, server, headers={"Authorization": "Bearer pm_secret_key"})
    assert "pm_secret_key" not in str(caught.value)


def test_redirect_is_not_followed(server, session):
    # Following it would turn a POST into a GET and send Api-Token to another host.
    server.plan(Reply(302, b"", (("Location", "http://elsewhere.invalid/api"),)))
    with pytest.raises(RejectedError, match="redirected .* to http://elsewhere.invalid/api"):
        send_json(session, "POST", f"{server.url}/x", headers=AUTH, json_body={})
    assert server.hits == 1


@pytest.mark.parametrize("reply", [Reply.malformed(), Reply.html(200), Reply(200)])
def test_2xx_that_is_not_json_is_malformed(server, session, reply):
    server.plan(reply)
    with pytest.raises(MalformedResponseError, match="HTTP 200 but the body is not JSON") as caught:
        get(session, server)
    assert caught.value.retriable


def test_429_carries_retry_after_in_seconds(server, session):
    server.plan(Reply.rate_limited("7"))
    with pytest.raises(RateLimitedError, match="retry after 7 s") as caught:
        get(session, server)
    assert caught.value.retry_after == 7.0


def test_429_with_an_http_date_retry_after(server, session):
    when = datetime.now(UTC) + timedelta(seconds=120)
    server.plan(Reply.rate_limited(email.utils.format_datetime(when, usegmt=True)))
    with pytest.raises(RateLimitedError) as caught:
        get(session, server)
    assert 110 < caught.value.retry_after <= 120


def test_429_without_retry_after(server, session):
    server.plan(Reply.rate_limited(None))
    with pytest.raises(RateLimitedError) as caught:
        get(session, server)
    assert caught.value.retry_after is None
    assert "retry after" not in str(caught.value)



def test_dropped_connection_is_transient(server, session):
    server.plan(Reply.dropped())
    with pytest.raises(TransientApiError, match="closed without a response"):
        get(session, server)


def test_refused_connection_is_transient(session):
    with socket.socket() as bound_not_listening:
        bound_not_listening.bind(("127.0.0.1", 0))
        port = bound_not_listening.getsockname()[1]
        with pytest.raises(TransientApiError, match="connection refused"):
            send_json(session, "GET", f"http://127.0.0.1:{port}/x", headers=AUTH)


def test_slow_answer_times_out_as_transient(server, session):
    server.plan(Reply.slow(30))
    started = time.monotonic()
    with pytest.raises(TransientApiError, match="did not answer within 0.2 s"):
        get(session, server, timeout=Timeout(1, 0.2))
    assert time.monotonic() - started < 3


def test_on_response_sees_error_answers_too(server, session):
    seen = []
    server.plan(Reply.json(503, {}, (("X-RateLimit-Remaining", "4"),)))
    with pytest.raises(TransientApiError):
        get(session, server, on_response=seen.append)
    assert [(r.status, r.header("X-RateLimit-Remaining")) for r in seen] == [(503, "4")]


def test_unsendable_header_is_a_plain_error_without_the_token(server, session):
    token_with_newline = SECRET + "\n"
    with pytest.raises(ApiError) as caught:
        get(session, server, headers={"Api-Token": token_with_newline})
    assert type(caught.value) is ApiError and not caught.value.retriable
    assert SECRET not in str(caught.value)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
    assert server.hits == 0



# Reading answers -----------------------------------------------------------------------------


def test_json_record_names_the_missing_or_mistyped_field():
    record = JsonRecord({"a": {"n": True, "t": "x"}}, "root", "Test answer").record("a")
    with pytest.raises(MalformedResponseError, match=r"'root\.a\.n' should be an integer, not a b"):
        record.integer("n")
    with pytest.raises(MalformedResponseError, match=r"'root\.a\.gone' is missing"):
        record.text("gone")
    with pytest.raises(MalformedResponseError, match=r"'root\.a\.t' is not an ISO 8601"):
        record.timestamp("t")


def test_json_record_timestamps_are_aware():
    record = JsonRecord({"z": "2025-01-15T10:30:00Z", "naive": "2025-01-15T10:30:00"}, "", "T")
    assert record.timestamp("z") == datetime(2025, 1, 15, 10, 30, tzinfo=UTC)
    assert record.timestamp("naive").tzinfo is not None


def test_json_records_requires_an_array_of_objects():
    with pytest.raises(MalformedResponseError, match="'items' should be an array, not an object"):
        json_records({}, "items", "T")
    with pytest.raises(MalformedResponseError, match=r"'items\[1\]' should be an object, not null"):
        json_records([{}, None], "items", "T")


# Retries over real HTTP (the policy itself: tests/test_retry.py) -------------------------


def test_retry_over_real_http_until_the_outage_ends(server, session):
    clock = FakeClock()
    server.fail_next(2, Reply.html(503))
    response = retry(
        lambda remaining: get(session, server, timeout=DEFAULT_TIMEOUT.capped(remaining)),
        budget_s=30,
        clock=clock,
        sleep=clock.sleep,
        rng=lambda: 1.0,
    )
    assert response.body == {"ok": True}
    assert server.hits == 3
    assert clock.sleeps == [1.0, 2.0]


def test_retry_after_in_the_past_over_real_http_sends_few_requests(server, session):
    past = email.utils.format_datetime(datetime.now(UTC) - timedelta(hours=1), usegmt=True)
    server.fail_next(10_000, Reply.rate_limited(past))
    start = time.monotonic()
    with pytest.raises(RateLimitedError):
        retry(lambda left: get(session, server, timeout=DEFAULT_TIMEOUT.capped(left)),
              budget_s=2.5)
    assert server.hits <= 3  # was thousands: each wait is at least 1 s
    assert time.monotonic() - start < 4


# Bounded answers (issue 9, item 14) ----------------------------------------------------------


def test_an_endless_chunked_body_stops_at_the_size_cap(server, session):
    server.plan(Reply.endless_chunked())
    start = time.monotonic()
    with pytest.raises(MalformedResponseError, match="larger than 256 KiB"):
        get(session, server, timeout=Timeout(1, 1, 2))
    assert time.monotonic() - start < 2


def test_a_huge_body_stops_at_the_size_cap(server, session):
    server.plan(Reply.huge())
    with pytest.raises(MalformedResponseError, match="larger than"):
        get(session, server, timeout=Timeout(1, 1, 2))


def test_a_dripping_body_ends_at_the_whole_request_deadline(server, session):
    server.plan(Reply.dripping(every_s=0.1, headers_too=False))
    start = time.monotonic()
    with pytest.raises(TransientApiError, match="not complete within 1 s"):
        get(session, server, timeout=Timeout(1, 1, 1))
    assert time.monotonic() - start < 1.8


def test_dripping_headers_end_at_the_whole_request_deadline(server, session):
    server.plan(Reply.dripping(every_s=0.1))
    start = time.monotonic()
    with pytest.raises(TransientApiError, match="did not answer within 1 s"):
        get(session, server, timeout=Timeout(1, 1, 1))
    assert time.monotonic() - start < 1.8


def test_a_session_still_works_after_a_request_was_cut_off():
    with FakeServer(keep_alive=True) as srv, make_session() as sess:
        srv.plan(Reply.dripping(every_s=0.1, headers_too=False))
        with pytest.raises(TransientApiError):
            get(sess, srv, timeout=Timeout(1, 1, 0.5))
        assert get(sess, srv).body == {"ok": True}
        assert get(sess, srv).body == {"ok": True}


def test_a_2xx_body_problem_is_returned_when_json_is_not_required(server, session):
    server.plan(Reply.html(200))
    response = send_json(session, "POST", f"{server.url}/x", headers=AUTH, json_body={},
                         require_json=False)
    assert response.status == 200 and response.body is None
    assert response.problem is not None and "not JSON" in response.problem


# Echoed secrets (issue 9, item 17) -----------------------------------------------------------

PM_KEY = "pm_live_4f9c2a7d1e3b5c8a6f0d2e4b"


@pytest.mark.parametrize(
    "reply",
    [json_error(401, f"bad token {SECRET.upper()}"),
     json_error(422, f"bad token {urllib.parse.quote(SECRET)} {SECRET.title()}"),
     Reply(302, b"", (("Location", f"http://elsewhere.invalid/{SECRET.upper()}/x"),)),
     Reply(200, b"<html>", (("Content-Type", f"text/html; t={SECRET}"),)),
     Reply(500, b"", (("X-Echo", SECRET),))],
    ids=["upper", "encoded", "location", "content-type", "header"],
)
def test_an_echoed_token_never_reaches_a_message(server, session, reply):
    server.plan(reply)
    with pytest.raises(ApiError) as caught:
        send_json(session, "POST", f"{server.url}/x", headers=AUTH, json_body={})
    assert SECRET.lower() not in str(caught.value).lower()
    assert urllib.parse.quote(SECRET).lower() not in str(caught.value).lower()


def test_an_echoed_bearer_key_is_scrubbed_in_any_case(server, session):
    server.plan(json_error(401, f"no such key: BEARER {PM_KEY.upper()}"))
    with pytest.raises(AuthError) as caught:
        get(session, server, headers={"Authorization": f"Bearer {PM_KEY}"})
    assert PM_KEY.lower() not in str(caught.value).lower()


def test_an_echoed_token_is_scrubbed_from_the_parsed_body(server, session):
    server.plan(Reply.json(200, {"name": f"x {SECRET.upper()} y", SECRET: [SECRET]}))
    body = get(session, server).body
    assert SECRET.lower() not in json.dumps(body).lower()
    assert body["name"] == "x [redacted] y"
