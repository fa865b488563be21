"""The one retry policy (jobwrap.net.retry): backoff, jitter, Retry-After, budget, attempts."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from jobwrap.errors import (
    ApiError,
    AuthError,
    MalformedResponseError,
    NotFoundError,
    RateLimitedError,
    RejectedError,
    TransientApiError,
)
from jobwrap.net.retry import MAX_ATTEMPTS, MAX_RETRY_AFTER_S, parse_retry_after, retry
from tests.fakes import FakeClock

# Retry-After -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("7", 7.0),
        (" 0 ", 0.0),
        ("1.5", 1.5),
        ("Wed, 21 Oct 2015 07:28:30 GMT", 30.0),
        ("Wed, 21 Oct 2015 07:27:00 GMT", 0.0),  # in the past: go now
        ("-3", None),
        ("nan", None),
        ("soon", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_retry_after(value, seconds):
    now = datetime(2015, 10, 21, 7, 28, 0, tzinfo=UTC).timestamp()
    assert parse_retry_after(value, now=lambda: now) == seconds



# The retry policy ----------------------------------------------------------------------------

class Flaky:
    """A call that raises the given errors in turn, then returns "done"; records its budgets.

    Each call lasts ``cost_s`` on ``clock``, or its remaining budget if less: the budget is
    its timeout, as for a real request.
    """

    def __init__(self, *errors: Exception, clock: FakeClock | None = None, cost_s: float = 0):
        self.errors = list(errors)
        self.remaining: list[float] = []
        self.clock = clock
        self.cost_s = cost_s

    def __call__(self, remaining_s: float) -> str:
        self.remaining.append(remaining_s)
        if self.clock is not None:
            self.clock.advance(min(self.cost_s, remaining_s))
        if self.errors:
            raise self.errors.pop(0)
        return "done"

    @property
    def calls(self) -> int:
        return len(self.remaining)


def run_retry(call, clock: FakeClock, **kwargs):
    kwargs.setdefault("budget_s", 60)
    kwargs.setdefault("rng", lambda: 1.0)
    return retry(call, clock=clock, sleep=clock.sleep, **kwargs)


def outage() -> TransientApiError:
    return TransientApiError("down", status=503)


def test_success_needs_no_wait():
    clock = FakeClock()
    assert run_retry(Flaky(), clock) == "done"
    assert clock.sleeps == []


def test_transient_errors_are_retried_with_exponential_backoff():
    clock = FakeClock()
    call = Flaky(outage(), outage(), outage())
    assert run_retry(call, clock) == "done"
    assert clock.sleeps == [1.0, 2.0, 4.0]


def test_backoff_has_full_jitter():
    clock = FakeClock()
    run_retry(Flaky(outage(), outage(), outage()), clock, rng=lambda: 0.25)
    assert clock.sleeps == [1.0, 1.25, 1.75]  # between the 1 s floor and the ceiling


def test_backoff_is_capped_at_max_delay():
    clock = FakeClock()
    run_retry(Flaky(*[outage() for _ in range(8)]), clock, budget_s=1000, max_delay=3,
              max_attempts=9)
    assert clock.sleeps == [1.0, 2.0, 3, 3, 3, 3, 3, 3]


@pytest.mark.parametrize(
    "error",
    [
        TransientApiError("down"),
        RateLimitedError("slow down", retry_after=None),
        MalformedResponseError("html"),
    ],
)
def test_retriable_errors_are_retried(error):
    call = Flaky(error)
    assert run_retry(call, FakeClock()) == "done"
    assert call.calls == 2


@pytest.mark.parametrize(
    "error",
    [
        AuthError("bad token", status=401),
        NotFoundError("no slug", status=404),
        RejectedError("bad body", status=422),
        ApiError("cannot send"),
        ValueError("a bug"),
    ],
)
def test_other_errors_are_raised_at_once(error):
    call = Flaky(error)
    clock = FakeClock()
    with pytest.raises(type(error)):
        run_retry(call, clock)
    assert call.calls == 1
    assert clock.sleeps == []


def test_budget_is_never_exceeded_and_the_last_error_is_raised():
    clock = FakeClock()
    start = clock.now
    errors = [TransientApiError(f"attempt {n}") for n in range(100)]
    call = Flaky(*errors, clock=clock, cost_s=2)
    with pytest.raises(TransientApiError) as caught:
        run_retry(call, clock, budget_s=10)
    assert clock.now - start <= 10
    assert str(caught.value) == f"attempt {call.calls - 1}"
    assert call.calls >= 3


def test_each_attempt_is_given_the_remaining_budget():
    clock = FakeClock()
    call = Flaky(outage(), outage(), clock=clock, cost_s=1)
    run_retry(call, clock, budget_s=10)
    assert call.remaining == [10, 10 - 1 - 1, 10 - 1 - 1 - 1 - 2]


def test_retry_after_is_waited_exactly_even_beyond_max_delay():
    clock = FakeClock()
    run_retry(Flaky(RateLimitedError("429", retry_after=20)), clock, budget_s=60)
    assert clock.sleeps == [20]


def test_retry_after_beyond_the_budget_stops_at_once():
    clock = FakeClock()
    call = Flaky(RateLimitedError("429", retry_after=61))
    with pytest.raises(RateLimitedError):
        run_retry(call, clock, budget_s=60)
    assert call.calls == 1
    assert clock.sleeps == []


def test_backoff_that_would_reach_the_deadline_stops():
    clock = FakeClock()
    call = Flaky(outage(), clock=clock, cost_s=9.6)
    with pytest.raises(TransientApiError):
        run_retry(call, clock, budget_s=10)  # 0.4 s left, the backoff wants 0.5 s
    assert clock.sleeps == []


def test_an_overrunning_sleep_does_not_start_an_attempt_past_the_budget():
    clock = FakeClock()
    call = Flaky(outage())

    def oversleep(seconds: float) -> None:
        clock.advance(seconds + 100)

    with pytest.raises(TransientApiError):
        retry(call, budget_s=10, clock=clock, sleep=oversleep, rng=lambda: 1.0)
    assert call.calls == 1


def test_on_retry_is_told_each_error_and_wait():
    clock = FakeClock()
    first, second = outage(), RateLimitedError("429", retry_after=4)
    seen = []
    run_retry(Flaky(first, second), clock, on_retry=lambda exc, delay: seen.append((exc, delay)))
    assert seen == [(first, 1.0), (second, 4)]


@pytest.mark.parametrize("budget", [0, -1])
def test_budget_must_be_positive(budget):
    with pytest.raises(ValueError, match="budget"):
        retry(Flaky(), budget_s=budget)


# Bounded waits and attempts (issue 9, item 15) -----------------------------------------------


@pytest.mark.parametrize("retry_after", [0, 0.0001])
def test_retry_after_zero_waits_the_floor_not_a_tight_loop(retry_after):
    clock = FakeClock()
    call = Flaky(*[RateLimitedError("429", retry_after=retry_after) for _ in range(50)])
    with pytest.raises(RateLimitedError):
        run_retry(call, clock, budget_s=5)
    assert all(wait >= 1.0 for wait in clock.sleeps)
    assert call.calls <= 5


def test_attempts_are_bounded_whatever_the_budget():
    clock = FakeClock()
    call = Flaky(*[outage() for _ in range(100)])
    with pytest.raises(TransientApiError):
        run_retry(call, clock, budget_s=100_000)
    assert call.calls == MAX_ATTEMPTS


def test_a_retry_after_beyond_the_cap_is_not_waited():
    clock = FakeClock()
    call = Flaky(RateLimitedError("429", retry_after=MAX_RETRY_AFTER_S + 1))
    with pytest.raises(RateLimitedError):
        run_retry(call, clock, budget_s=100_000)
    assert call.calls == 1 and clock.sleeps == []
