"""``jobwrap doctor``: is everything set up right?  Each finding is one line with its fix."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime

from jobwrap.config.monitors import monitor_settings, per_monitor
from jobwrap.config.settings import Settings
from jobwrap.config.table import IDLEMON, PROMONITOR
from jobwrap.errors import ApiError, JobwrapError


@dataclass(frozen=True)
class Finding:
    ok: bool
    text: str  # what was checked and what was found, with the fix when not ok
    note: bool = False  # ok, but worth knowing (not checked this time: retry later)

    def line(self) -> str:
        return ("note  " if self.note else "ok    " if self.ok else "FAIL  ") + self.text


Check = Callable[[Settings], Iterator[Finding]]


def diagnose(settings: Settings) -> list[Finding]:
    """Every finding, in the order they are shown; :func:`worst` gives the exit status."""
    findings: list[Finding] = [Finding(False, w) for w in settings.warnings]
    findings += list(check_config_files(settings))
    try:
        per = monitor_settings(settings)
    except JobwrapError as exc:  # a monitor's section holds a bad value
        findings.append(Finding(False, str(exc)))
        per = {}
    findings += list(check_state_dir(settings))
    latest = _latest_runs(settings)
    monitors = sorted(set(per) | set(latest))
    schedules = {slug: run.schedule for slug, run in latest.items() if run.schedule}
    schedules.update(per_monitor(per, "schedule"))
    findings += list(check_idlemon(settings, monitors, schedules, per_monitor(per, "interval")))
    findings += list(check_promonitor(settings, per_monitor(per, "promonitor")))
    findings += list(check_monitor_problems(settings, per))
    findings += list(check_lock(settings, per_monitor(per, "lock"), schedules))
    # What needs fixing first (each FAIL says how), then what was fine; stable otherwise.
    return [f for f in findings if not f.ok] + [f for f in findings if f.ok]


def check_config_files(settings: Settings) -> Iterator[Finding]:
    """Which config files were found and read (and where none was)."""
    from jobwrap.config.files import system_file, user_file

    read = [str(f.path) for f in settings.files]
    if read:
        yield Finding(True, f"config files read: {', '.join(read)}")
    looked = [str(p) for p in (user_file(settings.env), system_file(settings.env))
              if str(p) not in read]
    if looked:
        yield Finding(True, f"no config file at {' or '.join(looked)}"
                      + ("" if read else ": using the environment and defaults"))


def _latest_runs(settings: Settings) -> dict:
    from jobwrap.store.history import open_history

    try:
        history = open_history(settings.state_dir)
    except JobwrapError:
        return {}
    with history:
        return history.latest_by_monitor()

_FIX = {
    IDLEMON: "fix JOBWRAP_IDLEMON_TOKEN / _TOKEN_FILE / _URL or [idlemon] in the config file; "
             "runs are recorded meanwhile and `jobwrap flush` sends their reports",
    PROMONITOR: "fix JOBWRAP_PROMONITOR_TOKEN / _TOKEN_FILE / _URL / _RPM or [promonitor] in "
                "the config file; jobs run without the cross-check meanwhile",
}


def check_state_dir(resolved: Settings) -> Iterator[Finding]:
    from jobwrap.store.history import open_history

    state_dir = resolved.state_dir
    try:
        history = open_history(state_dir)
        try:
            with history.write():
                pass
            backlog = history.report_backlog()
            abandoned = history.abandoned()
            latest = history.latest_by_monitor()
        finally:
            history.close()
    except JobwrapError as exc:
        yield Finding(False, f"state dir: {exc} — {_state_fix(str(exc), state_dir)}")
        return
    yield Finding(True, f"state dir {state_dir} is writable")
    for run in abandoned:
        yield Finding(False, f"run {run.run_id[:8]} of {run.monitor or run.job!r} (started "
                      f"{run.started_at}) was abandoned: jobwrap was killed or the machine went "
                      "down while it ran — check the job's own output or logs")
    for (monitor, status), count in sorted(backlog.items(), key=str):
        last = latest.get(monitor)
        failing = last is not None and last.report_status == "none" and (
            last.exit_code != 0 or bool(last.skipped))
        if status == "pending" and failing:
            # `flush` would hold these back too: don't send the operator there in a circle.
            yield Finding(False, f"{count} report(s) of {monitor!r} pending, held back because "
                          "its latest run failed — its next successful run sends them, or "
                          f"`jobwrap flush --force --monitor {monitor}` sends them now")
        elif status == "pending":
            yield Finding(False, f"{count} report(s) of {monitor!r} pending — run `jobwrap flush`"
                          " (`jobwrap history -m` says why they wait)")
        else:
            yield Finding(False, f"{count} report(s) of {monitor!r} refused by Idlemon — "
                          f"`jobwrap history -m {monitor}` says why; fix the cause, then "
                          "`jobwrap flush`, or give up on them: `jobwrap flush "
                          f"--discard-refused --monitor {monitor}`")


def _state_fix(problem: str, state_dir) -> str:
    """The fix for a history that cannot be used: a damaged file is not a permission problem."""
    from jobwrap.store.history import DB_NAME

    if any(word in problem for word in ("not a database", "malformed", "corrupt")):
        path = state_dir / DB_NAME
        return (f"{path} is damaged: move it aside (`mv {path} {path}.broken`, with its "
                "-wal and -shm files); the next run starts a new history")
    return f"make {state_dir} writable or set JOBWRAP_STATE_DIR"


def check_idlemon(resolved: Settings, monitors: list[str],
                  schedules: dict[str, str] | None = None,
                  intervals: dict[str, int] | None = None) -> Iterator[Finding]:
    """Token present and accepted, project found, every known monitor slug in it, and each
    monitor's schedule compatible with the interval Idlemon expects."""
    from jobwrap.idlemon.client import IdlemonClient, check_token_format

    token = resolved.idlemon_token
    if resolved.problem(IDLEMON):
        yield Finding(False, f"Idlemon: {resolved.problem(IDLEMON)} — {_FIX[IDLEMON]}")
        return
    if not token:
        yield Finding(False, "no Idlemon token — set JOBWRAP_IDLEMON_TOKEN, "
                      "JOBWRAP_IDLEMON_TOKEN_FILE, or [idlemon] token_file in the config file")
        return
    shape = check_token_format(token)
    yield Finding(shape is None, f"Idlemon token from {resolved.sources['idlemon_token']}"
                  + (f": {shape}" if shape else " looks right"))
    project_id = resolved.idlemon_project
    if not project_id:
        yield Finding(False, "no Idlemon project — set JOBWRAP_IDLEMON_PROJECT (or [idlemon] "
                      "project) so the token and monitors can be verified")
        return
    try:
        with IdlemonClient(resolved.idlemon_url, token) as client:
            project = client.get_project(project_id, timeout=10)
    except ApiError as exc:
        yield Finding(False, f"Idlemon: {exc}")
        return
    yield Finding(True, f"Idlemon accepted the token; project {project.name!r} has "
                  f"{len(project.monitors)} monitor(s)")
    known = {m.slug: m for m in project.monitors}
    for slug in monitors:
        if slug in known:
            yield Finding(True, f"monitor {slug!r} exists in the project")
        else:
            yield Finding(False, f"no Idlemon monitor with slug {slug!r} in project "
                          f"{project.name!r} — create it or fix the slug")
    for slug, expr in sorted((schedules or {}).items()):
        if slug in known:
            interval = (intervals or {}).get(slug, known[slug].interval)
            yield check_schedule(slug, expr, interval)


