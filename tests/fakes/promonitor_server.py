"""A fake ProMonitor API (see /work/shared/api/promonitor.md), served under ``<url>/api/v1``.

It enforces a real sliding-window rate limit per presented key (default 2 a minute, the Free
plan) on an injectable clock, and puts X-RateLimit-Limit / X-RateLimit-Remaining on every
answer it routes.  Planned replies (faults) bypass the limiter, as a proxy in front would.
"""

from __future__ import annotations

import collections
import copy
import math
import threading
import time
import urllib.parse
from collections.abc import Callable
from typing import Any

from tests.fakes import FakeServer, RecordedRequest, Reply

KEY = "pm_live_4f9c2a7d1e3b5c8a6f0d2e4b"
WINDOW_S = 60.0

MONITOR_API = "3f1c9a52-8d4e-4b7a-9c21-5e6f7a8b9c0d"
MONITOR_DB = "a7b8c9d0-1e2f-4a3b-8c4d-5e6f7a8b9c0e"


def default_monitors() -> list[dict[str, Any]]:
    """Two monitors in wire format, newest first."""
    return [
        {
            "id": MONITOR_API,
            "name": "API",
            "url": "https://api.example.com/health",
            "kind": "http",
            "status": "up",
            "interval_seconds": 60,
            "is_paused": False,
            "created_at": "2025-01-15T10:30:00Z",
        },
        {
            "id": MONITOR_DB,
            "name": "Database",
            "url": "db.example.com:5432",
            "kind": "tcp",
            "status": "down",
            "interval_seconds": 300,
            "is_paused": False,
            "created_at": "2025-01-10T08:00:00Z",
        },
    ]


def default_checks() -> dict[str, list[dict[str, Any]]]:
    """Checks per monitor id in wire format, newest first."""
    return {
        MONITOR_API: [
            _check("c1", 200, 120, True, None, "2025-06-15T11:05:00Z"),
            _check("c2", 503, 80, False, "HTTP 503", "2025-06-15T11:04:00Z"),
        ],
        MONITOR_DB: [
            _check("c3", None, 3000, False, "Connection timed out", "2025-06-15T11:00:00Z"),
        ],
    }


def _check(
    check_id: str, code: int | None, ms: int, up: bool, error: str | None, at: str
) -> dict[str, Any]:
    return {
        "id": check_id,
        "status_code": code,
        "response_time_ms": ms,
        "is_up": up,
        "error_message": error,
        "checked_at": at,
    }


class RateLimiter:
    """At most ``per_minute`` requests per key in any 60 s window of ``clock``."""

    def __init__(self, per_minute: int, clock: Callable[[], float]) -> None:
        self.per_minute = per_minute
        self._clock = clock
        self._lock = threading.Lock()
        self._seen: dict[str, collections.deque[float]] = collections.defaultdict(collections.deque)

    def take(self, key: str) -> tuple[int, float | None]:
        """Count one request; return (remaining, None) or, over the limit, (0, retry_after_s)."""
        with self._lock:
            now = self._clock()
            seen = self._seen[key]
            while seen and seen[0] <= now - WINDOW_S:
                seen.popleft()
            if len(seen) >= self.per_minute:
                return 0, max(1.0, seen[0] + WINDOW_S - now)
            seen.append(now)
            return self.per_minute - len(seen), None


class ProMonitorServer(FakeServer):
    """Fake ProMonitor for one user.  ``monitors``/``checks`` are wire-format JSON."""

    def __init__(
        self,
        key: str = KEY,
        *,
        monitors: list[dict[str, Any]] | None = None,
        checks: dict[str, list[dict[str, Any]]] | None = None,
        per_minute: int = 2,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.key = key
        self.monitors = monitors if monitors is not None else default_monitors()
        self.checks = checks if checks is not None else default_checks()
        self.limiter = RateLimiter(per_minute, clock)

    def route(self, request: RecordedRequest) -> Reply:
        remaining, retry_after = self.limiter.take(request.header("Authorization") or "")
        limits = (
            ("X-RateLimit-Limit", str(self.limiter.per_minute)),
            ("X-RateLimit-Remaining", str(remaining)),
        )
        if retry_after is not None:
            wait = ("Retry-After", str(math.ceil(retry_after)))
            return Reply.json(429, {"error": "Rate limit exceeded"}, (*limits, wait))
        status, payload = self._answer(request)
        return Reply.json(status, payload, limits)

    def _answer(self, request: RecordedRequest) -> tuple[int, Any]:
        if request.header("Authorization") != f"Bearer {self.key}":
            return 401, {"error": "Invalid or missing API key"}
        if request.method != "GET":
            return 405, {"error": "Method not allowed"}
        segments = urllib.parse.urlsplit(request.path).path.split("/")
        match segments:
            case ["", "api", "v1", "monitors"]:
                return 200, copy.deepcopy(self.monitors)
            case ["", "api", "v1", "monitors", monitor_id]:
                monitor = self._monitor(urllib.parse.unquote(monitor_id))
                return (200, monitor) if monitor else (404, {"error": "Monitor not found"})
            case ["", "api", "v1", "monitors", monitor_id, "checks"]:
                monitor = self._monitor(urllib.parse.unquote(monitor_id))
                if monitor is None:
                    return 404, {"error": "Monitor not found"}
                return 200, copy.deepcopy(self.checks.get(monitor["id"], [])[:100])
        return 404, {"error": "Not found"}

    def _monitor(self, monitor_id: str) -> dict[str, Any] | None:
        for monitor in self.monitors:
            if monitor.get("id") == monitor_id:
                return copy.deepcopy(monitor)
        return None
