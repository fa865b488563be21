"""Typed reads of JSON answers from the APIs (and of cached copies of them).

A missing documented field or a value of the wrong type is a MalformedResponseError that names
the field's path; fields never read are ignored, so new fields in an API are harmless.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from jobwrap.errors import MalformedResponseError

# Integers beyond this are no count or interval an API means; they would overflow a float
# (10**400) or a SQLite column.  2**53: every such int is exact as a float too.
MAX_INTEGER = 2**53
# Timestamps outside these years are bogus (year 0001) and break conversions to epoch
# seconds or to another zone.
MIN_YEAR, MAX_YEAR = 1900, 9000

_KINDS: dict[str, Callable[[Any], bool]] = {
    "a string": lambda v: isinstance(v, str),
    "an integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "a number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "a boolean": lambda v: isinstance(v, bool),
    "an array": lambda v: isinstance(v, list),
}


class JsonRecord:
    """Typed reads of one JSON object from an API answer (or from a cache of one).

    A missing field or a value of the wrong type raises MalformedResponseError naming the
    field's path, e.g. ``project.monitors[0].slug``.  Fields never read are ignored, so
    fields an API adds later do no harm.  Timestamps without a UTC offset are taken as UTC.
    """

    def __init__(self, value: Any, path: str, source: str) -> None:
        if not isinstance(value, dict):
            raise _malformed(source, f"{path!r} should be an object, not {_json_type(value)}")
        self._data = value
        self._path = path
        self._source = source

    def text(self, name: str) -> str:
        return self._read(name, "a string", nullable=False)

    def text_or_none(self, name: str) -> str | None:
        return self._read(name, "a string", nullable=True)

    def integer(self, name: str) -> int:
        return self._bounded(name, self._read(name, "an integer", nullable=False))

    def integer_or_none(self, name: str) -> int | None:
        value = self._read(name, "an integer", nullable=True)
        return None if value is None else self._bounded(name, value)

    def number_or_none(self, name: str) -> float | None:
        value = self._read(name, "a number", nullable=True)
        if value is None:
            return None
        number = float(self._bounded(name, value)) if isinstance(value, int) else value
        if not math.isfinite(number):  # Python's json reads 1e400 as inf
            raise self._error(name, "is not a finite number")
        return number

    def flag(self, name: str) -> bool:
        return self._read(name, "a boolean", nullable=False)

    def timestamp(self, name: str) -> datetime:
        return self._parse_time(name, self.text(name))

    def timestamp_or_none(self, name: str) -> datetime | None:
        value = self.text_or_none(name)
        return None if value is None else self._parse_time(name, value)

    def record(self, name: str) -> JsonRecord:
        if name not in self._data:
            raise self._error(name, "is missing")
        return JsonRecord(self._data[name], self._field(name), self._source)

    def records(self, name: str) -> list[JsonRecord]:
        items = self._read(name, "an array", nullable=False)
        return json_records(items, self._field(name), self._source)

    def _read(self, name: str, kind: str, *, nullable: bool) -> Any:
        if name not in self._data:
            raise self._error(name, "is missing")
        value = self._data[name]
        if value is None and nullable:
            return None
        if not _KINDS[kind](value):
            raise self._error(name, f"should be {kind}, not {_json_type(value)}")
        return value

    def _bounded(self, name: str, value: int) -> int:
        if not -MAX_INTEGER <= value <= MAX_INTEGER:
            raise self._error(name, "is out of range")
        return value

    def _parse_time(self, name: str, value: str) -> datetime:
        try:
            when = datetime.fromisoformat(value)
        except ValueError:
            raise self._error(name, f"is not an ISO 8601 timestamp: {value[:40]!r}") from None
        when = when if when.tzinfo is not None else when.replace(tzinfo=UTC)
        try:
            in_range = MIN_YEAR <= when.astimezone(UTC).year <= MAX_YEAR
        except (OverflowError, ValueError):
            in_range = False
        if not in_range:
            raise self._error(name, f"is out of range: {value[:40]!r}")
        return when

    def _field(self, name: str) -> str:
        return f"{self._path}.{name}" if self._path else name

    def _error(self, name: str, problem: str) -> MalformedResponseError:
        return _malformed(self._source, f"field {self._field(name)!r} {problem}")


def json_records(value: Any, path: str, source: str) -> list[JsonRecord]:
    """The objects of a JSON array, as :class:`JsonRecord` named ``path[0]``, ``path[1]``..."""
    if not isinstance(value, list):
        raise _malformed(source, f"{path!r} should be an array, not {_json_type(value)}")
    return [JsonRecord(item, f"{path}[{index}]", source) for index, item in enumerate(value)]


def _malformed(source: str, problem: str) -> MalformedResponseError:
    return MalformedResponseError(f"malformed {source}: {problem}")


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    names = {bool: "a boolean", str: "a string", int: "an integer", float: "a number"}
    return names.get(type(value), "an array" if isinstance(value, list) else "an object")
