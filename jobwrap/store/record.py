"""One run as stored: the record, and its row (made storable, parsed defensively)."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from jobwrap.store.liveness import Here
from jobwrap.store.schema import FINISHED


class ReportStatus(StrEnum):
    """What became of a run's report (the ``report_status`` column)."""

    NONE = "none"  # nothing to send; ``report_error`` may say why (idlemon.report.NOT_SENT)
    PENDING = "pending"  # kept: a later run or ``jobwrap flush`` delivers it
    SENT = "sent"
    REFUSED = "refused"  # Idlemon said no: kept until a flush succeeds or it is discarded
    DISCARDED = "discarded"  # given up on (flush --discard, --discard-refused); the run stays


# Reports still to be delivered: kept past the history's pruning, counted in the backlog.
UNDELIVERED = (ReportStatus.PENDING, ReportStatus.REFUSED)


@dataclass(frozen=True)
class RunRecord:
    """One row of the history, as stored and as shown by ``history``/``show``/``--summary-json``."""

    run_id: str
    job: str
    monitor: str | None
    command: str
    host: str
    started_at: str
    duration_ms: int
    exit_code: int
    metas: tuple[tuple[str, str], ...]
    schedule: str | None = None
    signal: str | None = None
    timed_out: bool = False
    skipped: str | None = None
    error: str | None = None
    stdout_lines: int = 0
    stderr_lines: int = 0
    cpu_user_s: float | None = None
    cpu_sys_s: float | None = None
    max_rss_kb: int | None = None
    output_head: bytes | None = None
    output_tail: bytes | None = None
    output_omitted_lines: int | None = None
    report_status: str = ReportStatus.NONE  # a ReportStatus (run/ and views pass strings)
    report_error: str | None = None
    report_attempts: int = 0
    report_sent_at: str | None = None
    argv: tuple[str, ...] = ()  # as given, str with surrogateescape for undecodable bytes
    state: str = FINISHED  # running | finished | abandoned
    pid: int | None = None  # jobwrap's, while it runs
    boot_id: str | None = None

    def to_json(self, with_output: bool = False) -> dict:
        """A JSON-ready dict; metas as the ``[{"name", "value"}]`` list Idlemon receives."""
        data = {k: getattr(self, k) for k in COLUMNS if not k.startswith("output_")}
        data["metas"] = [{"name": n, "value": v} for n, v in self.metas]
        data["timed_out"] = bool(self.timed_out)
        data["argv"] = list(self.argv)
        if with_output:
            data["output_head"] = _text(self.output_head)
            data["output_tail"] = _text(self.output_tail)
            data["output_omitted_lines"] = self.output_omitted_lines
        return data


COLUMNS = tuple(RunRecord.__dataclass_fields__)
STORED = frozenset((*COLUMNS, "report_claim", "report_claimed_until"))


def _text(data: bytes | None) -> str | None:
    return None if data is None else data.decode("utf-8", "replace")


class Malformed(ValueError):
    """A row that cannot be read as a run (says what is wrong)."""


def row_values(rec: RunRecord) -> dict:
    """The columns of a run as stored: text made storable, metas and argv as JSON."""
    values = {k: getattr(rec, k) for k in COLUMNS}
    for key, value in values.items():
        if isinstance(value, str):
            values[key] = storable(value)
    values["metas"] = json.dumps([{"name": storable(n), "value": storable(v)}
                                  for n, v in rec.metas])
    values["argv"] = json.dumps(list(rec.argv))  # ASCII: surrogates survive as \udcXX
    values["timed_out"] = int(rec.timed_out)
    return values


def storable(text: str) -> str:
    """Text SQLite can store (UTF-8): an undecodable byte kept as ``surrogateescape`` shows as
    ``\\xe9``.  ``argv`` keeps the exact arguments."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


_TYPES: dict[str, tuple[type, ...]] = {
    "run_id": (str,), "job": (str,), "command": (str,), "host": (str,), "started_at": (str,),
    "duration_ms": (int,), "exit_code": (int,), "stdout_lines": (int,), "stderr_lines": (int,),
    "report_attempts": (int,),
}


def from_row(row: sqlite3.Row, here: Here) -> RunRecord:
    keys = row.keys()
    data = {k: row[k] for k in COLUMNS if k in keys}  # a schema-1 file read-only lacks some
    for key, types in _TYPES.items():
        if not isinstance(data.get(key), types):
            raise Malformed(f"bad {key} {data.get(key)!r}")
    try:
        datetime.fromisoformat(data["started_at"])
    except ValueError:
        raise Malformed(f"bad started_at {data['started_at']!r}") from None
    data["metas"] = _metas(row["metas"])
    data["argv"] = _argv(data.get("argv"))
    data["timed_out"] = bool(row["timed_out"])
    data["state"] = here.state(data.get("state") or FINISHED, data)
    for key in ("output_head", "output_tail"):
        if not isinstance(data.get(key), bytes | None):
            data[key] = None  # not worth losing the run over
    return RunRecord(**data)


def _metas(text: object) -> tuple[tuple[str, str], ...]:
    try:
        metas = json.loads(text) if isinstance(text, str | bytes) else None
        if not isinstance(metas, list):
            raise ValueError
        return tuple((str(m["name"]), str(m["value"])) for m in metas)
    except (ValueError, TypeError, KeyError):
        raise Malformed("bad JSON in metas") from None


def _argv(text: object) -> tuple[str, ...]:
    try:
        argv = json.loads(text) if isinstance(text, str) else []
    except ValueError:
        return ()  # the command column still says what ran
    return tuple(a for a in argv if isinstance(a, str)) if isinstance(argv, list) else ()
