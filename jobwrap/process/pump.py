"""The hot loop: copy both pipes to jobwrap's own stdout/stderr until the child is gone.

The child writes into pipes enlarged to 1 MiB; the pump reads large chunks with one ``os.read``
and writes the very same bytes object to its destination, then hands it to the analyzer and
the capture, which never copy it on the common path.
"""

from __future__ import annotations

import os
import select
import time
from collections.abc import Callable

from jobwrap.output.analysis import OutputAnalyzer
from jobwrap.output.capture import OutputCapture
from jobwrap.process.child import pidfd_of, reap, try_reap

# 256 KiB reads: large enough for few system calls, small enough that the analyzer's
# buffers are reused by the allocator (1 MiB reads fragmented the heap to 60 MiB with metas).
CHUNK = 256 << 10
DRAIN_GRACE_S = 1.0  # how long output is still read after the child exits (see README)

Write = Callable[[int, bytes], None]


class Pump:
    """Copy both pipes to jobwrap's own stdout/stderr until the child is gone."""

    def __init__(self, pid: int, pipes: dict[int, tuple[int, int]], write: Write | None,
                 analyzer: OutputAnalyzer, capture: OutputCapture | None,
                 on_write_error: Callable[[int, OSError], None]) -> None:
        self.pid = pid
        self.pipes = pipes  # read fd -> (stream index, destination fd or -1 once broken)
        self.write = write or write_all
        self.analyzer = analyzer
        self.capture = capture
        self.on_write_error = on_write_error
        self.poller = select.poll()
        for fd in pipes:
            self.poller.register(fd, select.POLLIN)

    def run(self):
        """Pump until the pipes close (or the drain grace ends); return (status, rusage)."""
        pid = self.pid
        self.pidfd = pidfd_of(pid)
        if self.pidfd is not None:
            self.poller.register(self.pidfd, select.POLLIN)
        try:
            exited = self._loop(pid)
        except BaseException:
            self.close_all()
            raise
        finally:
            if self.pidfd is not None:
                os.close(self.pidfd)
        # None: the child closed its output but is still running, so wait for it.
        return exited if exited is not None else reap(pid)

    def close_all(self) -> None:
        for fd in list(self.pipes):
            self._close(fd)

    def hand_off(self, keep_closed: tuple[int, ...]) -> None:
        """Pipes a descendant still holds open after the drain grace go to a drainer.

        Closing them would kill that descendant with SIGPIPE on its next write (see
        :mod:`jobwrap.process.drainer`).
        """
        if not self.pipes:
            return
        from jobwrap.process.drainer import spawn_drainer  # rarely needed: not at start-up

        try:
            spawn_drainer(self.pipes, keep_closed)
        except OSError:
            pass  # no drainer: closing is what jobwrap did before
        self.close_all()

    def _loop(self, pid: int):
        exited, drain_until = None, 0.0
        while self.pipes:
            timeout_ms: float | None
            if exited is not None:
                timeout_ms = max(0.0, (drain_until - time.monotonic()) * 1000)
            else:
                timeout_ms = None if self.pidfd is not None else 50
            child_event = False
            for fd, _ in self.poller.poll(timeout_ms):
                if fd in self.pipes:
                    self._pump_once(fd)
                elif fd == self.pidfd:
                    child_event = True
            if exited is None:
                if child_event or self.pidfd is None:
                    exited = try_reap(pid)
                if exited is not None:
                    drain_until = time.monotonic() + DRAIN_GRACE_S
                    if self.pidfd is not None:
                        self.poller.unregister(self.pidfd)
            elif time.monotonic() >= drain_until:
                break  # a descendant still holds the pipes open: stop waiting for it
        return exited

    def _pump_once(self, fd: int) -> None:
        data = os.read(fd, CHUNK)
        if not data:
            self._close(fd)
            return
        stream, dest = self.pipes[fd]
        if dest >= 0:
            try:
                self.write(dest, data)
            except BrokenPipeError:
                # Our reader went away: close the pipe so the child meets the same fate it
                # would have met writing there directly (SIGPIPE / EPIPE).
                self._close(fd)
            except OSError as exc:
                # Full disk, file size limit...: keep draining (the child is not blocked),
                # stop copying, and fail the run (the output it promised is lost).
                self.pipes[fd] = (stream, -1)
                self.on_write_error(stream, exc)
        self.analyzer.feed(stream, data)
        if self.capture is not None:
            self.capture.feed(data)

    def _close(self, fd: int) -> None:
        if self.pipes.pop(fd, None) is not None:
            self.poller.unregister(fd)
            os.close(fd)


def write_all(fd: int, data: bytes) -> None:
    """Write every byte, also to a descriptor someone else made non-blocking."""
    try:
        written = os.write(fd, data)
    except BlockingIOError:
        written = 0
    if written < len(data):
        view = memoryview(data)
        while written < len(data):
            try:
                written += os.write(fd, view[written:])
            except BlockingIOError:
                # A non-blocking stdout (set by whoever shares it) is full: wait, don't drop.
                poller = select.poll()
                poller.register(fd, select.POLLOUT)
                poller.poll()
