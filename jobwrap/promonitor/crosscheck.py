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
* API and cache failures become :class:`Unavailable`; nothing here calls ``sys.exit``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from enum import StrEnum
from typing import TypeVar

from jobwrap.errors import (
    ApiError,
    AuthError,
    ConfigError,
    JobwrapError,
    MalformedResponseError,
    NotFoundError,
    RateLimitedError,
    StateError,
)
from jobwrap.promonitor.budget import BlockReason
from jobwrap.promonitor.cache import CHECKS, MONITOR, Cached, PmCache
from jobwrap.promonitor.client import PmCheck, PmMonitor, ProMonitorClient
from jobwrap.promonitor.flight import Outcome, Reservation

T = TypeVar("T")

DEFAULT_WAIT_S = 5.0  # fetch_state / gate details / diagnose: the longest a question may take
FLIGHT_WAIT_S = 2.0  # how long to wait for another process's fetch of the same entry
REQUEST_TIMEOUT_S = 5.0  # connect and read timeouts of the one request
STALE_LIMIT_S = 600.0  # an expired monitor entry may stand in for one this old, if we can't ask
POLL_S = 0.05  # how often a waiting process looks for another's result


class Reason(StrEnum):
    """Why ProMonitor could not be asked: callers warn differently for configuration ones."""

    BUDGET = "budget"  # this host's requests_per_minute is spent
    RATE_LIMITED = "rate_limited"  # a 429, or X-RateLimit-Remaining reached 0
    UNREACHABLE = "unreachable"  # outage, timeout, 5xx
    MALFORMED = "malformed"  # an answer that is not the documented JSON
    AUTH = "auth"  # 401/403: the key is wrong (configuration)
    NOT_FOUND = "not_found"  # 404: the monitor id is wrong or not this account's (config)
    CONFIG = "config"  # e.g. a bad base URL (configuration)
    BUSY = "busy"  # another process was asking and did not get an answer in time
    TIMEOUT = "timeout"  # a background question did not finish in time
    STATE = "state"  # the shared cache cannot be used, so the budget cannot be kept


_CONFIG_REASONS = frozenset({Reason.AUTH, Reason.NOT_FOUND, Reason.CONFIG})


@dataclass(frozen=True)
class Unavailable:
    """ProMonitor could not be asked; ``message`` is one line for people."""

    reason: Reason
    message: str

    @property
    def is_config_problem(self) -> bool:
        """True for a wrong key, monitor id or URL: a user must fix something."""
        return self.reason in _CONFIG_REASONS


@dataclass(frozen=True)
class DependencyState:
    """What ProMonitor says about the dependency.

    ``status`` is ``paused`` for a paused monitor (its own status then says nothing current),
    else ProMonitor's value as it comes (``up``, ``down``, ``pending`` or an unknown one).
    ``response_ms``/``checked_at`` come from the latest check when fresh checks are cached.
    ``source`` is ``live`` (asked now) or ``cache``; ``fetched_at`` is epoch seconds.
    """

    monitor_id: str
    name: str
    url: str
    kind: str
    status: str
    response_ms: int | None
    checked_at: datetime | None
    source: str
    fetched_at: float

    def metas(self) -> list[tuple[str, str]]:
        """``promonitor_status``, and ``promonitor_response_ms`` when known."""
        found = [("promonitor_status", self.status)]
        if self.response_ms is not None:
            found.append(("promonitor_response_ms", str(self.response_ms)))
        return found


@dataclass(frozen=True)
class GateDecision:
    """Whether to start the command, and what to tell the user (empty: nothing to say)."""

    run: bool
    message: str


@dataclass(frozen=True)
class Diagnosis:
    """One line for stderr.  ``down_since`` is set when a down period explains the failure;
    it is None when the line only says why there is no diagnosis (e.g. budget spent).
    """

    line: str
    down_since: datetime | None = None

    def metas(self) -> list[tuple[str, str]]:
        """``promonitor_down_since`` (ISO 8601, UTC) when it applies."""
        if self.down_since is None:
            return []
        return [("promonitor_down_since", iso_utc(self.down_since))]


