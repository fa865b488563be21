"""Interactive use: give the terminal to the child's process group while it runs.

The child runs in its own process group (so a timeout can kill the whole tree).  On a terminal
that would make it a *background* group: Ctrl-C would reach jobwrap instead of the child, and a
child reading the terminal would be stopped by SIGTTIN.  So, when jobwrap itself is in the
terminal's foreground group, it hands the foreground to the child's group — as a shell does —
and takes it back when the child is done.  Ctrl-Z stops the child; jobwrap then stops itself
too, so the shell's job control (``fg``/``bg``) works on the pair.
"""

from __future__ import annotations

import os
import signal


class ForegroundHandover:
    """Hand the controlling terminal (on stdin) to ``pgid``; ``restore()`` takes it back."""

    def __init__(self, pgid: int, tty_fd: int = 0) -> None:
        self.pgid = pgid
        self.tty_fd = tty_fd
        self.active = _is_foreground(tty_fd)
        self._old_chld = None
        if self.active:
            self._give()
            self._old_chld = signal.signal(signal.SIGCHLD, self._on_child_state)

    def _give(self) -> None:
        _set_foreground(self.tty_fd, self.pgid)
        # The child may have tried to read before it was in the foreground and been stopped.
        try:
            os.killpg(self.pgid, signal.SIGCONT)
        except ProcessLookupError:
            pass

    def _on_child_state(self, _signum: int, _frame: object) -> None:
        try:
            info = os.waitid(os.P_PID, self.pgid, os.WSTOPPED | os.WNOHANG)
        except ChildProcessError:
            return
        if info is None or info.si_code != os.CLD_STOPPED:
            return
        # Ctrl-Z stopped the child: stop ourselves too, so the shell regains the terminal.
        _set_foreground(self.tty_fd, os.getpgrp())
        os.kill(os.getpid(), signal.SIGSTOP)
        # Resumed (fg/bg): give the terminal back if we are in the foreground again.
        if _is_foreground(self.tty_fd):
            self._give()
        else:
            os.killpg(self.pgid, signal.SIGCONT)

    def restore(self) -> None:
        if not self.active:
            return
        self.active = False
        signal.signal(signal.SIGCHLD, self._old_chld or signal.SIG_DFL)
        _set_foreground(self.tty_fd, os.getpgrp())


def _is_foreground(tty_fd: int) -> bool:
    try:
        return os.isatty(tty_fd) and os.tcgetpgrp(tty_fd) == os.getpgrp()
    except OSError:
        return False


def _set_foreground(tty_fd: int, pgid: int) -> None:
    # A background process calling tcsetpgrp gets SIGTTOU unless it ignores it.
    old = signal.signal(signal.SIGTTOU, signal.SIG_IGN)
    try:
        os.tcsetpgrp(tty_fd, pgid)
    except OSError:
        pass
    finally:
        signal.signal(signal.SIGTTOU, old)
