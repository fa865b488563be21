"""``jobwrap status``: Idlemon's view of the project's monitors next to the local history.

The core: :func:`gather` returns a :class:`StatusReport`; ``views`` renders it.

Idlemon's ``interval`` has no documented unit; its own example only makes sense in minutes,
so it is shown as minutes, and a monitor section's ``interval`` (minutes) overrides it.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from jobwrap.config.monitors import monitor_settings, per_monitor
from jobwrap.config.settings import Settings
from jobwrap.config.table import IDLEMON, PROMONITOR
from jobwrap.errors import ApiError, JobwrapError
from jobwrap.idlemon.report import why_not_sent
from jobwrap.store.history import History, RunRecord, open_history

if TYPE_CHECKING:  # imported only with a lock URL
    from jobwrap.store.fleet import Probe


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

    recent: tuple[tuple[int, bool], ...] = ()  # (duration ms, succeeded), oldest first

    @property
    def unusual_duration(self) -> bool:
        """The last run took far longer (or shorter) than the job's *other* runs usually do."""
        if self.last_run is None or self.median_s is None or self.p95_s is None:
            return False
        if self.last_run.state != "finished":
            return False  # running or abandoned: see `flag`
        last = self.last_run.duration_ms / 1000
        return last > _far_over(self.p95_s) or (self.median_s > 5 and last < self.median_s / 5)

    def running_for_s(self, now: datetime | None = None) -> float | None:
        """How long the last run has been running (None: it is not running)."""
        run = self.last_run
        if run is None or run.state != "running":
            return None
        try:
            began = datetime.fromisoformat(run.started_at)
        except ValueError:
            return None
        return max(0.0, ((now or datetime.now(UTC)) - began).total_seconds())

    def flag(self, now: datetime | None = None) -> str | None:
        """"hung" (running far over its usual p95), "abandoned" (its jobwrap is gone),
        "unusual" (the finished last run's duration), or None."""
        if self.last_run is not None and self.last_run.state == "abandoned":
            return "abandoned"
        elapsed = self.running_for_s(now)
        if elapsed is not None:
            return "hung" if self.p95_s is not None and elapsed > _far_over(self.p95_s) else None
        return "unusual" if self.unusual_duration else None

    @property
    def idle_reason(self) -> str | None:
        """Why Idlemon says idle, as far as the local history knows (None: not idle/unknown)."""
        run = self.last_run
        if not self.is_idle or run is None:
            return None
        if run.state == "running":
            return "a run is in progress; it reports when it ends"
        if run.state == "abandoned":
            return "the last run was abandoned (jobwrap was killed while it ran)"
        if run.report_status == "none" and run.report_error == "failed":
            return "the last run failed, and report=success sends nothing on failure"
        why = why_not_sent(run)
        if why:
            return f"the last run sent no report: {why}"
        if run.report_status in ("pending", "refused"):
            return (f"the last run's report is {run.report_status}"
                    + (f": {run.report_error}" if run.report_error else ""))
        return None

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
            "idle_reason": self.idle_reason,
            "running_for_s": self.running_for_s(),
            "flag": self.flag(),
            "recent": [{"duration_ms": d, "ok": ok} for d, ok in self.recent],
        }


def _far_over(p95_s: float) -> float:
    """Past this a duration is far over the usual p95: twice it, and a second at least."""
    return max(2 * p95_s, p95_s + 1)


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


SPARK_RUNS = 20  # runs in status's picture of recent durations


