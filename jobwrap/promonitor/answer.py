"""What a question to ProMonitor answers: the dependency's state, or why it could not be asked."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from jobwrap.errors import (
    AuthError,
    ConfigError,
    JobwrapError,
    MalformedResponseError,
    NotFoundError,
    RateLimitedError,
)


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


def unavailable_from(exc: JobwrapError) -> Unavailable:
    """The Unavailable for an API or configuration error of the one request."""
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
