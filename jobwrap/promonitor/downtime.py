"""Down periods in a monitor's checks, and how jobwrap tells of them on one terminal line."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo

from jobwrap.promonitor.client import PmCheck


@dataclass(frozen=True)
class DownPeriod:
    """Consecutive failing checks: from the first one to the first passing check after them
    (``end`` None: still failing at the latest check); ``error`` is the latest error seen."""

    start: datetime
    end: datetime | None
    error: str | None


@dataclass(frozen=True)
class Diagnosis:
    """One line for stderr.  ``down_since`` is set when a down period explains the failure;
    it is None when the line only says why there is no diagnosis (e.g. budget spent).
    """

    line: str
    down_since: datetime | None = None

    def metas(self) -> list[tuple[str, str]]:
        """``promonitor_down_since`` (ISO 8601, UTC) when it applies."""
        if self.down_since is None:
            return []
        return [("promonitor_down_since", iso_utc(self.down_since))]


def down_periods(checks: tuple[PmCheck, ...] | list[PmCheck]) -> list[DownPeriod]:
    """The down periods the checks show, oldest first (checks may come in any order)."""
    periods: list[DownPeriod] = []
    start: datetime | None = None
    error: str | None = None
    for check in sorted(checks, key=lambda c: c.checked_at):
        if not check.is_up:
            if start is None:
                start, error = check.checked_at, None
            error = check.error_message or error
        elif start is not None:
            periods.append(DownPeriod(start, check.checked_at, error))
            start = None
    if start is not None:
        periods.append(DownPeriod(start, None, error))
    return periods


def ongoing_period(checks: tuple[PmCheck, ...] | list[PmCheck]) -> DownPeriod | None:
    """The down period still going on at the latest check, if any."""
    periods = down_periods(checks)
    return periods[-1] if periods and periods[-1].end is None else None


def overlapping_period(
    checks: tuple[PmCheck, ...] | list[PmCheck], started_at: float, failed_at: float
) -> DownPeriod | None:
    """The latest down period that overlaps ``started_at``..``failed_at`` (epoch seconds)."""
    for period in reversed(down_periods(checks)):
        began = period.start.timestamp() <= failed_at
        ended_before = period.end is not None and period.end.timestamp() <= started_at
        if began and not ended_before:
            return period
    return None


def explain(
    period: DownPeriod, name: str, failed_at: float, when: Callable[[datetime], str]
) -> Diagnosis:
    """"dependency 'X' was down from 10:55 to 11:02 (error)": ``period`` explains a failure.

    The end is told only when it came before the failure (``failed_at``, epoch seconds);
    ``when`` writes a moment for people.
    """
    end = period.end
    until = f" to {when(end)}" if end is not None and end.timestamp() <= failed_at else ""
    error = f" ({shown(period.error)})" if period.error else ""
    return Diagnosis(f"dependency '{name}' was down from {when(period.start)}{until}{error}",
                     period.start)


def clock_time(moment: datetime, now: float, tz: tzinfo | None = None) -> str:
    """``HH:MM`` in ``tz`` (None: local), with the date when it is not ``now``'s day."""
    local = moment.astimezone(tz)
    today = datetime.fromtimestamp(now, tz).date()
    return local.strftime("%H:%M" if local.date() == today else "%Y-%m-%d %H:%M")


def iso_utc(moment: datetime) -> str:
    """ISO 8601 in UTC with a Z, as ProMonitor writes its timestamps."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def shown(text: str) -> str:
    """Text from ProMonitor made safe for one terminal line: no control characters."""
    printable = "".join(char if char.isprintable() else " " for char in text)
    return " ".join(printable.split())[:200]
