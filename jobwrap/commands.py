"""The cores of ``status``, ``flush`` and ``doctor``: settings in, (text, exit status) out."""

from __future__ import annotations

import json

from jobwrap.config.settings import IDLEMON, PROMONITOR, Settings
from jobwrap.errors import ApiError, ConfigError, ExitStatus, JobwrapError
from jobwrap.idlemon.report import ReportSettings
from jobwrap.store.history import open_history


def _report_settings_for(settings: Settings, slug: str) -> ReportSettings:
    """A monitor's Idlemon settings, from the files already read; no token if unusable."""
    each = settings.for_monitor(slug) if slug else settings
    if each.problem(IDLEMON):
        raise ConfigError(f"cannot report {slug!r}: {each.problem(IDLEMON)}")
    return ReportSettings(base_url=each.idlemon_url, token=each.idlemon_token)


def status(resolved: Settings, as_json: bool) -> tuple[str, int]:
    from jobwrap.idlemon.client import IdlemonClient
    from jobwrap.status import build_rows, render_table

    project = None
    problem = None
    if resolved.problem(IDLEMON):
        problem = f"Idlemon: {resolved.problem(IDLEMON)}: showing local runs only"
    elif resolved.idlemon_project and resolved.idlemon_token:
        try:
            with IdlemonClient(resolved.idlemon_url, resolved.idlemon_token) as client:
                project = client.get_project(resolved.idlemon_project, timeout=15)
        except ApiError as exc:
            problem = f"Idlemon: {exc}"
    elif not resolved.idlemon_token:
        problem = "no Idlemon token: showing local runs only"
    else:
        problem = "no Idlemon project (--project or JOBWRAP_IDLEMON_PROJECT): local runs only"
    per_monitor = _monitor_settings(resolved)
    try:
        history = open_history(resolved.state_dir)
    except JobwrapError as exc:
        history = None
        problem = (problem + "; " if problem else "") + str(exc)
    try:
        rows = build_rows(project, history, _per_monitor(per_monitor, "interval"))
    finally:
        if history is not None:
            history.close()
    pm_monitors, pm_problem = promonitor_monitors(resolved)
    rows = link_dependencies(rows, pm_monitors, _per_monitor(per_monitor, "promonitor"))
    problems = [p for p in (problem, pm_problem) if p]
    code = ExitStatus.OK if not problems else ExitStatus.FAILURE
    if as_json:
        data = {"project": project.name if project else None, "problems": problems,
                "monitors": [r.to_json() for r in rows],
                "promonitor": [m.to_json() for m in pm_monitors or ()]}
        return json.dumps(data, indent=2) + "\n", code
    head = f"project {project.name}\n" if project else ""
    text = head + render_table(rows)
    if pm_monitors:
        text += "\nProMonitor\n" + render_promonitor(pm_monitors)
    return text + "".join(f"jobwrap: {p}\n" for p in problems), code


def promonitor_monitors(resolved: Settings):
    """(monitors, None) or (None, why not); None, None when ProMonitor is not configured."""
    token = resolved.promonitor_token
    if resolved.problem(PROMONITOR):
        return None, resolved.problem(PROMONITOR)
    if not token:
        return None, None
    from jobwrap.promonitor.cache import open_pmcache
    from jobwrap.promonitor.client import ProMonitorClient
    from jobwrap.promonitor.crosscheck import CrossCheck, Unavailable

    try:
        cache = open_pmcache(resolved.state_dir, token,
                             requests_per_minute=resolved.promonitor_rpm)
    except JobwrapError as exc:
        return None, str(exc)
    check = CrossCheck(lambda: ProMonitorClient(resolved.promonitor_url, token), cache)
    answer = check.list_monitors()
    if isinstance(answer, Unavailable):
        return None, answer.message
    return answer, None


def link_dependencies(rows, pm_monitors, links: dict[str, str]):
    from dataclasses import replace

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


