"""What several views share: the table layout, local times and durations, a run's outcome."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from jobwrap.store.history import RunRecord


def local_time(iso: str) -> str:
    """In the local zone, with the zone: ``2024-06-01 02:00:03 CEST`` (``+0530`` where the
    zone has no abbreviation)."""
    try:
        moment = datetime.fromisoformat(iso).astimezone()
    except ValueError:
        return iso
    zone = moment.strftime("%Z")
    if not zone.isalpha():
        zone = moment.strftime("%z")
    return moment.strftime("%Y-%m-%d %H:%M:%S ") + zone


def human_duration(ms: int) -> str:
    if ms < 1000:
        return f"{ms}ms"
    seconds = ms / 1000
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, sec = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{sec:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def outcome(record: RunRecord) -> str:
    """One word or two: 'ok', 'exit 3', 'SIGKILL', 'timeout', 'skipped', 'running',
    'abandoned' (jobwrap was killed or the machine went down while the command ran)."""
    if record.state in ("running", "abandoned"):
        return record.state
    if record.skipped:
        return "skipped"
    if record.timed_out:
        return "timeout"
    if record.signal:
        return record.signal
    return "ok" if record.exit_code == 0 else f"exit {record.exit_code}"


def duration(record: RunRecord, now: datetime | None = None) -> str:
    """How long it took; for a running run, how long it has been running; '-' if unknown."""
    if record.state == "abandoned":
        return "-"
    if record.state == "running":
        try:
            began = datetime.fromisoformat(record.started_at)
        except ValueError:
            return "-"
        elapsed = (now or datetime.now(UTC)) - began
        return human_duration(max(0, int(elapsed.total_seconds() * 1000)))
    return human_duration(record.duration_ms)


def table(headers: list[str], rows: list[list[str]]) -> str:
    """Left-aligned columns two spaces apart, a header line first; no trailing blanks."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    for row in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return "\n".join(lines) + "\n"
