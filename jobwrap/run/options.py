"""What ``jobwrap run`` runs, and how: the run's settings, validated before the command starts.

Only *what to run* can fail here (UsageError/ConfigError); a problem with *where to report*
is kept in the settings and said after the run.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from jobwrap.config.settings import IDLEMON, PROMONITOR, Settings, child_environment
from jobwrap.config.values import RequireUp, bool_word
from jobwrap.errors import ExitStatus, UsageError
from jobwrap.idlemon.report import ReportSettings
from jobwrap.output.patterns import Kind, PatternSpec, check_unique, parse_pattern_spec

if TYPE_CHECKING:  # imported only when --promonitor is used (--lock-url)
    from jobwrap.promonitor.gate import DependencySettings
    from jobwrap.store.fleet import FleetSettings, Slot
    from jobwrap.store.record import RunRecord

Warn = Callable[[str], None]  # how the run says things: one line each (see job.warn_stderr)


@dataclass(frozen=True)
class HookSettings:
    """The hook commands (None: none) and how long a hook may run."""

    on_failure: str | None = None
    on_success: str | None = None
    timeout_s: float = 60.0

    def chosen(self, record: RunRecord) -> tuple[str, str] | None:
        """(which, command) for this run, or None: skipped runs run no hook."""
        if record.skipped:
            return None
        which, command = (("on_success", self.on_success) if record.exit_code == 0
                          else ("on_failure", self.on_failure))
        return (which, command) if command else None


@dataclass(frozen=True)
class RunSettings:
    """Everything ``jobwrap run`` needs, validated before the command starts."""

    argv: tuple[str, ...]
    state_dir: Path
    monitor: str | None = None
    patterns: tuple[PatternSpec, ...] = ()
    timeout_s: float | None = None
    kill_after_s: float = 10.0
    capture: bool = True
    summary_json: Path | None = None
    schedule: str | None = None
    report: ReportSettings = ReportSettings(policy="never")
    dependency: DependencySettings | None = None  # only with --promonitor
    skipped_exit: int = ExitStatus.TEMPFAIL
    lock: str | None = None  # the lock's name; None: runs may overlap
    lock_wait_s: float | None = None
    report_problem: str | None = None  # why reports cannot be sent (token, URL): kept instead
    env: Mapping[str, str] | None = None  # the command's environment; None: jobwrap's own
    fleet: FleetSettings | None = None  # only with --lock and a lock URL
    fleet_slot: Slot | None = None  # the slot `jobwrap cron` fired this run for (exact)
    run_id: str | None = None  # chosen by `jobwrap cron`, so its events name the run
    hooks: HookSettings = HookSettings()  # --on-failure / --on-success
    output: str = "live"  # live | on-failure (held, written out only if the run fails)
    metrics_dir: Path | None = None

    @property
    def job(self) -> str:
        """What groups a job's runs: the monitor slug, else the command line."""
        return self.monitor or shlex.join(self.argv)


_RUN_ID = re.compile(r"[0-9A-Za-z-]{8,64}")


def build_run_settings(
    settings: Settings,
    argv: tuple[str, ...],
    meta_flags: tuple[str, ...] = (),
    count_flags: tuple[str, ...] = (),
    summary_json: Path | None = None,
    dry_run: bool = False,
    cron_slot: str | None = None,
    run_id: str | None = None,
) -> RunSettings:
    """Validate everything a run needs, before the command starts (UsageError/ConfigError).

    Only *what to run* can fail here; a problem with *where to report* (token, URL) is kept
    in ``report_problem`` and said after the run, whose report is kept for ``jobwrap flush``.
    """
    if not argv:
        raise UsageError("no command given: jobwrap run [OPTIONS] -- COMMAND [ARG]...")
    if not argv[0] or "\0" in argv[0]:
        raise UsageError("the command name is empty: jobwrap run [OPTIONS] -- COMMAND [ARG]...")
    if run_id is not None and not _RUN_ID.fullmatch(run_id):
        raise UsageError(f"bad --run-id {run_id!r}: letters, digits and dashes (8 to 64)")
    patterns = _patterns(settings, meta_flags, count_flags)
    lock = settings.lock
    if cron_slot is not None and settings.lock_url and lock is None:
        lock = ""  # jobwrap cron's overlap=skip, across the fleet: see jobwrap/cron/launch.py
    fleet = _fleet_settings(settings, lock)
    schedule = settings.schedule
    if schedule:
        from jobwrap.schedule import parse_schedule

        schedule = str(parse_schedule(schedule))
    return RunSettings(
        argv=argv,
        state_dir=settings.state_dir,
        monitor=settings.monitor,
        patterns=patterns,
        timeout_s=settings.timeout or None,  # 0: no timeout (--timeout 0)
        kill_after_s=settings.kill_after,
        capture=settings.capture,
        summary_json=summary_json,
        schedule=schedule,
        report=ReportSettings(
            policy=settings.report,
            base_url=settings.idlemon_url,
            token=settings.idlemon_token,
            budget_s=settings.report_timeout,
            dry_run=dry_run,
        ),
        report_problem=settings.problem(IDLEMON),
        dependency=_dependency_settings(settings),
        skipped_exit=settings.skipped_exit,
        lock=_lock_name(lock, settings.monitor, argv, settings.lock_wait),
        lock_wait_s=settings.lock_wait,
        env=child_environment(settings),
        fleet=fleet,
        fleet_slot=_cron_slot(cron_slot) if fleet is not None else None,
        hooks=HookSettings(settings.on_failure or None, settings.on_success or None,
                           settings.hook_timeout),
        output=settings.output,
        metrics_dir=settings.metrics_dir,
        run_id=run_id,
    )