def render_promonitor(monitors) -> str:
    from jobwrap.views import table

    rows = [[m.name, m.kind, pm_state(m), f"{m.interval_seconds}s", m.url, m.id]
            for m in monitors]
    return table(["NAME", "KIND", "STATUS", "EVERY", "URL", "ID"], rows)


def _monitor_settings(settings: Settings) -> dict[str, Settings]:
    """Each configured monitor's settings (its section over the general ones), from the files
    the command already read."""
    return {slug: settings.for_monitor(slug) for slug in settings.configured_monitors()}


def _per_monitor(settings: dict[str, Settings], name: str) -> dict:
    """A setting's value for each monitor, where it is set."""
    return {slug: getattr(each, name) for slug, each in settings.items()
            if getattr(each, name)}


def flush(resolved: Settings, *, monitor: str | None, budget_s: float,
          force: bool) -> tuple[str, int]:
    from jobwrap.idlemon.delivery import ClientPool
    from jobwrap.idlemon.delivery import flush as flush_reports

    pool = ClientPool(lambda slug: _report_settings_for(resolved, slug))
    history = open_history(resolved.state_dir)
    try:
        outcome = flush_reports(history, pool, budget_s=budget_s, monitor=monitor, force=force)
    finally:
        history.close()
        pool.close()
    d = outcome.delivery
    lines = [f"delivered {len(d.sent)}, refused {len(d.refused)}, still pending "
             f"{len(d.pending)}, held back {len(outcome.held)}"]
    lines += [f"refused {run_id[:8]}: {reason}" for run_id, reason in d.refused]
    if d.pending:
        lines.append(f"pending: {d.pending[-1][1]}")
    for rec in outcome.held:
        lines.append(f"held back {rec.run_id[:8]} ({rec.monitor}): its latest run failed; "
                     "sending an older report would make it look active (--force sends it)")
    others = _left_elsewhere(resolved, monitor) - len(d.refused) - len(d.pending)
    others -= len(outcome.held)
    if others > 0:
        lines.append(f"{others} more pending: being delivered by another jobwrap process")
    left = d.refused or d.pending or outcome.held or others > 0
    return "\n".join(lines) + "\n", ExitStatus.FAILURE if left else ExitStatus.OK


def _left_elsewhere(resolved: Settings, monitor: str | None) -> int:
    """Pending and refused reports now (including ones another process holds a claim on)."""
    history = open_history(resolved.state_dir)
    try:
        backlog = history.report_backlog()
    finally:
        history.close()
    return sum(n for (slug, _), n in backlog.items() if monitor is None or slug == monitor)


def doctor(resolved: Settings) -> tuple[str, int]:
    from jobwrap.doctor import (
        Finding,
        check_idlemon,
        check_lock,
        check_monitor_problems,
        check_promonitor,
        check_state_dir,
        worst,
    )

    findings: list[Finding] = [Finding(False, w) for w in resolved.warnings]
    try:
        per_monitor = _monitor_settings(resolved)
    except JobwrapError as exc:  # a monitor's section holds a bad value
        findings.append(Finding(False, str(exc)))
        per_monitor = {}
    configured = sorted(per_monitor)
    findings += list(check_state_dir(resolved))
    latest = _latest_runs(resolved)
    monitors = sorted(set(configured) | set(latest))
    schedules = {slug: run.schedule for slug, run in latest.items() if run.schedule}
    schedules.update(_per_monitor(per_monitor, "schedule"))
    findings += list(check_idlemon(resolved, monitors, schedules,
                                   _per_monitor(per_monitor, "interval")))
    findings += list(check_promonitor(resolved, _per_monitor(per_monitor, "promonitor")))
    findings += list(check_monitor_problems(resolved, per_monitor))
    findings += list(check_lock(resolved, _per_monitor(per_monitor, "lock"), schedules))
    return "".join(f.line() + "\n" for f in findings), worst(findings)


def _latest_runs(resolved: Settings) -> dict:
    try:
        history = open_history(resolved.state_dir)
    except JobwrapError:
        return {}
    try:
        return history.latest_by_monitor()
    finally:
        history.close()
