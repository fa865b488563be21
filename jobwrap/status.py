"""``jobwrap status``: Idlemon's view of the project's monitors next to the local history.

Idlemon's ``interval`` has no documented unit; its own example only makes sense in minutes,
so it is shown as minutes, and a monitor section's ``interval`` (minutes) overrides it.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from jobwrap.store.history import History, RunRecord
from jobwrap.views import duration, local_time, outcome, table


@dataclass(frozen=True)
class MonitorRow:
    """One monitor as ``status`` shows it; fields are None when unknown."""

    slug: str
    name: str | None = None
    interval_min: float | None = None
    interval_avg_min: float | None = None
    duration_avg_s: float | None = None
    last_contact: datetime | None = None
    is_idle: bool | None = None
    in_project: bool | None = True  # None: no project was read, so nobody knows
    last_run: RunRecord | None = None
    pending: int = 0
    refused: int = 0
    median_s: float | None = None
    p95_s: float | None = None
    dependency: str | None = None  # ProMonitor status of the linked dependency

    @property
    def unusual_duration(self) -> bool:
        """The last run took far longer (or shorter) than this job usually does."""
        if self.last_run is None or self.median_s is None or self.p95_s is None:
            return False
        if self.last_run.state != "finished":
            return False  # running or abandoned: its duration is not known
        last = self.last_run.duration_ms / 1000
        return last > max(2 * self.p95_s, self.p95_s + 1) or (
            self.median_s > 5 and last < self.median_s / 5
        )

    def to_json(self) -> dict:
        return {
            "slug": self.slug,
            "name": self.name,
            "in_project": self.in_project,
            "interval_min": self.interval_min,
            "interval_avg_min": self.interval_avg_min,
            "duration_avg_s": self.duration_avg_s,
            "last_contact": self.last_contact.isoformat() if self.last_contact else None,
            "is_idle": self.is_idle,
            "last_run_at": self.last_run.started_at if self.last_run else None,
            "last_exit_code": self.last_run.exit_code if self.last_run else None,
            "last_state": self.last_run.state if self.last_run else None,
            "reports_pending": self.pending,
            "reports_refused": self.refused,
            "local_median_s": self.median_s,
            "local_p95_s": self.p95_s,
            "unusual_duration": self.unusual_duration,
            "dependency": self.dependency,
        }


def percentiles(durations_ms: list[int]) -> tuple[float | None, float | None]:
    if not durations_ms:
        return None, None
    seconds = sorted(d / 1000 for d in durations_ms)
    p95 = seconds[min(len(seconds) - 1, int(round(0.95 * (len(seconds) - 1))))]
    return statistics.median(seconds), p95


def build_rows(project, history: History | None, intervals: dict[str, int]) -> list[MonitorRow]:
    """Merge the project's monitors with local runs (monitors only seen locally come last)."""
    latest = history.latest_by_monitor() if history else {}
    backlog = history.report_backlog() if history else {}
    rows = []
    seen = set()
    for m in project.monitors if project else ():
        seen.add(m.slug)
        rows.append(_row(m.slug, history, latest, backlog, intervals, remote=m))
    for slug in sorted(set(latest) - seen):
        row = _row(slug, history, latest, backlog, intervals, remote=None)
        rows.append(row if project else replace(row, in_project=None))
    return rows


def _row(slug, history, latest, backlog, intervals, remote) -> MonitorRow:
    median, p95 = percentiles(history.durations(slug)) if history else (None, None)
    local = dict(
        last_run=latest.get(slug),
        pending=backlog.get((slug, "pending"), 0),
        refused=backlog.get((slug, "refused"), 0),
        median_s=median,
        p95_s=p95,
    )
    if remote is None:
        return MonitorRow(slug=slug, in_project=False, interval_min=intervals.get(slug), **local)
    return MonitorRow(
        slug=slug,
        name=remote.name,
        interval_min=intervals.get(slug, remote.interval),
        interval_avg_min=remote.interval_avg,
        duration_avg_s=remote.duration_avg,
        last_contact=remote.last_contact,
        is_idle=remote.is_idle,
        **local,
    )


def relative(moment: datetime | None, now: datetime | None = None) -> str:
    if moment is None:
        return "never"
    seconds = int(((now or datetime.now(UTC)) - moment).total_seconds())
    if seconds < 0:
        return "just now"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"


def _num(value: float | None, unit: str = "") -> str:
    if value is None:
        return "-"
    return f"{value:g}{unit}"


def render_table(rows: list[MonitorRow], now: datetime | None = None) -> str:
    if not rows:
        return "nothing to show yet: no monitors read and no local runs\n"
    headers = ["MONITOR", "STATE", "EVERY", "AVG", "AVG DUR", "LAST CONTACT", "LAST RUN",
               "RESULT", "PENDING", "LOCAL MED/P95"]
    if any(r.dependency for r in rows):
        headers.append("DEPENDENCY")
    lines = []
    for r in rows:
        if r.in_project is None:
            state = "-"
        elif not r.in_project:
            state = "not in project"
        else:
            state = "IDLE" if r.is_idle else "active"
        med = "-" if r.median_s is None else f"{r.median_s:.1f}s/{r.p95_s:.1f}s"
        if r.unusual_duration:
            med += " (!)"
        line = [
            r.slug, state, _num(r.interval_min, "m"), _num(r.interval_avg_min, "m"),
            _num(r.duration_avg_s, "s"), relative(r.last_contact, now) if r.in_project else "-",
            local_time(r.last_run.started_at) if r.last_run else "-",
            _result(r.last_run), _pending(r), med,
        ]
        if len(headers) > len(line):
            line.append(r.dependency or "-")
        lines.append(line)
    return table(headers, lines)


def _result(run: RunRecord | None) -> str:
    if run is None:
        return "-"
    return f"{outcome(run)} {duration(run)}"


def _pending(r: MonitorRow) -> str:
    text = str(r.pending)
    if r.refused:
        text += f" (+{r.refused} refused)"
    return text
