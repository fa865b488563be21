"""Reporting runs to Idlemon: the policy, the request, and delivery that never loses a report.

Order of events for a run that reports: the run is stored as ``pending`` (claimed by this
process) *before* anything is sent, so a crash or an outage cannot lose it; then it is sent
within the report budget; then, and only when it was delivered, older pending reports of the
same monitor are delivered too.  Idlemon treats any log as activity *now*, so a run that sends
nothing (a failure under the default policy) must never deliver a backlog: that would hide the
failure.  ``jobwrap flush`` delivers the rest.

Monitoring never changes the job's outcome: nothing here raises for an HTTP problem; the
outcome is a status stored in the history and at most one line on stderr.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from jobwrap.errors import ApiError, ConfigError
from jobwrap.history import History, RunRecord

LEASE_MARGIN_S = 30.0  # a claim outlives the budget by this much before others may take it
BACKLOG_PER_RUN = 20  # bounded work per run: the oldest pending reports of its monitor
LATE_AFTER_S = 60.0  # a report delivered later than this after the run ends says so


@dataclass(frozen=True)
class ReportSettings:
    """How (and whether) to report.  ``token`` None means reports cannot be sent."""

    policy: str = "success"  # success | always | never
    base_url: str = "https://www.idlemon.net/api"
    token: str | None = None
    budget_s: float = 30.0
    dry_run: bool = False


def wants_report(policy: str, record: RunRecord) -> bool:
    """success: only runs that exited 0; always: every run that started; never: none."""
    if record.skipped or policy == "never":
        return False
    return policy == "always" or record.exit_code == 0


def ended_at(record: RunRecord) -> datetime:
    return datetime.fromisoformat(record.started_at) + timedelta(milliseconds=record.duration_ms)


def log_body(record: RunRecord, now: datetime | None = None) -> tuple[int, list[tuple[str, str]]]:
    """Duration in whole seconds and the metas; a late report adds ``ran_at``/``delayed_s``."""
    duration_s = max(0, int(record.duration_ms / 1000 + 0.5))
    metas = list(record.metas)
    now = now or datetime.now(UTC)
    delay = (now - ended_at(record)).total_seconds()
    if delay > LATE_AFTER_S:
        metas += [("ran_at", record.started_at), ("delayed_s", str(int(delay)))]
    return duration_s, metas


@dataclass
class DeliveryOutcome:
    sent: list[str] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)  # (run_id, reason)
    pending: list[tuple[str, str]] = field(default_factory=list)

    @property
    def last_problem(self) -> str | None:
        problems = self.pending + self.refused
        return problems[-1][1] if problems else None


ClientFor = Callable[[str], object]  # monitor slug -> IdlemonClient (or raises ConfigError)


class Deliverer:
    """Sends claimed reports within one shared time budget, over one reused connection."""

    def __init__(self, history: History | None, client_for: ClientFor, budget_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.history = history
        self.client_for = client_for
        self.clock = clock
        self.deadline = clock() + budget_s

    def deliver(self, records: list[RunRecord], owner: str) -> DeliveryOutcome:
        """Deliver in order; after a transient failure the rest stay pending (an outage)."""
        from jobwrap.http import retry

        outcome = DeliveryOutcome()
        for index, rec in enumerate(records):
            remaining = self.deadline - self.clock()
            if remaining <= 0:
                self._leave_pending(records[index:], owner, "report budget spent", outcome)
                break
            try:
                client = self.client_for(rec.monitor or "")
                duration_s, metas = log_body(rec)
                slug = rec.monitor or ""

                def attempt(left: float, client=client, slug=slug, d=duration_s, m=metas):
                    return client.post_log(slug, d, m, timeout=left)

                retry(attempt, budget_s=remaining, clock=self.clock)
            except ApiError as exc:
                if exc.retriable:
                    self._leave_pending(records[index:], owner, str(exc), outcome)
                    break
                self._settle(rec.run_id, owner, "refused", str(exc))
                outcome.refused.append((rec.run_id, str(exc)))
                continue
            except ConfigError as exc:
                self._settle(rec.run_id, owner, "pending", str(exc))
                outcome.pending.append((rec.run_id, str(exc)))
                continue
            self._settle(rec.run_id, owner, "sent")
            outcome.sent.append(rec.run_id)
        return outcome

    def _leave_pending(self, records, owner, reason, outcome) -> None:
        first, *rest = records
        self._settle(first.run_id, owner, "pending", reason)
        outcome.pending.append((first.run_id, reason))
        for rec in rest:
            outcome.pending.append((rec.run_id, reason))
        if self.history is not None:
            self.history.release_claims(owner)

    def _settle(self, run_id: str, owner: str, status: str, error: str | None = None) -> None:
        if self.history is not None:
            self.history.settle_report(run_id, owner, status, error)


def new_owner() -> str:
    return f"flush-{uuid.uuid4()}"


def prewarm_http() -> threading.Thread:
    """Import requests while the job runs, so a report adds little wall time after it."""

    def load() -> None:
        try:
            import requests  # noqa: F401
        except Exception:
            pass  # the real import will report the problem

    thread = threading.Thread(target=load, name="jobwrap-prewarm", daemon=True)
    thread.start()
    return thread


@dataclass
class FlushOutcome:
    delivery: DeliveryOutcome
    held: list[RunRecord]  # not sent: their monitor's newest run failed and sent nothing


def held_back(rec: RunRecord, latest: dict[str, RunRecord]) -> bool:
    """True when sending ``rec`` now would make a currently failing monitor look active."""
    last = latest.get(rec.monitor or "")
    if last is None or last.run_id == rec.run_id or last.started_at <= rec.started_at:
        return False
    return last.report_status == "none" and (last.exit_code != 0 or bool(last.skipped))


def flush(history: History, client_for: ClientFor, *, budget_s: float,
          monitor: str | None = None, force: bool = False) -> FlushOutcome:
    """Deliver pending (and retry refused) reports, oldest first; safe to run concurrently."""
    owner = new_owner()
    claimed = history.claim_reports(
        owner, budget_s + LEASE_MARGIN_S, monitor=monitor,
        statuses=("pending", "refused"), limit=100_000,
    )
    held: list[RunRecord] = []
    if not force:
        latest = history.latest_by_monitor()
        held = [r for r in claimed if held_back(r, latest)]
        claimed = [r for r in claimed if not held_back(r, latest)]
    try:
        delivery = Deliverer(history, client_for, budget_s).deliver(claimed, owner)
    finally:
        history.release_claims(owner)
    return FlushOutcome(delivery, held)


class ClientPool:
    """One Idlemon client per (URL, token), all sharing one connection pool."""

    def __init__(self, settings_for: Callable[[str], ReportSettings]) -> None:
        self.settings_for = settings_for
        self.session = None
        self.clients: dict[tuple[str, str], object] = {}

    def __call__(self, slug: str):
        from jobwrap.http import make_session
        from jobwrap.idlemon import IdlemonClient

        settings = self.settings_for(slug)
        if not settings.token:
            raise ConfigError(f"no Idlemon token for monitor {slug!r}")
        key = (settings.base_url, settings.token)
        if key not in self.clients:
            if self.session is None:
                self.session = make_session()
            self.clients[key] = IdlemonClient(settings.base_url, settings.token,
                                              session=self.session)
        return self.clients[key]

    def close(self) -> None:
        if self.session is not None:
            self.session.close()
