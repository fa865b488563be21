"""The drainer: output of descendants that outlive the child keeps flowing after the run ends.

After the drain grace, pipes a descendant still holds open would kill it with SIGPIPE on its
next write if jobwrap closed them; without jobwrap it would have lived and its output reached
cron.  So a tiny detached process (``python -I -S``, a session of its own, stdin from
/dev/null) copies them to jobwrap's stdout and stderr until EOF, and the run ends now.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping

# The drainer: copy each pipe to its destination until EOF; EPIPE closes that pipe (the writer
# then meets SIGPIPE as it would have without jobwrap); another write error discards the rest.
_DRAINER = """
import os, select, sys
pipes = {int(a): int(b) for a, b in (arg.split(':') for arg in sys.argv[1:])}
poller = select.poll()
for fd in pipes:
    poller.register(fd, select.POLLIN)
def write_all(fd, data):
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view):]
        except BlockingIOError:
            select.select([], [fd], [])
while pipes:
    for fd, _ in poller.poll():
        data = os.read(fd, 262144)
        if data and pipes[fd] >= 0:
            try:
                write_all(pipes[fd], data)
            except BrokenPipeError:
                data = b''
            except OSError:
                pipes[fd] = -1
        if not data:
            poller.unregister(fd)
            os.close(fd)
            del pipes[fd]
"""


def spawn_drainer(pipes: Mapping[int, tuple[int, int]], keep_closed: tuple[int, ...]) -> None:
    """Start the drainer in a session of its own (no terminal signals), not waited for."""
    for fd in pipes:
        os.set_inheritable(fd, True)
    pairs = [f"{fd}:{dest}" for fd, (_stream, dest) in pipes.items()]
    actions: list[tuple] = [(os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0)]
    actions += [(os.POSIX_SPAWN_CLOSE, fd) for fd in keep_closed]  # e.g. the run's lock
    os.posix_spawn(
        sys.executable, [sys.executable, "-I", "-S", "-c", _DRAINER, *pairs], os.environ,
        file_actions=actions, setsid=True,
    )