@dataclass(frozen=True)
class DownPeriod:
    """Consecutive failing checks: from the first one to the first passing check after them
    (``end`` None: still failing at the latest check); ``error`` is the latest error seen."""

    start: datetime
    end: datetime | None
    error: str | None


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
        """Whether ``--require-up`` lets the command start.

        * up: run, nothing to say.
        * down: never run; the message names the monitor and URL and, when the checks can be
          had (cache, or one more request within the budget), since when and the last error.
        * paused, pending or an unknown status say nothing current: run unless ``strict``.
        * Unavailable: run and say so, unless ``strict``.
        """
        if isinstance(answer, Unavailable):
            return _unknown_gate(f"cannot ask ProMonitor: {answer.message}", strict)
        if answer.status == "up":
            return GateDecision(True, "")
        if answer.status == "down":
            return GateDecision(False, self._down_message(answer, max_wait_s))
        what = f"{_dependency(answer)} is {_shown(answer.status)} in ProMonitor"
        return _unknown_gate(f"{what}, which says nothing about whether it is up now", strict)

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
        try:
            got = self._obtain(CHECKS, monitor_id, self._timer() + max_wait_s)
        except StateError as exc:
            got = Unavailable(Reason.STATE, str(exc))
        if isinstance(got, Unavailable):
            return Diagnosis(f"no ProMonitor diagnosis: {got.message}")
        checks: tuple[PmCheck, ...] = got[0].value
        run_start = failed_at if started_at is None else started_at
        period = overlapping_period(checks, run_start, failed_at)
        if period is None:
            return None
        name = self._known_name(monitor_id)
        end = period.end
        until = f" to {self._when(end)}" if end is not None and end.timestamp() <= failed_at else ""
        error = f" ({_shown(period.error)})" if period.error else ""
        line = f"dependency '{name}' was down from {self._when(period.start)}{until}{error}"
        return Diagnosis(line, period.start)

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
            return self._unavailable(exc)
        except (ApiError, ConfigError) as exc:
            return self._unavailable(exc)
        finally:
            limit = client.last_rate_limit
            client.close()
            if limit is not None and limit.remaining == 0:
                self.cache.note_exhausted(now=self.clock())
        for monitor in monitors:
            self.cache.put_monitor(monitor.id, monitor, now=self.clock())
        return monitors

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
            failed = self._unavailable(exc)
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

    def _unavailable(self, exc: JobwrapError) -> Unavailable:
        if isinstance(exc, RateLimitedError):
            wait = "" if exc.retry_after is None else f" for {math.ceil(exc.retry_after)} s"
            return Unavailable(Reason.RATE_LIMITED, f"ProMonitor rate-limited us{wait}")
        kinds: tuple[tuple[type[JobwrapError], Reason], ...] = (
            (AuthError, Reason.AUTH),
            (NotFoundError, Reason.NOT_FOUND),
            (MalformedResponseError, Reason.MALFORMED),
            (ConfigError, Reason.CONFIG),
        )
        for kind, reason in kinds:
            if isinstance(exc, kind):
                return Unavailable(reason, str(exc))
        return Unavailable(Reason.UNREACHABLE, str(exc))

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

    def _down_message(self, state: DependencyState, max_wait_s: float) -> str:
        """"dependency 'X' (url) is down since 10:55 (error)", with what can be known."""
        text = f"{_dependency(state)} is down"
        try:
            got = self._obtain(CHECKS, state.monitor_id, self._timer() + max_wait_s)
        except StateError as exc:  # the details are a nicety: say what we know without them
            got = Unavailable(Reason.STATE, str(exc))
        if not isinstance(got, Unavailable):
            period = ongoing_period(got[0].value)
            if period is not None:
                text += f" since {self._when(period.start)}"
                if period.error:
                    text += f" ({_shown(period.error)})"
        if state.source == "cache":
            text += f" (ProMonitor as of {self._when(_from_epoch(state.fetched_at))})"
        return text

    def _known_name(self, monitor_id: str) -> str:
        cached = self.cache.monitor(monitor_id)
        return _shown(cached.value.name) if cached else monitor_id

    def _when(self, moment: datetime) -> str:
        return clock_time(moment, self.clock(), self.tz)


# Pure helpers --------------------------------------------------------------------------------


def down_periods(checks: tuple[PmCheck, ...] | list[PmCheck]) -> list[DownPeriod]:
    """The down periods the checks show, oldest first (checks may come in any order)."""
    periods: list[DownPeriod] = []
    start: datetime | None = None
    error: str | None = None
    for check in sorted(checks, key=lambda c: c.checked_at):
        if not check.is_up:
            if start is None:
                start, error = check.checked_at, None
            error = check.error_message or error
        elif start is not None:
            periods.append(DownPeriod(start, check.checked_at, error))
            start = None
    if start is not None:
        periods.append(DownPeriod(start, None, error))
    return periods


def ongoing_period(checks: tuple[PmCheck, ...] | list[PmCheck]) -> DownPeriod | None:
    """The down period still going on at the latest check, if any."""
    periods = down_periods(checks)
    return periods[-1] if periods and periods[-1].end is None else None


def overlapping_period(
    checks: tuple[PmCheck, ...] | list[PmCheck], started_at: float, failed_at: float
) -> DownPeriod | None:
    """The latest down period that overlaps ``started_at``..``failed_at`` (epoch seconds)."""
    for period in reversed(down_periods(checks)):
        began = period.start.timestamp() <= failed_at
        ended_before = period.end is not None and period.end.timestamp() <= started_at
        if began and not ended_before:
            return period
    return None


def clock_time(moment: datetime, now: float, tz: tzinfo | None = None) -> str:
    """``HH:MM`` in ``tz`` (None: local), with the date when it is not ``now``'s day."""
    local = moment.astimezone(tz)
    today = datetime.fromtimestamp(now, tz).date()
    return local.strftime("%H:%M" if local.date() == today else "%Y-%m-%d %H:%M")


def iso_utc(moment: datetime) -> str:
    """ISO 8601 in UTC with a Z, as ProMonitor writes its timestamps."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _from_epoch(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def _unknown_gate(what: str, strict: bool) -> GateDecision:
    if strict:
        return GateDecision(False, f"{what}; not running (--require-up=strict)")
    return GateDecision(True, f"{what}; running anyway")


def _dependency(state: DependencyState) -> str:
    return f"dependency '{_shown(state.name)}' ({_shown(state.url)})"


def _shown(text: str) -> str:
    """Text from ProMonitor made safe for one terminal line: no control characters."""
    printable = "".join(char if char.isprintable() else " " for char in text)
    return " ".join(printable.split())[:200]
