"""The run's signal dispositions: before, while and after the child runs.

Before the child starts a forwarded signal aborts the run (it would have aborted the
command); while it runs the runner forwards it; after it, the signal is absorbed so the run's
status stands, and a stop signal ends the sending of its report.
"""

from __future__ import annotations

from collections.abc import Callable

from jobwrap.process.spawn import FORWARDED_SIGNALS, STOP_SIGNALS


class SignalGuard:
    """The forwarded signals (TERM, INT, HUP, QUIT, USR1, USR2) for the whole run.

    A signal that was ignored when jobwrap started (``nohup``, a background job of a
    non-interactive shell) gets no handler, so it stays ignored for jobwrap and the child.
    Before the child starts (waiting for a lock, asking ProMonitor) the others abort the run,
    as they would have aborted the command.  While the child runs the runner gets them
    (:meth:`attach`).  After the child they are absorbed so the run's status stands; a stop
    signal (TERM, INT, HUP) also ends the sending of its report, which stays pending for a
    later run or flush — ``stopping`` says one came.
    """

    def __init__(self) -> None:
        self.old: dict = {}
        self.forward: Callable[[int], None] | None = None
        self.after_child = False
        self.sending = False
        self.received: int | None = None

    def __enter__(self) -> SignalGuard:
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():
            for signum in FORWARDED_SIGNALS:
                if signal.getsignal(signum) != signal.SIG_IGN:
                    self.old[signum] = signal.signal(signum, self._on_signal)
        return self

    def attach(self, forward: Callable[[int], None] | None) -> None:
        """The runner's hand-over: signals go to ``forward`` until it passes None (reaped)."""
        self.forward = forward
        if forward is None:
            self.after_child = True

    def _on_signal(self, signum: int, _frame: object) -> None:
        if self.forward is not None:
            self.forward(signum)
            return
        if not self.after_child:
            raise Stopped(signum)
        if signum in STOP_SIGNALS:
            self.received = signum
            if self.sending:
                raise Stopped(signum)

    @property
    def stopping(self) -> bool:
        return self.received is not None

    def __exit__(self, exc_type, exc, tb) -> None:
        import signal

        for signum, handler in self.old.items():
            signal.signal(signum, handler)


class Sending:
    """While reports are sent, a stop signal ends the sending (the report stays pending)."""

    def __init__(self, guard: SignalGuard | None) -> None:
        self.guard = guard

    def __enter__(self) -> None:
        if self.guard is not None:
            self.guard.sending = True

    def __exit__(self, exc_type, exc, tb) -> bool:
        if self.guard is not None:
            self.guard.sending = False
        return exc_type is Stopped


class Stopped(BaseException):
    """Raised by a signal handler; a BaseException so no library swallows it."""
