"""The cores of ``status``, ``flush`` and ``doctor``: settings in, (text, exit status) out."""

from __future__ import annotations

import json

from jobwrap.config import Resolved, configured_monitors, resolve
from jobwrap.errors import ApiError, ConfigError, ExitStatus, JobwrapError
from jobwrap.history import open_history
from jobwrap.report import ClientPool, ReportSettings


def _report_settings_for(slug: str) -> ReportSettings:
    resolved = resolve({"monitor": slug} if slug else {})
    return ReportSettings(base_url=resolved["idlemon_url"], token=resolved["idlemon_token"])


def status(resolved: Resolved, as_json: bool) -> tuple[str, int]:
    from jobwrap.idlemon import IdlemonClient
    from jobwrap.status import build_rows, render_table

    project = None
    problem = None
    if resolved["idlemon_project"] and resolved["idlemon_token"]:
        try:
            with IdlemonClient(resolved["idlemon_url"], resolved["idlemon_token"]) as client:
                project = client.get_project(resolved["idlemon_project"], timeout=15)
        except ApiError as exc:
            problem = f"Idlemon: {exc}"
    elif not resolved["idlemon_token"]:
        problem = "no Idlemon token: showing local runs only"
    else:
        problem = "no Idlemon project (--project or JOBWRAP_IDLEMON_PROJECT): local runs only"
    try:
        history = open_history(resolved["state_dir"])
    except JobwrapError as exc:
        history = None
        problem = (problem + "; " if problem else "") + str(exc)
    try:
        intervals = _interval_overrides(resolved)
        rows = build_rows(project, history, intervals)
    finally:
        if history is not None:
            history.close()
    if as_json:
        data = {"project": project.name if project else None, "problem": problem,
                "monitors": [r.to_json() for r in rows]}
        return json.dumps(data, indent=2) + "\n", ExitStatus.OK if not problem else 1
    head = f"project {project.name}\n" if project else ""
    note = f"jobwrap: {problem}\n" if problem else ""
    return head + render_table(rows) + note, ExitStatus.OK if not problem else 1


def _interval_overrides(resolved: Resolved) -> dict[str, int]:
    overrides = {}
    for slug in configured_monitors():
        value = resolve({"monitor": slug})["interval"]
        if value:
            overrides[slug] = value
    return overrides


def flush(resolved: Resolved, *, monitor: str | None, budget_s: float,
          force: bool) -> tuple[str, int]:
    from jobwrap.report import flush as flush_reports

    pool = ClientPool(_report_settings_for)
    history = open_history(resolved["state_dir"])
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
    left = d.refused or d.pending or outcome.held
    return "\n".join(lines) + "\n", ExitStatus.FAILURE if left else ExitStatus.OK


def doctor(resolved: Resolved) -> tuple[str, int]:
    from jobwrap.doctor import Finding, check_idlemon, check_state_dir, worst

    findings: list[Finding] = [Finding(False, w) for w in resolved.warnings]
    try:
        monitors = configured_monitors()
    except ConfigError as exc:
        findings.append(Finding(False, str(exc)))
        monitors = []
    findings += list(check_state_dir(resolved))
    monitors = sorted(set(monitors) | _history_monitors(resolved))
    findings += list(check_idlemon(resolved, monitors))
    return "".join(f.line() + "\n" for f in findings), worst(findings)


def _history_monitors(resolved: Resolved) -> set[str]:
    try:
        history = open_history(resolved["state_dir"])
    except JobwrapError:
        return set()
    try:
        return set(history.latest_by_monitor())
    finally:
        history.close()
