"""Delivering reports: one time budget, one reused connection, claims so nothing is sent twice.

Imported only when something is sent (see :mod:`jobwrap.idlemon.report` for the policy and order).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from jobwrap.errors import ApiError, ConfigError, TransientApiError
from jobwrap.idlemon.report import BACKLOG_PER_RUN, LEASE_MARGIN_S, ReportSettings, log_body
from jobwrap.store.history import History, RunRecord
from jobwrap.store.record import UNDELIVERED, ReportStatus

RUN_REQUEST_LIMIT = 30  # requests one run may send in all (its report, backlog and retries)


@dataclass
class DeliveryOutcome:
    sent: list[str] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)  # (run_id, reason)
    pending: list[tuple[str, str]] = field(default_factory=list)

    @property
    def last_problem(self) -> str | None:
        problems = self.pending + self.refused
        return problems[-1][1] if problems else None

    @property
    def status(self) -> ReportStatus:
        """The status of one report once its delivery is over: sent, refused, else pending."""
        if self.sent:
            return ReportStatus.SENT
        return ReportStatus.REFUSED if self.refused else ReportStatus.PENDING


ClientFor = Callable[[str], object]  # monitor slug -> IdlemonClient (or raises ConfigError)


class Deliverer:
    """Sends claimed reports within one shared time budget, over one reused connection.

    At most ``max_requests`` requests in all (None: only the budget and the per-report
    attempts bound them).  ``notes`` collects, once each, warnings about reports that were
    delivered all the same (a 2xx with an odd body): say them to the user.
    """

    def __init__(self, history: History | None, client_for: ClientFor, budget_s: float,
                 clock: Callable[[], float] = time.monotonic,
                 max_requests: int | None = RUN_REQUEST_LIMIT) -> None:
        self.history = history
        self.client_for = client_for
        self.clock = clock
        self.deadline = clock() + budget_s
        self.requests_left = max_requests
        self.notes: list[str] = []

    def deliver(self, records: list[RunRecord], owner: str) -> DeliveryOutcome:
        """Deliver in order; after a transient failure the rest stay pending (an outage)."""
        from jobwrap.net.retry import retry

        outcome = DeliveryOutcome()
        for index, rec in enumerate(records):
            remaining = self.deadline - self.clock()
            if remaining <= 0:
                self._leave_pending(records[index:], owner, "report budget spent", outcome)
                break
            if self.requests_left is not None and self.requests_left <= 0:
                self._leave_pending(records[index:], owner,
                                    "this run's request limit is reached", outcome)
                break
            try:
                client = self.client_for(rec.monitor or "")
                duration_s, metas = log_body(rec)
                slug = rec.monitor or ""

                def attempt(left: float, client=client, slug=slug, d=duration_s, m=metas):
                    if self.requests_left is not None:
                        if self.requests_left <= 0:
                            raise TransientApiError("this run's request limit is reached")
                        self.requests_left -= 1
                    return client.post_log(slug, d, m, timeout=left)

                receipt = retry(attempt, budget_s=remaining, clock=self.clock)
            except ApiError as exc:
                if exc.retriable:
                    self._leave_pending(records[index:], owner, str(exc), outcome)
                    break
                self._settle(rec.run_id, owner, ReportStatus.REFUSED, str(exc))
                outcome.refused.append((rec.run_id, str(exc)))
                continue
            except ConfigError as exc:
                self._settle(rec.run_id, owner, ReportStatus.PENDING, str(exc))
                outcome.pending.append((rec.run_id, str(exc)))
                continue
            warning = getattr(receipt, "warning", None)
            if warning and warning not in self.notes:
                self.notes.append(warning)
            self._settle(rec.run_id, owner, ReportStatus.SENT, warning)
            outcome.sent.append(rec.run_id)
        return outcome

    def _leave_pending(self, records, owner, reason, outcome) -> None:
        first, *rest = records
        self._settle(first.run_id, owner, ReportStatus.PENDING, reason)
        outcome.pending.append((first.run_id, reason))
        for rec in rest:
            outcome.pending.append((rec.run_id, reason))
        if self.history is not None:
            self.history.release_claims(owner)

    def _settle(self, run_id: str, owner: str, status: ReportStatus,
                error: str | None = None) -> None:
        if self.history is not None:
            self.history.settle_report(run_id, owner, status, error)


def deliver_run(record: RunRecord, history: History | None,
                report: ReportSettings) -> tuple[DeliveryOutcome, list[str]]:
    """Deliver a run's report, claimed by the run and stored, with its monitor's backlog.

    Older reports of the monitor first (at most ``BACKLOG_PER_RUN``), then the run's, so
    Idlemon's latest log is the newest run.  They cannot hide a failure: only a run that
    reports delivers a backlog, and it tells Idlemon the job is active right after them.
    Returns the outcome of the run's own report and the notes to say (delivered, but
    Idlemon's answer was odd).
    """
    from jobwrap.idlemon.client import IdlemonClient

    with IdlemonClient(report.base_url, report.token or "") as client:
        deliverer = Deliverer(history, lambda _slug: client, report.budget_s)
        claimed = [] if history is None else history.claim_reports(
            record.run_id, report.budget_s + LEASE_MARGIN_S,
            monitor=record.monitor, limit=BACKLOG_PER_RUN,
        )  # with this run's own, which it already holds
        backlog = [r for r in claimed if r.run_id != record.run_id]
        done = deliverer.deliver([*backlog, record], owner=record.run_id)
    own = DeliveryOutcome(
        sent=[r for r in done.sent if r == record.run_id],
        refused=[(r, why) for r, why in done.refused if r == record.run_id],
        pending=[(r, why) for r, why in done.pending if r == record.run_id],
    )
    return own, deliverer.notes


def new_owner() -> str:
    return f"flush-{uuid.uuid4()}"


def prewarm_http() -> threading.Thread:
    """Import requests while the job runs, so a report adds little wall time after it."""
    from jobwrap.net.http import prewarm

    return prewarm()


@dataclass
class FlushOutcome:
    delivery: DeliveryOutcome
    held: list[RunRecord]  # not sent: their monitor's newest run failed and sent nothing


def held_back(rec: RunRecord, latest: dict[str, RunRecord]) -> bool:
    """True when sending ``rec`` now would make a currently failing monitor look active."""
    last = latest.get(rec.monitor or "")
    if last is None or last.run_id == rec.run_id or last.started_at <= rec.started_at:
        return False
    return last.report_status == ReportStatus.NONE and (last.exit_code != 0 or bool(last.skipped))


# A flush claims a few reports at a time, each batch on a short lease: a flush killed
# mid-way blocks at most one batch, for about BATCH_S + BATCH_LEASE_MARGIN_S.
CLAIM_BATCH = 10
BATCH_S = 20.0  # the most one batch may take (its share of the budget)
BATCH_LEASE_MARGIN_S = 10.0


def flush(history: History, client_for: ClientFor, *, budget_s: float,
          monitor: str | None = None, force: bool = False,
          clock: Callable[[], float] = time.monotonic) -> FlushOutcome:
    """Deliver pending (and retry refused) reports, oldest first; safe to run concurrently."""
    owner = new_owner()
    deadline = clock() + budget_s
    latest = {} if force else history.latest_by_monitor()
    total = FlushOutcome(DeliveryOutcome(), [])
    try:
        while (remaining := deadline - clock()) > 0:
            batch_s = min(remaining, BATCH_S)
            cursor = history.claim_cursor
            claimed = history.claim_reports(
                owner, batch_s + BATCH_LEASE_MARGIN_S, monitor=monitor,
                statuses=UNDELIVERED, limit=CLAIM_BATCH, after=cursor,
            )
            if history.claim_cursor == cursor:
                break  # nothing left to claim
            held = [r for r in claimed if not force and held_back(r, latest)]
            total.held += held
            send = [r for r in claimed if r not in held]
            # A flush may deliver a long backlog: its budget bounds it, not the per-run limit.
            done = Deliverer(history, client_for, batch_s, clock,
                             max_requests=None).deliver(send, owner)
            total.delivery.sent += done.sent
            total.delivery.refused += done.refused
            total.delivery.pending += done.pending
            if done.pending:  # an outage or a spent budget: the rest wait for the next flush
                reason = done.pending[-1][1]
                rest = history.claim_reports(owner, 0.0, monitor=monitor, limit=1_000_000,
                                             statuses=UNDELIVERED,
                                             after=history.claim_cursor)  # a zero lease
                total.delivery.pending += [(r.run_id, reason) for r in rest]
                break
    finally:
        history.release_claims(owner)
    return total


class ClientPool:
    """One Idlemon client per (URL, token), all sharing one connection pool."""

    def __init__(self, settings_for: Callable[[str], ReportSettings]) -> None:
        self.settings_for = settings_for
        self.session: Any = None
        self.settings: dict[str, ReportSettings] = {}
        self.clients: dict[tuple[str, str], object] = {}

    def __call__(self, slug: str):
        from jobwrap.idlemon.client import IdlemonClient
        from jobwrap.net.http import make_session

        if slug not in self.settings:
            self.settings[slug] = self.settings_for(slug)  # config files read once per monitor
        settings = self.settings[slug]
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
