"""Taking a run's locks: the local ``--lock`` and, with a lock URL, the fleet's lease and slot.

A lock that cannot be had skips the run: the skipped run is recorded and its record returned.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from jobwrap.errors import JobwrapError
from jobwrap.run.options import RunSettings, Warn
from jobwrap.run.record import skipped_record
from jobwrap.run.reporting import finish_run

if TYPE_CHECKING:
    from jobwrap.store.fleet import FleetSettings


def take_lock(settings: RunSettings, run_id: str, warn: Warn):
    """The JobLock (and fleet lease), or the record of the skipped run when it cannot be had."""
    from jobwrap.store import lock as locks

    assert settings.lock is not None
    try:
        held = locks.acquire(settings.state_dir, settings.lock, settings.lock_wait_s,
                             run_id=run_id)
    except JobwrapError as exc:
        # The user asked for mutual exclusion: a lock that cannot be taken skips the run, as
        # `flock -n` does, rather than risk two runs at once.
        reason = f"skipped: cannot take lock {settings.lock!r} ({exc})"
        warn(reason)
        return finish_run(settings, skipped_record(settings, reason, run_id), warn)
    if held is None:
        reason = locks.holder(settings.state_dir, settings.lock).skip_message()
        warn(reason)
        return finish_run(settings, skipped_record(settings, reason, run_id), warn)
    if settings.fleet is not None:
        return _take_fleet_lock(settings, settings.fleet, held, run_id, warn)
    return held


def _take_fleet_lock(settings: RunSettings, fleet_settings: FleetSettings, local, run_id: str,
                     warn: Warn):
    """After the local lock, the fleet's lease and slot in Redis; a skip record when refused."""
    from jobwrap.store import fleet

    assert settings.lock is not None
    try:
        got = fleet.acquire(fleet_settings, settings.lock, run_id=run_id, warn=warn,
                            slot=settings.fleet_slot or _fleet_slot(settings.schedule))
    except fleet.FleetUnavailable as exc:
        if fleet_settings.unavailable == "run":
            warn(f"warning: {exc}; running without the fleet lock (--lock-unavailable run)")
            return local
        got = fleet.Refused(f"skipped: {exc} (fleet lock {settings.lock!r})", fleet.Holder())
    if isinstance(got, fleet.Lease):
        return fleet.FleetLock(local, got, run_id)
    if local is not None:
        local.release()
    warn(got.message)
    return finish_run(settings, skipped_record(settings, got.message, run_id), warn)


def _fleet_slot(schedule: str | None):
    """The schedule slot this run belongs to (the nearest fire time), None without one."""
    if not schedule:
        return None
    from jobwrap.schedule import parse_schedule
    from jobwrap.store.fleet import Slot

    parsed = parse_schedule(schedule)
    if parsed.is_reboot:
        return None
    fire, keep = parsed.slot_at(datetime.now(UTC))
    return Slot(fire, keep.total_seconds())
