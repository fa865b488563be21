"""``status``: the monitors at a glance (with their sparklines), the ProMonitor and lock
backend sections, as text or JSON; and the frames of ``status --watch``."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from jobwrap.views.table import duration, human_duration, local_time, outcome, table

if TYPE_CHECKING:
    from jobwrap.status import MonitorRow, StatusReport
    from jobwrap.store.fleet import Probe


def status_text(report: StatusReport, color: bool | None = None) -> str:
    """``color``: True on a colour terminal, False on one without (NO_COLOR), None: no
    terminal (the pictures are plain text then)."""
    from jobwrap.status import pm_state

    text = f"project {report.project}\n" if report.project else ""
    text += status_table(report.rows, color=bool(color))
    text += "".join(f"{r.slug}: idle: {r.idle_reason}\n" for r in report.rows if r.idle_reason)
    if report.promonitor:
        rows = [[m.name, m.kind, pm_state(m), f"{m.interval_seconds}s", m.url, m.id]
                for m in report.promonitor]
        text += "\nProMonitor\n" + table(["NAME", "KIND", "STATUS", "EVERY", "URL", "ID"], rows)
    if report.lock is not None:
        text += lock_backend_text(report.lock)
    return text + "".join(f"jobwrap: {p}\n" for p in report.problems)


def status_json(report: StatusReport) -> str:
    data = {"project": report.project, "problems": report.problems,
            "monitors": [r.to_json() for r in report.rows],
            "promonitor": [m.to_json() for m in report.promonitor or ()]}
    lock = {"lock": lock_backend_json(report.lock)} if report.lock is not None else {}
    return json.dumps({**data, **lock}, indent=2) + "\n"


def lock_backend_text(found: Probe) -> str:
    """The fleet lock backend: whether it answers, then each configured lock's holder."""
    if found.error:
        return f"\nlock backend: {found.error}\n"
    lines = [f"\nlock backend {found.url}: answers (Redis {found.version})"]
    lines += [f"  {name}: " + (f"held by {holder.describe()}" if holder else "free")
              for name, holder in found.holders]
    return "\n".join(lines) + "\n"


def lock_backend_json(found: Probe) -> dict:
    return {"backend": found.url, "answers": found.error is None, "error": found.error,
            "version": found.version,
            "holders": [{"lock": name, "holder": holder and {
                "host": holder.host, "pid": holder.pid, "run_id": holder.run_id,
                "since": holder.since}} for name, holder in found.holders]}


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


SPARK_BLOCKS = "▁▂▃▄▅▆▇█"
SPARK_PLAIN = "._-=+*#"  # the same picture in ASCII: a pipe, a file, NO_COLOR
FAILED_PLAIN = "x"
RED, RESET = "\x1b[31m", "\x1b[0m"


def sparkline(recent: tuple[tuple[int, bool], ...] | list[tuple[int, bool]],
              color: bool = False) -> str:
    """One character per run (oldest first), its height the run's duration against the
    longest shown; a failure is red on a colour terminal, else an ``x``."""
    if not recent:
        return "-"
    levels = SPARK_BLOCKS if color else SPARK_PLAIN
    longest = max(d for d, _ in recent) or 1
    chars = []
    for d, ok in recent:
        mark = levels[min(len(levels) - 1, round(d / longest * (len(levels) - 1)))]
        if not ok:
            mark = f"{RED}{mark}{RESET}" if color else FAILED_PLAIN
        chars.append(mark)
    return "".join(chars)


def status_table(rows: list[MonitorRow], now: datetime | None = None,
                 color: bool = False) -> str:
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
            _last_result(r, now), _pending(r), med,
        ]
        if "DEPENDENCY" in headers:
            line.append(r.dependency or "-")
        line.append(sparkline(r.recent, color))  # last: its colour codes need no padding
        lines.append(line)
    return table([*headers, "RECENT"], lines)


def _last_result(r: MonitorRow, now: datetime | None = None) -> str:
    """'ok 1.2s'; 'running for 3h12m (usually 40m)', flagged when far over its p95;
    'abandoned (!)' when its jobwrap is gone."""
    run = r.last_run
    if run is None:
        return "-"
    flag = r.flag(now)
    if run.state == "running":
        text = f"running for {duration(run, now)}"
        if r.median_s is not None:
            text += f" (usually {human_duration(int(r.median_s * 1000))})"
        return text + (" (!) hung?" if flag == "hung" else "")
    if flag == "abandoned":
        return "abandoned (!)"
    return f"{outcome(run)} {duration(run)}"


def _pending(r: MonitorRow) -> str:
    text = str(r.pending)
    if r.refused:
        text += f" (+{r.refused} refused)"
    return text


def watch_frame(text: str, every: float, now: datetime, in_place: bool) -> str:
    """One refresh of ``status --watch``: a header with the time, then ``text``; on a terminal
    (``in_place``) home and clear-below first, so the screen never flickers empty."""
    stamp = now.strftime("%Y-%m-%d %H:%M:%S %Z")
    header = f"every {every:g}s, Ctrl-C stops — {stamp}\n\n"
    return ("\x1b[H\x1b[J" if in_place else "") + header + text + ("" if in_place else "\n")
