"""Is a run recorded as running still running?  Its jobwrap's pid, its boot, this host."""

from __future__ import annotations

import os
from datetime import datetime

from jobwrap.store.schema import ABANDONED, RUNNING


class Here:
    """This machine, for telling a running run from an abandoned one."""

    def __init__(self) -> None:
        self.host = os.uname().nodename
        self.boot_id = boot_id()

    def state(self, stored: str, data: dict) -> str:
        if stored != RUNNING or data.get("host") != self.host:
            return stored  # another host's run: we cannot tell
        booted, pid = data.get("boot_id"), data.get("pid")
        if booted and self.boot_id and booted != self.boot_id:
            return ABANDONED  # the machine rebooted since
        if not isinstance(pid, int) or not _alive(pid, data["started_at"]):
            return ABANDONED
        return RUNNING


def boot_id() -> str | None:
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
            return f.read().strip() or None
    except OSError:
        return None


def _alive(pid: int, started_at: str) -> bool:
    """Is ``pid`` still the jobwrap that started the run at ``started_at``?"""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        pass  # EPERM: alive, someone else's
    began = _process_start(pid)
    if began is None:
        return True
    # A process that began after the run did cannot be its jobwrap: the pid was reused.
    return began <= datetime.fromisoformat(started_at).timestamp() + 5


def _process_start(pid: int) -> float | None:
    """When ``pid`` started (seconds since the epoch), from /proc; None where unknown."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/stat", encoding="ascii", errors="replace") as f:
            btime = next(int(line.split()[1]) for line in f if line.startswith("btime "))
        return btime + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None
