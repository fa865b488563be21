"""ProMonitor client: read monitors and their recent checks, and the rate-limit headers.

jobwrap only reads ProMonitor, to cross-check a service a job depends on.  The Free plan
allows 2 requests per minute per *user*, across all jobs: this client makes exactly one
request per call and never retries.  Callers cache (the records round-trip through
``to_json``/``from_json`` for that) and must not wrap these calls in a retry loop.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from jobwrap.errors import AuthError, ConfigError, NotFoundError, UsageError
from jobwrap.net.api import ApiClient
from jobwrap.net.http import send_json
from jobwrap.net.jsonfields import JsonRecord, json_records
from jobwrap.net.message import PreparedCall, Response

if TYPE_CHECKING:
    pass

API_PREFIX = "/api/v1"
SERVICE = "ProMonitor"
_SOURCE = "ProMonitor answer"

# The documented values.  Others are kept as they come: ProMonitor may add kinds or states.


@dataclass(frozen=True)
class RateLimit:
    """The X-RateLimit-Limit / X-RateLimit-Remaining headers of one answer."""

    limit: int
    remaining: int

    @classmethod
    def from_headers(cls, headers: Mapping[str, str]) -> RateLimit | None:
        """Parse them from lower-cased ``headers``; None if either is missing or not a count."""
        limit = _count(headers.get("x-ratelimit-limit"))
        remaining = _count(headers.get("x-ratelimit-remaining"))
        if limit is None or remaining is None:
            return None
        return cls(limit=limit, remaining=remaining)


def _count(value: str | None) -> int | None:
    if value is None or not value.strip().isdigit():
        return None
    return int(value)


@dataclass(frozen=True)
class PmMonitor:
    """A monitor.  ``status`` of a paused monitor says nothing current; ``pending`` = unchecked."""

    id: str
    name: str
    url: str
    kind: str  # http, tcp, ping or ssl; unknown kinds are kept as they come
    status: str  # up, down or pending; unknown states are kept as they come
    interval_seconds: int
    is_paused: bool
    created_at: datetime

    def to_json(self) -> dict[str, Any]:
        """The API's own JSON shape, with timestamps in ISO 8601 with offset."""
        return {
            "id": self.id,
            "name": self.name,
            "url": self.url,
            "kind": self.kind,
            "status": self.status,
            "interval_seconds": self.interval_seconds,
            "is_paused": self.is_paused,
            "created_at": self.created_at.isoformat(),
        }

    @classmethod
    def from_json(cls, data: Any, *, path: str = "monitor", source: str = _SOURCE) -> PmMonitor:
        """Read the API's (or :meth:`to_json`'s) shape; MalformedResponseError names a bad field.

        ``source`` names where the data came from in that message, e.g. "ProMonitor cache".
        """
        return _monitor_from(JsonRecord(data, path, source))


@dataclass(frozen=True)
class PmCheck:
    """One check result.  ``status_code`` is None for non-HTTP monitors and connection errors."""

    id: str
    status_code: int | None
    response_time_ms: int
    is_up: bool
    error_message: str | None
    checked_at: datetime

    def to_json(self) -> dict[str, Any]:
        """The API's own JSON shape, with timestamps in ISO 8601 with offset."""
        return {
            "id": self.id,
            "status_code": self.status_code,
            "response_time_ms": self.response_time_ms,
            "is_up": self.is_up,
            "error_message": self.error_message,
            "checked_at": self.checked_at.isoformat(),
        }

    @classmethod
    def from_json(cls, data: Any, *, path: str = "check", source: str = _SOURCE) -> PmCheck:
        """Read the API's (or :meth:`to_json`'s) shape; MalformedResponseError names a bad field."""
        return _check_from(JsonRecord(data, path, source))