def _patterns(settings: Settings, meta_flags: tuple[str, ...],
              count_flags: tuple[str, ...]) -> tuple[PatternSpec, ...]:
    """The monitor section's patterns, then the flags' (a flag wins for its name)."""
    flag_specs = [parse_pattern_spec(t, "meta") for t in meta_flags]
    flag_specs += [parse_pattern_spec(t, "count") for t in count_flags]
    check_unique(flag_specs)
    given = {s.name for s in flag_specs}
    sections: tuple[tuple[Kind, Mapping[str, str]], ...] = (
        ("meta", settings.metas), ("count", settings.counts))
    file_specs = [
        parse_pattern_spec(f"{name}={rx}", kind, _written_in(settings, kind, name))
        for kind, table in sections
        for name, rx in table.items()
        if name not in given
    ]
    specs = file_specs + flag_specs
    check_unique(specs)  # a section's meta and count may still share a name
    return tuple(specs)


def _written_in(settings: Settings, kind: str, name: str) -> str:
    """Where a monitor section's pattern comes from: ``FILE [monitors.SLUG.meta]``."""
    for f in settings.files:  # highest precedence first: the file whose pattern is used
        section = f.data.get("monitors", {}).get(settings.monitor, {})
        if isinstance(section.get(kind), dict) and name in section[kind]:
            return f"{f.path} [monitors.{settings.monitor}.{kind}]"
    return f"[monitors.{settings.monitor}.{kind}]"


def _lock_name(value: str | None, monitor: str | None, argv: tuple[str, ...],
               wait: float | None) -> str | None:
    """``--lock`` alone (or ``lock = true``) names the lock after the job; false: no lock."""
    word = None if value is None or value == "" else bool_word(value)
    if value is None or word is False:
        if wait is not None:
            raise UsageError("--lock-wait needs --lock")
        return None
    if value == "" or word is True:
        return monitor or shlex.join(argv)
    return value


def _fleet_settings(settings: Settings, lock: str | None) -> FleetSettings | None:
    """With --lock and a lock URL: the Redis lease's settings (the client must be installed)."""
    if lock is None or bool_word(lock) is False or not settings.lock_url:
        return None
    from jobwrap.store.fleet import FleetSettings, require_client

    require_client()
    return FleetSettings(
        url=settings.lock_url,
        password=settings.lock_password,
        lease_s=settings.lock_lease,
        unavailable=settings.lock_unavailable,
        host=os.environ.get("JOBWRAP_HOSTNAME") or os.uname().nodename,
    )


def _cron_slot(cron_slot: str | None) -> Slot | None:
    """The exact slot ``jobwrap cron`` fired this run for (``--cron-slot``), if any."""
    if cron_slot is None:
        return None
    from jobwrap.store.fleet import Slot

    return Slot.parse(cron_slot)


def _dependency_settings(settings: Settings) -> DependencySettings | None:
    require_up = settings.require_up or RequireUp.OFF
    if not settings.promonitor:
        if require_up != RequireUp.OFF:
            raise UsageError("--require-up needs --promonitor ID (or promonitor in the config)")
        return None
    from jobwrap.promonitor.gate import DependencySettings

    return DependencySettings(
        monitor_id=settings.promonitor,
        token=settings.promonitor_token,
        base_url=settings.promonitor_url,
        requests_per_minute=settings.promonitor_rpm,
        require_up=require_up,
        problem=settings.problem(PROMONITOR),
    )
