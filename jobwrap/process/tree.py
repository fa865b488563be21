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


def signal_tree(pgid: int, sig: int) -> None:
    """Send ``sig`` to the child's process group and to every descendant outside it.

    Processes that are already gone are fine: a tree often dies while it is being signalled.
    """
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass
    import psutil

    for proc in descendants():
        try:
            proc.send_signal(sig)
        except psutil.Error:
            pass


def reap_orphans() -> None:
    """Collect every exited child without blocking (re-parented orphans included)."""
    while True:
        try:
            pid, _status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def kill_leftovers(wait_s: float) -> None:
    """KILL what remains of the tree (descendants re-parented to us) and reap it."""
    import psutil

    procs = descendants()
    for proc in procs:
        try:
            proc.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(procs, timeout=wait_s)
    reap_orphans()


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


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"SIG{signum}"
