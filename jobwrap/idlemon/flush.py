"""The core of ``jobwrap flush``: deliver the backlog with each monitor's own settings."""

from __future__ import annotations

from dataclasses import dataclass

from jobwrap.config.settings import Settings
from jobwrap.config.table import IDLEMON
from jobwrap.errors import ConfigError
from jobwrap.idlemon.delivery import ClientPool, DeliveryOutcome, FlushOutcome, flush
from jobwrap.idlemon.report import ReportSettings
from jobwrap.store.history import open_history


@dataclass(frozen=True)
class FlushSummary:
    outcome: FlushOutcome
    bad_rows: list[tuple[str, str]]  # (run id, why) of rows that could not be read
    elsewhere: int  # reports left that another jobwrap process is delivering now
    discarded: list[str] | None = None  # run ids given up on (--discard, --discard-refused)

    @property
    def left(self) -> bool:
        """Something is still undelivered (exit status 1)."""
        d = self.outcome.delivery
        return bool(d.refused or d.pending or self.outcome.held or self.elsewhere > 0)


def flush_backlog(settings: Settings, *, monitor: str | None, budget_s: float,
                  force: bool) -> FlushSummary:
    pool = ClientPool(lambda slug: _report_settings_for(settings, slug))
    with open_history(settings.state_dir) as history:
        try:
            outcome = flush(history, pool, budget_s=budget_s, monitor=monitor, force=force)
        finally:
            pool.close()
        bad_rows = list(history.bad_rows)
        backlog = history.report_backlog()  # including reports others hold a claim on
    left_now = sum(n for (slug, _), n in backlog.items() if monitor is None or slug == monitor)
    d = outcome.delivery
    elsewhere = left_now - len(d.refused) - len(d.pending) - len(outcome.held)
    return FlushSummary(outcome, bad_rows, elsewhere)


def discard(settings: Settings, *, run_id: str | None, monitor: str | None) -> FlushSummary:
    """``flush --discard RUN_ID`` / ``--discard-refused``: give up on reports, send nothing."""
    with open_history(settings.state_dir) as history:
        ids = history.discard_reports(run_id_prefix=run_id, monitor=monitor)
        bad_rows = list(history.bad_rows)
    return FlushSummary(FlushOutcome(DeliveryOutcome(), []), bad_rows, 0, ids)


def _report_settings_for(settings: Settings, slug: str) -> ReportSettings:
    """A monitor's Idlemon settings, from the files already read; no token if unusable."""
    each = settings.for_monitor(slug) if slug else settings
    if each.problem(IDLEMON):
        raise ConfigError(f"cannot report {slug!r}: {each.problem(IDLEMON)}")
    return ReportSettings(base_url=each.idlemon_url, token=each.idlemon_token)
