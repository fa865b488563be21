"""How ``jobwrap cron`` sleeps: until a timeout, a signal or a child's exit (SIGCHLD)."""

from __future__ import annotations

import os
import select
import signal
from collections import deque
from collections.abc import Sequence


class Wakeup:
    """Sleep until a timeout, a signal or a child's exit: ``set_wakeup_fd`` plus ``poll``.

    The handlers only queue the signal number; the loop acts on it.  The wake-up byte is
    written by Python's C-level handler, so a signal arriving just before ``poll`` still ends
    the sleep (no lost wake-up).
    """

    def __init__(self, signals: Sequence[int]) -> None:
        self.signals = signals
        self.pending: deque[int] = deque()
        self.read_fd, self.write_fd = os.pipe()
        for fd in (self.read_fd, self.write_fd):
            os.set_blocking(fd, False)
        self.poller = select.poll()
        self.poller.register(self.read_fd, select.POLLIN)
        self.saved: dict[int, object] = {}
        self.saved_fd = -1

    def install(self) -> None:
        self.saved_fd = signal.set_wakeup_fd(self.write_fd, warn_on_full_buffer=False)
        for signum in self.signals:
            self.saved[signum] = signal.signal(signum, self._handler)

    def restore(self) -> None:
        for signum, handler in self.saved.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]
        signal.set_wakeup_fd(self.saved_fd)
        os.close(self.read_fd)
        os.close(self.write_fd)

    def wait(self, timeout_s: float) -> None:
        if not self.pending:
            self.poller.poll(max(0, int(timeout_s * 1000) + 1))  # +1: never wake a bit early
        try:
            while os.read(self.read_fd, 512):
                pass
        except BlockingIOError:
            pass

    def take(self) -> list[int]:
        """The signals received since the last call, in order."""
        taken = []
        while self.pending:
            taken.append(self.pending.popleft())  # popleft: safe against a handler appending
        return taken

    def _handler(self, signum: int, _frame: object) -> None:
        self.pending.append(signum)
