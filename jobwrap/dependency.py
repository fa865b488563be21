"""The ProMonitor side of one run: ask about the job's dependency without delaying the job.

By default the monitor's state is fetched in the background while the job runs and adds metas
to the run.  With ``--require-up`` it is fetched first and a down dependency skips the run.
When the job fails, the dependency's recent checks may explain why (one line on stderr and a
``promonitor_down_since`` meta).  Nothing here can fail the job: every problem is a warning.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from jobwrap.errors import JobwrapError


@dataclass(frozen=True)
class DependencySettings:
    monitor_id: str
    token: str | None
    base_url: str
    requests_per_minute: int = 2
    require_up: str = "off"  # off | on | strict


class DependencyCheck:
    """One run's cross-check.  Build it with :meth:`open`; it never raises afterwards."""

    def __init__(self, settings: DependencySettings, check, warn: Callable[[str], None]) -> None:
        self.settings = settings
        self.check = check
        self.warn = warn
        self.state = None
        self.pending = None

    @classmethod
    def open(cls, settings: DependencySettings, state_dir,
             warn: Callable[[str], None]) -> DependencyCheck | None:
        """None (with a warning) when the cross-check cannot be set up."""
        from jobwrap.crosscheck import CrossCheck
        from jobwrap.pmcache import open_pmcache
        from jobwrap.promonitor import ProMonitorClient, check_key_format

        if not settings.token:
            warn("warning: --promonitor needs a ProMonitor API key (JOBWRAP_PROMONITOR_TOKEN "
                 "or the config file); running without the cross-check")
            return None
        shape = check_key_format(settings.token)
        if shape:
            warn(f"warning: ProMonitor API key: {shape}")
        try:
            cache = open_pmcache(state_dir, settings.token,
                                 requests_per_minute=settings.requests_per_minute)
        except JobwrapError as exc:
            warn(f"warning: ProMonitor cross-check skipped: {exc}")
            return None

        def client():
            return ProMonitorClient(settings.base_url, settings.token or "")

        return cls(settings, CrossCheck(client, cache), warn)

    def gate(self):
        """With --require-up: fetch now and decide.  The GateDecision, or None on a bug."""
        try:
            self.state = self.check.fetch_state(self.settings.monitor_id)
            decision = self.check.gate(self.state, strict=self.settings.require_up == "strict")
        except Exception as exc:  # a bug must not stop the job: run it, and say so
            self.warn(f"warning: ProMonitor gate failed ({exc!r}); running anyway")
            return None
        if decision.message:
            self.warn(decision.message)
        return decision

    def start(self) -> None:
        """Without a gate: ask in the background while the job runs (zero added latency)."""
        if self.state is None:
            self.pending = self.check.start_background(self.settings.monitor_id)

    def metas_after(self, failed: bool, started_at: datetime,
                    ended_at: datetime) -> list[tuple[str, str]]:
        """The metas the run gains, and the diagnosis line when it failed."""
        from jobwrap.crosscheck import DependencyState

        state = self.state if self.pending is None else self.pending.result()
        metas: list[tuple[str, str]] = []
        if isinstance(state, DependencyState):
            metas += state.metas()
        elif state is not None:
            self.warn(f"warning: {state.message}")
        if failed:
            diagnosis = self.check.diagnose(self.settings.monitor_id, ended_at.timestamp(),
                                            started_at=started_at.timestamp())
            if diagnosis is not None:
                self.warn(diagnosis.line)
                metas += diagnosis.metas()
        return metas