def _monitor_from(record: JsonRecord) -> PmMonitor:
    return PmMonitor(
        id=record.text("id"),
        name=record.text("name"),
        url=record.text("url"),
        kind=record.text("kind"),
        status=record.text("status"),
        interval_seconds=record.integer("interval_seconds"),
        is_paused=record.flag("is_paused"),
        created_at=record.timestamp("created_at"),
    )


def _check_from(record: JsonRecord) -> PmCheck:
    return PmCheck(
        id=record.text("id"),
        status_code=record.integer_or_none("status_code"),
        response_time_ms=record.integer("response_time_ms"),
        is_up=record.flag("is_up"),
        error_message=record.text_or_none("error_message"),
        checked_at=record.timestamp("checked_at"),
    )


def check_key_format(token: str) -> str | None:
    """ConfigError for an empty key (or one with whitespace); a warning if not ``pm_…``.

    Neither the error nor the warning quotes the key.
    """
    from jobwrap.config.values import check_token

    try:
        check_token(token, "the ProMonitor API key")
    except UsageError as exc:
        raise ConfigError(str(exc)) from None
    if not token.startswith("pm_"):
        return "the ProMonitor API key does not start with 'pm_' as ProMonitor keys do"
    return None


class ProMonitorClient(ApiClient):
    """Reads one ProMonitor account.  One request per call, never a retry.

    :attr:`last_rate_limit` holds the rate-limit headers of the most recent answer (whatever
    its status); it is None before any answer, or when that answer had no usable headers, and
    is left unchanged by a call that got no answer at all.
    """

    service = SERVICE
    last_rate_limit: RateLimit | None = None  # set per instance by every answer

    def list_monitors(self, timeout: float | None = None) -> tuple[PmMonitor, ...]:
        """All monitors of the key's user, newest first."""
        body = self._get("/monitors", timeout)
        return tuple(_monitor_from(item) for item in json_records(body, "monitors", _SOURCE))

    def get_monitor(self, monitor_id: str, timeout: float | None = None) -> PmMonitor:
        """One monitor; NotFoundError "no ProMonitor monitor 'id' (or not yours)"."""
        body = self._get(f"/monitors/{_quote(monitor_id)}", timeout, monitor_id=monitor_id)
        return PmMonitor.from_json(body)

    def get_checks(self, monitor_id: str, timeout: float | None = None) -> tuple[PmCheck, ...]:
        """Up to 100 recent checks of a monitor, newest first."""
        path = f"/monitors/{_quote(monitor_id)}/checks"
        body = self._get(path, timeout, monitor_id=monitor_id)
        return tuple(_check_from(item) for item in json_records(body, "checks", _SOURCE))




    def _get(self, path: str, timeout: float | None, *, monitor_id: str | None = None) -> Any:
        """GET ``path`` under /api/v1 and return the parsed body.

        A 404 names ``monitor_id``; without one (the list) the generic message, which shows
        the URL, is kept: there a 404 means a wrong base URL.
        """
        call = PreparedCall(
            "GET",
            f"{self.base_url}{API_PREFIX}{path}",
            {"Accept": "application/json", "Authorization": f"Bearer {self._token}"},
        )
        try:
            response = send_json(
                self._session_in_use(),
                call.method,
                call.url,
                headers=call.headers,
                timeout=self.timeout.capped(timeout),
                service=SERVICE,
                on_response=self._note_rate_limit,
            )
        except AuthError as exc:
            raise AuthError(
                f"ProMonitor rejected the API key (HTTP {exc.status})", status=exc.status
            ) from None
        except NotFoundError as exc:
            if monitor_id is None:
                raise
            raise NotFoundError(
                f"no ProMonitor monitor {monitor_id!r} (or not yours) (HTTP 404)",
                status=exc.status,
            ) from None
        return response.body

    def _note_rate_limit(self, response: Response) -> None:
        self.last_rate_limit = RateLimit.from_headers(response.headers)


def _quote(monitor_id: str) -> str:
    return urllib.parse.quote(monitor_id, safe="")
