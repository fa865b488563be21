"""The child's process tree: make it findable, stop it, reap it.

The child runs in its own process group.  Descendants that left the group (``setsid``,
daemonising) are found through psutil; on Linux jobwrap becomes a *child subreaper* first, so a
descendant whose parent already exited is re-parented to jobwrap rather than to init and stays
findable (and reapable: no zombies are left behind).

psutil and ctypes are imported only here and only when a tree must be killed or a subreaper is
wanted, to keep the start-up of a plain run short.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Collection

from jobwrap.errors import signal_name as signal_name  # re-exported: the name of a signal

PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> bool:
    """Ask Linux to re-parent orphaned descendants to this process.  False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def descendants() -> list:
    """Every live descendant of this process (psutil.Process objects); empty on failure."""
    import psutil

    try:
        return psutil.Process().children(recursive=True)
    except psutil.Error:
        return []


def signal_tree(pgid: int | None, sig: int, *, session: int | None = None) -> None:
    """Send ``sig`` to process group ``pgid`` and to every descendant of ours outside it.

    ``session``: only the descendants in that session (the supervisor's jobs each lead one);
    ``pgid`` None: the descendants alone.  Processes that are already gone are fine: a tree
    often dies while it is being signalled.  As a subreaper we are an ancestor of everything
    a tree left behind, so looking among our descendants finds it all, and never an unrelated
    process that reused a pid.
    """
    import psutil

    if pgid is not None:
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            pass
    for proc in _members(session):
        try:
            if pgid is None or os.getpgid(proc.pid) != pgid:  # the group has it already
                proc.send_signal(sig)
        except (OSError, psutil.Error):
            pass  # gone meanwhile


def stop_tree(pgid: int | None, grace_s: float, sig: int = signal.SIGTERM, *,
              session: int | None = None) -> None:
    """The one escalation: ``sig`` (TERM) to the whole tree, ``grace_s`` to go, then SIGKILL."""
    signal_tree(pgid, sig, session=session)
    finish_tree(grace_s, pgid=pgid, session=session)


def finish_tree(grace_s: float, *, pgid: int | None = None, session: int | None = None) -> None:
    """The tree was signalled: wait up to ``grace_s`` for it, SIGKILL what is left, reap."""
    import psutil

    procs = _members(session)
    alive = procs
    if procs:
        _, alive = psutil.wait_procs(procs, timeout=max(0.0, grace_s))
    if pgid is not None:
        try:
            os.killpg(pgid, signal.SIGKILL)  # members we cannot wait for (not our descendants)
        except (ProcessLookupError, PermissionError):
            pass
    if alive:
        for proc in alive:
            try:
                proc.kill()
            except psutil.Error:
                pass
        psutil.wait_procs(alive, timeout=1.0)
    reap_orphans()


def _members(session: int | None) -> list:
    procs = descendants()
    if session is None:
        return procs
    members = []
    for proc in procs:
        try:
            if os.getsid(proc.pid) == session:
                members.append(proc)
        except OSError:
            pass  # gone meanwhile
    return members


def reap_orphans() -> None:
    """Collect every exited child without blocking (re-parented orphans included)."""
    while True:
        try:
            pid, _status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def descendant_pids() -> set[int]:
    """The pids of every live descendant (to spare them later, see :func:`kill_group_tree`)."""
    return {proc.pid for proc in descendants()}


def kill_group_tree(pgid: int, spare: Collection[int] = ()) -> None:
    """SIGKILL a process group and every descendant of ours not in ``spare``.

    The descendants are listed before anything is killed, while the group's processes still
    link them to us.  A hook's tree is killed this way without touching other descendants.
    """
    import psutil

    procs = [proc for proc in descendants() if proc.pid not in spare]
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    for proc in procs:
        try:
            proc.kill()
        except psutil.Error:
            pass