def _row(slug, history, latest, backlog, intervals, remote) -> MonitorRow:
    last = latest.get(slug)
    runs = history.outcomes(slug) if history else []
    # The usual durations are the *other* runs': the last run is compared with them.
    others = [d for run_id, d, _ in runs if last is None or run_id != last.run_id]
    median, p95 = percentiles(others)
    local = dict(
        last_run=last,
        recent=tuple((d, ok) for _, d, ok in reversed(runs[:SPARK_RUNS])),
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


@dataclass(frozen=True)
class StatusReport:
    """What ``status`` found: the project's name, a row per monitor, ProMonitor's monitors."""

    project: str | None
    rows: list[MonitorRow]
    promonitor: list | None  # PmMonitor records, None when not configured or unavailable
    problems: list[str]
    lock: Probe | None = None  # the fleet lock backend, None without a lock URL


def gather(settings: Settings) -> StatusReport:
    """Idlemon's project (when it can be read), the local history and ProMonitor, joined."""
    project, problem = _project(settings)
    per = monitor_settings(settings)
    try:
        history: History | None = open_history(settings.state_dir)
    except JobwrapError as exc:
        history = None
        problem = (problem + "; " if problem else "") + str(exc)
    try:
        rows = build_rows(project, history, per_monitor(per, "interval"))
    finally:
        if history is not None:
            history.close()
    pm_monitors, pm_problem = promonitor_monitors(settings)
    rows = link_dependencies(rows, pm_monitors, per_monitor(per, "promonitor"))
    return StatusReport(project.name if project else None, rows, pm_monitors,
                        [p for p in (problem, pm_problem) if p],
                        lock=lock_backend(settings, per_monitor(per, "lock")))


# -- the fleet lock ---------------------------------------------------------------------------

def lock_names(locks: Mapping[str, object]) -> list[str]:
    """The lock names of the monitors' ``lock`` settings: true (or bare) is the slug's own."""
    from jobwrap.config.values import bool_word

    names = set()
    for slug, value in locks.items():
        word = None if str(value) == "" else bool_word(value)
        if word is not False:
            names.add(slug if str(value) == "" or word else str(value))
    return sorted(names)


def lock_backend(settings: Settings, locks: Mapping[str, object]) -> Probe | None:
    """With a lock URL: whether Redis answers and who holds the configured monitors' locks."""
    if not settings.lock_url:
        return None
    from jobwrap.store.fleet import FleetSettings, probe

    return probe(FleetSettings(settings.lock_url, settings.lock_password), lock_names(locks))


def _project(settings: Settings):
    """(the Idlemon project or None, why not or None)."""
    if settings.problem(IDLEMON):
        return None, f"Idlemon: {settings.problem(IDLEMON)}: showing local runs only"
    if not settings.idlemon_token:
        return None, "no Idlemon token: showing local runs only"
    if not settings.idlemon_project:
        return None, ("no Idlemon project (--project or JOBWRAP_IDLEMON_PROJECT): "
                      "local runs only")
    from jobwrap.idlemon.client import IdlemonClient

    try:
        with IdlemonClient(settings.idlemon_url, settings.idlemon_token) as client:
            return client.get_project(settings.idlemon_project, timeout=15), None
    except ApiError as exc:
        return None, f"Idlemon: {exc}"


def promonitor_monitors(settings: Settings):
    """(monitors, None) or (None, why not); None, None when ProMonitor is not configured."""
    monitors, unavailable = promonitor_answer(settings)
    return monitors, getattr(unavailable, "message", unavailable)


def promonitor_answer(settings: Settings):
    """(monitors, None) or (None, the Unavailable answer, or a string for a setup problem)."""
    token = settings.promonitor_token
    if settings.problem(PROMONITOR):
        return None, settings.problem(PROMONITOR)
    if not token:
        return None, None
    from jobwrap.promonitor.answer import Unavailable
    from jobwrap.promonitor.cache import open_pmcache
    from jobwrap.promonitor.client import ProMonitorClient
    from jobwrap.promonitor.crosscheck import CrossCheck

    try:
        cache = open_pmcache(settings.state_dir, token,
                             requests_per_minute=settings.promonitor_rpm)
    except JobwrapError as exc:
        return None, str(exc)
    check = CrossCheck(lambda: ProMonitorClient(settings.promonitor_url, token), cache)
    answer = check.list_monitors()
    if isinstance(answer, Unavailable):
        return None, answer
    return answer, None


def link_dependencies(rows: list[MonitorRow], pm_monitors, links: dict[str, str]):
    """Each row with its linked ProMonitor monitor's state, where the monitor has one."""
    by_id = {m.id: m for m in pm_monitors or ()}
    linked = []
    for row in rows:
        pm_id = links.get(row.slug)
        if pm_id:
            m = by_id.get(pm_id)
            text = f"{m.name}: {pm_state(m)}" if m else f"{pm_id[:8]}…: unknown"
            row = replace(row, dependency=text)
        linked.append(row)
    return linked


def pm_state(monitor) -> str:
    return "paused" if monitor.is_paused else monitor.status