def check_schedule(slug: str, expr: str, interval_min: float) -> Finding:
    """A schedule whose longest gap exceeds the expected interval raises false idle alerts."""
    from jobwrap.schedule import parse_schedule

    try:
        schedule = parse_schedule(expr)
        if schedule.is_reboot:
            return Finding(True, f"monitor {slug!r} runs @reboot: no interval to compare")
        gap_min = schedule.longest_gap().total_seconds() / 60
    except JobwrapError as exc:
        return Finding(False, f"monitor {slug!r}: {exc}")
    if gap_min > interval_min:
        return Finding(False, f"monitor {slug!r}: schedule '{expr}' leaves gaps of up to "
                       f"{_minutes(gap_min)} but Idlemon expects activity every "
                       f"{_minutes(interval_min)}: it will raise false idle alerts — raise the "
                       "monitor's interval or run the job more often")
    return Finding(True, f"monitor {slug!r}: schedule '{expr}' (longest gap "
                   f"{_minutes(gap_min)}) fits the interval of {_minutes(interval_min)}")


def _minutes(value: float) -> str:
    if value >= 1440 and value % 1440 == 0:
        return f"{value / 1440:g} d"
    if value >= 60 and value % 60 == 0:
        return f"{value / 60:g} h"
    return f"{value:g} min"


