"""``jobwrap cron``'s log: one line per event on stderr.

``time=... event=NAME key=value ...`` (logfmt), or one JSON object per line with
``log_format="json"``.  Events: ``ready``, ``start``, ``exit``, ``skip``, ``replace``,
``reload``, ``clock``, ``error``, ``stop``, ``stopped``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import TextIO

from jobwrap.errors import UsageError


class EventLog:
    """One line per event: logfmt (``text``) or a JSON object (``json``).  Never raises."""

    def __init__(
        self,
        log_format: str = "text",
        stream: TextIO | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        if log_format not in ("text", "json"):
            raise UsageError(f"bad log format {log_format!r}: choose text or json")
        self.json = log_format == "json"
        self.stream = stream
        self.clock = clock or utc_now

    def emit(self, event: str, **fields: object) -> None:
        """Write one event; fields that are None are left out."""
        record: dict[str, object] = {"time": iso_utc(self.clock()), "event": event}
        record.update({k: v for k, v in fields.items() if v is not None})
        line = json.dumps(record, ensure_ascii=False) if self.json else _logfmt(record)
        stream = self.stream or sys.stderr
        try:
            stream.write(line + "\n")
            stream.flush()
        except (OSError, ValueError):
            pass  # a broken log stream must not stop the jobs


def utc_now() -> datetime:
    return datetime.now(UTC)


def iso_utc(moment: datetime) -> str:
    """An aware time as logged: UTC, milliseconds, ``Z`` (``2024-05-01T10:00:00.000Z``)."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _logfmt(record: Mapping[str, object]) -> str:
    return " ".join(f"{name}={_logfmt_value(value)}" for name, value in record.items())


def _logfmt_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value)
    if text and text.isprintable() and not any(c in text for c in ' "=\\'):
        return text
    return json.dumps(text, ensure_ascii=False)
