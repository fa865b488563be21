"""The ProMonitor side of one run: ask about the job's dependency without delaying the job.

By default everything — importing the client, opening the shared cache, the request — happens
in a background thread while the job runs, and the answer adds metas to the run.  With
``--require-up`` the state is fetched first and a down dependency skips the run.  When the job
fails, the dependency's recent checks may explain why (one line on stderr and a
``promonitor_down_since`` meta).  Nothing here can fail the job: every problem is a warning,
and warnings from the background wait until the job is done, so they never land in the middle
of the job's own output.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from jobwrap.errors import JobwrapError

BACKGROUND_WAIT_S = 15.0  # a background fetch runs beside the job: it may take this long
FINISH_WAIT_S = 2.0  # after the job ends, the longest we wait for the background answer


@dataclass(frozen=True)
class DependencySettings:
    monitor_id: str
    token: str | None
    base_url: str
    requests_per_minute: int = 2
    require_up: str = "off"  # off | on | strict
    problem: str | None = None  # why the settings cannot be used (bad key, URL, budget)


class DependencyCheck:
    """One run's cross-check.  No method raises: problems become warnings."""

    def __init__(self, settings: DependencySettings, state_dir: Path,
                 warn: Callable[[str], None]) -> None:
        self.settings = settings
        self.state_dir = state_dir
        self.warn = warn
        self.check: Any = None  # a CrossCheck once set up (imported lazily)
        self.state: Any = None
        self.notes: list[str] = []  # warnings from the background, said after the job
        self.thread: threading.Thread | None = None
        self.state_said = False  # the gate already told why the state is unknown

    def _open(self) -> bool:
        """Set up the client and the shared cache; False (with a note) when that fails."""
        problem = self._setup()
        if problem is None:
            return True
        self.notes.append(f"warning: {problem}; running without the cross-check")
        return False

    def _setup(self) -> str | None:
        """Set up the client and the shared cache; why not, when that fails."""
        from jobwrap.promonitor.cache import open_pmcache
        from jobwrap.promonitor.client import ProMonitorClient, check_key_format
        from jobwrap.promonitor.crosscheck import CrossCheck

        settings = self.settings
        if settings.problem:
            return f"ProMonitor: {settings.problem}"
        if not settings.token:
            return ("--promonitor needs a ProMonitor API key "
                    "(JOBWRAP_PROMONITOR_TOKEN or the config file)")
        try:
            shape = check_key_format(settings.token)
            cache = open_pmcache(self.state_dir, settings.token,
                                 requests_per_minute=settings.requests_per_minute)
        except JobwrapError as exc:
            return f"ProMonitor cross-check skipped: {exc}"
        if shape:
            self.notes.append(f"warning: ProMonitor API key: {shape}")

        def client():
            return ProMonitorClient(settings.base_url, settings.token or "")

        self.check = CrossCheck(client, cache)
        return None

    def _say_notes(self) -> None:
        for note in self.notes:
            self.warn(note)
        self.notes.clear()

    def gate(self):
        """With --require-up: fetch now and decide.  The GateDecision, or None (run anyway).

        ``strict`` fails closed: whatever keeps the check from being made (no key, a cache
        that cannot be used, an answer that cannot be read, a bug) refuses the run.
        """
        from jobwrap.promonitor.decision import GateDecision

        strict = self.settings.require_up == "strict"
        try:
            problem = self._setup()
            if problem is not None:
                if not strict:
                    self.notes.append(f"warning: {problem}; running without the cross-check")
                    return None
                decision = GateDecision(False, f"{problem}; not running (--require-up=strict)")
            else:
                assert self.check is not None
                self.state = self.check.fetch_state(self.settings.monitor_id)
                decision = self.check.gate(self.state, strict=strict)
        except Exception as exc:  # a bug must not stop the job unless strict: say so
            what = f"ProMonitor gate failed ({type(exc).__name__})"
            if not strict:
                self.notes.append(f"warning: {what}; running anyway")
                return None
            decision = GateDecision(False, f"{what}; not running (--require-up=strict)")
        finally:
            self._say_notes()
        if decision.message:
            self.warn(decision.message)
            self.state_said = True  # one failure, one line: metas_after does not repeat it
        return decision

    def start(self) -> None:
        """Without a gate: set up and ask in the background while the job runs."""
        if self.state is None and self.check is None:
            self.thread = threading.Thread(target=self._background, daemon=True,
                                           name="jobwrap-promonitor")
            self.thread.start()

    def _background(self) -> None:
        try:
            if self._open():
                assert self.check is not None
                self.state = self.check.fetch_state(self.settings.monitor_id,
                                                    max_wait_s=BACKGROUND_WAIT_S)
        except Exception as exc:  # contained: a bug here costs the metas, never the job
            self.notes.append(f"warning: ProMonitor cross-check failed ({type(exc).__name__})")

    def metas_after(self, failed: bool, started_at: datetime,
                    ended_at: datetime) -> list[tuple[str, str]]:
        """The metas the run gains, and the diagnosis line when it failed."""
        from jobwrap.promonitor.answer import DependencyState

        if self.thread is not None:
            self.thread.join(FINISH_WAIT_S)
            if self.thread.is_alive():
                self.notes.append("warning: ProMonitor did not answer in time; "
                                  "the run is recorded without its dependency's state")
        self._say_notes()
        state = self.state
        metas: list[tuple[str, str]] = []
        if isinstance(state, DependencyState):
            metas += state.metas()
        elif state is not None and not self.state_said:
            self.warn(f"warning: {state.message}")
        unavailable = state is not None and not isinstance(state, DependencyState)
        # ProMonitor could not be asked about the state: asking for its checks would fail the
        # same way, and say so a second time.
        if failed and self.check is not None and not unavailable and (
                self.thread is None or not self.thread.is_alive()):
            diagnosis = self.check.diagnose(self.settings.monitor_id, ended_at.timestamp(),
                                            started_at=started_at.timestamp())
            if diagnosis is not None:
                self.warn(diagnosis.line)
                metas += diagnosis.metas()
        return metas