def check_promonitor(resolved: Settings, links: dict[str, str]) -> Iterator[Finding]:
    """The ProMonitor key (one request, within the budget) and every linked monitor id."""
    from jobwrap.promonitor.client import check_key_format
    from jobwrap.promonitor.crosscheck import Reason
    from jobwrap.status import promonitor_answer

    token = resolved.promonitor_token
    if resolved.problem(PROMONITOR):
        yield Finding(False, f"ProMonitor: {resolved.problem(PROMONITOR)} — {_FIX[PROMONITOR]}")
        return
    if not token:
        if links:
            yield Finding(False, "monitors link ProMonitor ids but there is no ProMonitor key — "
                          "set JOBWRAP_PROMONITOR_TOKEN or [promonitor] token_file")
        return
    shape = check_key_format(token)
    yield Finding(shape is None, f"ProMonitor key from {resolved.sources['promonitor_token']}"
                  + (f": {shape}" if shape else " looks right"))
    monitors, problem = promonitor_answer(resolved)
    if monitors is None:
        reason = getattr(problem, "reason", None)
        if reason in (Reason.BUDGET, Reason.RATE_LIMITED):  # nothing wrong: asked too often
            yield Finding(True, f"ProMonitor not asked now: {problem.message} — run "
                          "`jobwrap doctor` again in a minute", note=True)
            return
        yield Finding(False, f"ProMonitor: {getattr(problem, 'message', problem)}")
        return
    yield Finding(True, f"ProMonitor accepted the key; {len(monitors)} monitor(s)")
    known = {m.id for m in monitors}
    for slug, pm_id in sorted(links.items()):
        if pm_id in known:
            yield Finding(True, f"monitor {slug!r} depends on ProMonitor monitor {pm_id}")
        else:
            yield Finding(False, f"monitor {slug!r}: no ProMonitor monitor {pm_id!r} (or not "
                          "yours) — fix `promonitor` in its config section")


def check_monitor_problems(resolved: Settings,
                           per_monitor: dict[str, Settings]) -> Iterator[Finding]:
    """Reporting problems that only a monitor's own section has (its token_file, say)."""
    for slug, each in sorted(per_monitor.items()):
        for service in (IDLEMON, PROMONITOR):
            problem = each.problem(service)
            if problem and problem != resolved.problem(service):
                yield Finding(False, f"monitor {slug!r}: {service}: {problem} — "
                              f"{_FIX[service]}")


def check_lock(resolved: Settings, locks: dict[str, str], schedules: dict[str, str],
               now: Callable[[], datetime] | None = None) -> Iterator[Finding]:
    """With a lock URL: Redis answers, this host's clock agrees with Redis's TIME within the
    slot tolerance (half the shortest gap of the known schedules), and who holds the locks."""
    if not resolved.lock_url:
        return
    from jobwrap.status import lock_names
    from jobwrap.store.fleet import FleetSettings, probe

    settings = FleetSettings(resolved.lock_url, resolved.lock_password)
    found = probe(settings, lock_names(locks), now)
    if found.error:
        yield Finding(False, f"lock backend: {found.error} — check [lock] url and the "
                      "password, or runs with --lock are skipped")
        return
    yield Finding(True, f"lock backend {found.url} answers (Redis {found.version})")
    tolerance = _slot_tolerance_s(schedules.values())
    offset = found.offset_s or 0.0
    yield Finding(abs(offset) <= tolerance,
                  f"this host's clock is {offset:+.1f} s from Redis's TIME (tolerance "
                  f"{tolerance:g} s)" + ("" if abs(offset) <= tolerance else
                                         " — fix NTP, or runs may take the wrong slot"))
    for name, holder in found.holders:
        if holder is not None:
            yield Finding(True, f"lock {name!r} is held by {holder.describe()}")


def _slot_tolerance_s(schedules: Iterable[str]) -> float:
    """Half the shortest gap between fire times of these schedules (cron's 1 min if none)."""
    from jobwrap.schedule import parse_schedule

    gaps: list[float] = []
    for expr in schedules:
        try:
            parsed = parse_schedule(expr)
            if not parsed.is_reboot:
                times = parsed.next_times(48)
                gaps += [(b - a).total_seconds() for a, b in zip(times, times[1:], strict=False)]
        except JobwrapError:
            continue
    return (min(gaps) if gaps else 60.0) / 2


def worst(findings: list[Finding]) -> int:
    return 0 if all(f.ok for f in findings) else 1
