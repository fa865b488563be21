"""Cross-check the ProMonitor monitor of the service a job depends on, cheaply.

Contracts:

* One request at most per question (:meth:`CrossCheck.fetch_state`: ``GET /monitors/:id``;
  the gate's details and :meth:`CrossCheck.diagnose`: ``GET /monitors/:id/checks``), and only
  when the shared :class:`~jobwrap.promonitor.cache.PmCache` has nothing fresh, no other process is
  already asking, ProMonitor has not told us to wait and the host's budget allows it.
* Never a retry, never a sleep through Retry-After: what cannot be answered now is an
  :class:`Unavailable` with a one-line reason, and the job goes on (unless strict).
* Questions answer within about ``max_wait_s`` (:mod:`jobwrap.promonitor.gate` asks in a thread of
  its own while the job runs).
* API and cache failures become :class:`~jobwrap.promonitor.answer.Unavailable`; nothing here
  calls ``sys.exit``.

What the answers mean lives apart: :mod:`jobwrap.promonitor.answer` (states and reasons),
:mod:`jobwrap.promonitor.decision` (``--require-up``) and :mod:`jobwrap.promonitor.downtime`
(down periods and the diagnosis of a failed run).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from datetime import datetime, tzinfo
from typing import TypeVar

from jobwrap.errors import ApiError, ConfigError, RateLimitedError, StateError
from jobwrap.promonitor.answer import DependencyState, Reason, Unavailable, unavailable_from
from jobwrap.promonitor.budget import BlockReason
from jobwrap.promonitor.cache import CHECKS, MONITOR, Cached, PmCache
from jobwrap.promonitor.client import PmCheck, PmMonitor, ProMonitorClient
from jobwrap.promonitor.decision import GateDecision, decide, down_message
from jobwrap.promonitor.downtime import Diagnosis, clock_time, explain, overlapping_period, shown
from jobwrap.promonitor.flight import Outcome, Reservation

T = TypeVar("T")

DEFAULT_WAIT_S = 5.0  # fetch_state / gate details / diagnose: the longest a question may take
FLIGHT_WAIT_S = 2.0  # how long to wait for another process's fetch of the same entry
REQUEST_TIMEOUT_S = 5.0  # connect and read timeouts of the one request
STALE_LIMIT_S = 600.0  # an expired monitor entry may stand in for one this old, if we can't ask
POLL_S = 0.05  # how often a waiting process looks for another's result


class CrossCheck:
    """Answers questions about ProMonitor monitors through the shared cache and budget.

    ``client_factory`` makes a client when (and only when) a request is to be sent; the client
    is closed after its one request.  ``clock`` gives epoch seconds (default: the cache's);
    ``timer``/``sleep`` measure and spend waits; ``tz`` is the zone of times in messages
    (None: local).
    """

    def __init__(
        self,
        client_factory: Callable[[], ProMonitorClient],
        cache: PmCache,
        *,
        clock: Callable[[], float] | None = None,
        timer: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], object] = time.sleep,
        tz: tzinfo | None = None,
        flight_wait_s: float = FLIGHT_WAIT_S,
        request_timeout_s: float = REQUEST_TIMEOUT_S,
        stale_limit_s: float = STALE_LIMIT_S,
    ) -> None:
        self._client_factory = client_factory
        self.cache = cache
        self.clock = clock or cache.clock
        self._timer = timer
        self._sleep = sleep
        self.tz = tz
        self.flight_wait_s = flight_wait_s
        self.request_timeout_s = request_timeout_s
        self.stale_limit_s = stale_limit_s

    # Questions -------------------------------------------------------------------------------

    def fetch_state(
        self, monitor_id: str, max_wait_s: float = DEFAULT_WAIT_S
    ) -> DependencyState | Unavailable:
        """The monitor's state: fresh cache, else one request if allowed, else Unavailable.

        When ProMonitor cannot be asked for a reason that may pass (budget, rate limit,
        outage), a cached state up to ``stale_limit_s`` old is returned instead (source
        ``cache``).  A 401 or 404 is never papered over with cached data.
        """
        deadline = self._timer() + max_wait_s
        try:
            got = self._obtain(MONITOR, monitor_id, deadline)
            if isinstance(got, Unavailable):
                return self._stale_state(monitor_id, got)
            cached, source = got
            return self._state(monitor_id, cached, source)
        except StateError as exc:
            return Unavailable(Reason.STATE, str(exc))

    def gate(
        self,
        answer: DependencyState | Unavailable,
        strict: bool,
        max_wait_s: float = DEFAULT_WAIT_S,
    ) -> GateDecision:
        """Whether ``--require-up`` lets the command start (see ``decision.decide``).

        For a down dependency, the message says since when and the last error when the checks
        can be had (cache, or one more request within the budget).
        """

        def down(state: DependencyState) -> str:
            return down_message(state, self._checks(state.monitor_id, max_wait_s), self._when)

        return decide(answer, strict, down)

    def diagnose(
        self,
        monitor_id: str,
        failed_at: float,
        *,
        started_at: float | None = None,
        max_wait_s: float = DEFAULT_WAIT_S,
    ) -> Diagnosis | None:
        """Why a failed or timed-out run may have failed, from the monitor's recent checks.

        Looks for the latest down period overlapping the run (``started_at`` to ``failed_at``,
        epoch seconds; without ``started_at``, the instant ``failed_at``).  None when the checks
        show it up throughout; a Diagnosis without ``down_since`` when the checks could not be
        had (its line says why).
        """
        checks = self._checks(monitor_id, max_wait_s)
        if isinstance(checks, Unavailable):
            return Diagnosis(f"no ProMonitor diagnosis: {checks.message}")
        run_start = failed_at if started_at is None else started_at
        period = overlapping_period(checks, run_start, failed_at)
        if period is None:
            return None
        return explain(period, self._known_name(monitor_id), failed_at, self._when)

    # Getting data: cache, single flight, budget, one request ----------------------------------

    def list_monitors(self) -> tuple[PmMonitor, ...] | Unavailable:
        """All the user's monitors for ``status``/``doctor``: one request, within the budget.

        Each monitor is cached, so runs that follow need not ask again.
        """
        now = self.clock()
        block = self.cache.blocked(now=now)
        if block is not None:
            left = max(1, math.ceil(block.until - now))
            return Unavailable(Reason.RATE_LIMITED, f"ProMonitor rate-limited us for {left} s")
        if not self.cache.try_acquire(now=now):
            rpm = self.cache.requests_per_minute
            return Unavailable(Reason.BUDGET, f"ProMonitor budget of {rpm} requests/min spent")
        client = self._client_factory()
        try:
            monitors = client.list_monitors(timeout=self.request_timeout_s)
        except RateLimitedError as exc:
            self.cache.note_retry_after(exc.retry_after, now=self.clock())
            return unavailable_from(exc)
        except (ApiError, ConfigError) as exc:
            return unavailable_from(exc)
        finally:
            limit = client.last_rate_limit
            client.close()
            if limit is not None and limit.remaining == 0:
                self.cache.note_exhausted(now=self.clock())
        for monitor in monitors:
            self.cache.put_monitor(monitor.id, monitor, now=self.clock())
        return monitors

    def _checks(self, monitor_id: str, max_wait_s: float) -> tuple[PmCheck, ...] | Unavailable:
        """The monitor's recent checks (a cache failure is Unavailable too)."""
        try:
            got = self._obtain(CHECKS, monitor_id, self._timer() + max_wait_s)
        except StateError as exc:
            return Unavailable(Reason.STATE, str(exc))
        return got if isinstance(got, Unavailable) else got[0].value

    def _obtain(
        self, kind: str, monitor_id: str, deadline: float
    ) -> tuple[Cached, str] | Unavailable:
        """A fresh entry and its source ("cache" or "live"), or why there is none.

        Waits (polling the cache) only while another process fetches the same entry, and then
        at most ``flight_wait_s`` and never past ``deadline``.
        """
        cached = self._cached(kind, monitor_id)
        if cached is not None and cached.fresh(self.clock()):
            return cached, "cache"
        wait_until = min(deadline, self._timer() + self.flight_wait_s)
        hold_s = self.request_timeout_s + 1.0  # the marker outlives our request, not much more
        while True:
            # Peek first (a read): only a process that may fetch queues for the write lock.
            reservation = self.cache.peek(kind, monitor_id, now=self.clock())
            if reservation.outcome is Outcome.GRANTED:
                reservation = self.cache.reserve(kind, monitor_id, hold_s=hold_s, now=self.clock())
            if reservation.outcome is Outcome.GRANTED:
                return self._request(kind, monitor_id, deadline)
            if reservation.outcome is Outcome.FRESH:
                cached = self._cached(kind, monitor_id)
                if cached is not None:
                    return cached, "cache"
                # Unreadable: _cached dropped it, so the next reservation may fetch it.
            elif reservation.outcome is not Outcome.BUSY:
                return self._refusal(reservation)
            if self._timer() + POLL_S > wait_until:
                return Unavailable(
                    Reason.BUSY, "another jobwrap process is asking ProMonitor; no answer in time"
                )
            self._sleep(POLL_S)

    def _request(
        self, kind: str, monitor_id: str, deadline: float
    ) -> tuple[Cached, str] | Unavailable:
        """Send the one request we hold a slot for; store its answer or its failure."""
        timeout = max(0.05, min(deadline - self._timer(), self.request_timeout_s))
        try:
            value = self._send(kind, monitor_id, timeout)
        except (ApiError, ConfigError) as exc:
            failed = unavailable_from(exc)
            failure = (failed.reason.value, failed.message)
            self.cache.release(kind, monitor_id, failure=failure, now=self.clock())
            return failed
        except BaseException:
            self.cache.release(kind, monitor_id, now=self.clock())
            raise
        now = self.clock()
        if isinstance(value, PmMonitor):
            self.cache.put_monitor(monitor_id, value, now=now)
        else:
            self.cache.put_checks(monitor_id, value, now=now)
        return Cached(value, now, now), "live"

    def _send(self, kind: str, monitor_id: str, timeout: float) -> PmMonitor | tuple[PmCheck, ...]:
        """The request itself; notes the rate-limit headers of whatever answer came."""
        client = self._client_factory()
        before = client.last_rate_limit
        try:
            if kind == MONITOR:
                return client.get_monitor(monitor_id, timeout=timeout)
            return client.get_checks(monitor_id, timeout=timeout)
        except RateLimitedError as exc:
            self.cache.note_retry_after(exc.retry_after, now=self.clock())
            raise
        finally:
            after = client.last_rate_limit
            client.close()
            # "is not before": a call that got no answer leaves the previous headers in place.
            if after is not None and after is not before and after.remaining == 0:
                self.cache.note_exhausted(now=self.clock())

    def _refusal(self, reservation: Reservation) -> Unavailable:
        """The Unavailable for a reservation that is neither granted, fresh nor busy."""
        if reservation.outcome is Outcome.FAILED:
            try:
                reason = Reason(reservation.failure_kind or "")
            except ValueError:  # written by another jobwrap version
                reason = Reason.UNREACHABLE
            return Unavailable(reason, reservation.failure or "ProMonitor could not be asked")
        block = reservation.block
        if reservation.outcome is Outcome.BLOCKED and block is not None:
            left = max(1, math.ceil(block.until - self.clock()))
            if block.reason is BlockReason.EXHAUSTED:
                message = f"ProMonitor's request limit is used up for {left} s (none remaining)"
            else:
                message = f"ProMonitor rate-limited us for {left} s"
            return Unavailable(Reason.RATE_LIMITED, message)
        rpm = self.cache.requests_per_minute
        return Unavailable(Reason.BUDGET, f"ProMonitor budget of {rpm} requests/min spent")

    def _cached(self, kind: str, monitor_id: str) -> Cached | None:
        if kind == MONITOR:
            return self.cache.monitor(monitor_id)
        return self.cache.checks(monitor_id)

    # Building answers ------------------------------------------------------------------------

    def _state(self, monitor_id: str, cached: Cached[PmMonitor], source: str) -> DependencyState:
        monitor = cached.value
        latest = self._latest_check(monitor_id)
        return DependencyState(
            monitor_id=monitor_id,
            name=monitor.name,
            url=monitor.url,
            kind=monitor.kind,
            status="paused" if monitor.is_paused else monitor.status,
            response_ms=latest.response_time_ms if latest else None,
            checked_at=latest.checked_at if latest else None,
            source=source,
            fetched_at=cached.fetched_at,
        )

    def _stale_state(self, monitor_id: str, why: Unavailable) -> DependencyState | Unavailable:
        """An expired cached state instead of ``why``, when that is honest and not too old."""
        if why.is_config_problem or why.reason is Reason.STATE:
            return why
        cached = self.cache.monitor(monitor_id)
        if cached is None or self.clock() - cached.fetched_at > self.stale_limit_s:
            return why
        return self._state(monitor_id, cached, "cache")

    def _latest_check(self, monitor_id: str) -> PmCheck | None:
        """The newest check, from fresh cached checks only: an old response time misleads."""
        cached = self.cache.checks(monitor_id)
        if cached is None or not cached.fresh(self.clock()) or not cached.value:
            return None
        return max(cached.value, key=lambda check: check.checked_at)

    def _known_name(self, monitor_id: str) -> str:
        cached = self.cache.monitor(monitor_id)
        return shown(cached.value.name) if cached else monitor_id

    def _when(self, moment: datetime) -> str:
        return clock_time(moment, self.clock(), self.tz)
