"""The one retry policy: what is retried, how long to wait, and the budget that bounds it all.

The API clients never retry by themselves.  Every wait has a floor and a cap, a server's
Retry-After is honoured within them, and the attempts are counted.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from datetime import UTC
from typing import TypeVar

from jobwrap.errors import ApiError, RateLimitedError

T = TypeVar("T")

MIN_RETRY_WAIT_S = 1.0  # no wait is shorter: "Retry-After: 0" must not become a tight loop
MAX_RETRY_AFTER_S = 60.0  # a longer Retry-After is not waited for: the call gives up instead
MAX_ATTEMPTS = 4  # one call sends at most this many requests, whatever the budget


def parse_retry_after(value: str | None, now: Callable[[], float] = time.time) -> float | None:
    """Seconds to wait from a Retry-After value: delay-seconds or an HTTP-date.

    Returns None when absent or unreadable, 0 for a date in the past.
    """
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        return _seconds_until_http_date(value, now)
    if not math.isfinite(seconds) or seconds < 0:
        return None
    return seconds


def _seconds_until_http_date(value: str, now: Callable[[], float]) -> float | None:
    import email.utils

    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # "-0000" means UTC with no claim about local time
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now())


def retry(
    call: Callable[[float], T],
    *,
    budget_s: float,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], object] = time.sleep,
    rng: Callable[[], float] = random.random,
    base_delay: float = MIN_RETRY_WAIT_S,
    max_delay: float = 8.0,
    max_attempts: int = MAX_ATTEMPTS,
    on_retry: Callable[[ApiError, float], object] | None = None,
) -> T:
    """Call ``call(remaining_s)`` until it returns, retrying retriable ApiErrors in ``budget_s``.

    ``remaining_s`` is the budget left; pass it as the attempt's timeout cap so an attempt
    cannot outlive the budget (``Timeout.total_s`` bounds a whole attempt).  At most
    ``max_attempts`` calls are made.  Waits are exponential backoff with jitter between
    :data:`MIN_RETRY_WAIT_S` and ``max_delay``; a 429's Retry-After is waited (never less than
    the floor: "0" or a date in the past must not become a tight loop) if it is at most
    :data:`MAX_RETRY_AFTER_S` and fits in the budget.  When the next wait would not leave time
    for another attempt, the last error is re-raised.  Errors that are not ApiErrors, and
    non-retriable ones, propagate at once.  ``on_retry(error, delay)`` is called before each
    wait (for logging).
    """
    if budget_s <= 0:
        raise ValueError(f"retry budget must be positive, not {budget_s}")
    deadline = clock() + budget_s
    attempt = 0
    while True:
        try:
            return call(deadline - clock())
        except ApiError as exc:
            attempt += 1
            delay = _delay_before_retry(exc, attempt - 1, rng, base_delay, max_delay)
            # ">=": an attempt started at the deadline would have no time at all.
            if delay is None or attempt >= max_attempts or delay >= deadline - clock():
                raise
            if on_retry is not None:
                on_retry(exc, delay)
            sleep(delay)
            if clock() >= deadline:  # the sleep overran: no attempt may start past the budget
                raise


def _delay_before_retry(
    exc: ApiError, attempt: int, rng: Callable[[], float], base_delay: float, max_delay: float
) -> float | None:
    """How long to wait before retrying ``exc``, or None when it must not be retried.

    Why each class is or is not retried:

    * TransientApiError (refused, reset, timeout, 5xx): outages are often short.  A POST whose
      answer was lost may already be stored, so retrying can create a duplicate Idlemon log;
      we accept that because every log carries the run id in its metas, which identifies
      duplicates, whereas a missing log raises a false "idle" alarm.  (A POST answered 2xx is
      never retried, whatever its body: the clients pass ``require_json=False`` there.)
    * RateLimitedError (429): the server says when to come back; waiting less only burns quota.
      A wait beyond MAX_RETRY_AFTER_S is not worth holding a run or a flush for.
    * MalformedResponseError: usually a proxy's HTML error page during an outage.
    * AuthError, NotFoundError, RejectedError (retriable=False): the same request will be
      refused again until someone fixes the token, slug or body.
    """
    if not exc.retriable:
        return None
    floor = MIN_RETRY_WAIT_S
    if isinstance(exc, RateLimitedError) and exc.retry_after is not None:
        if exc.retry_after > MAX_RETRY_AFTER_S:
            return None
        return max(floor, exc.retry_after)
    # Jitter ("Exponential Backoff And Jitter", AWS): cron fires jobs on many hosts at the
    # same second, and random waits keep their retries from arriving together again.
    ceiling = max(floor, min(max_delay, base_delay * 2 ** min(attempt, 32)))
    return floor + rng() * (ceiling - floor)

