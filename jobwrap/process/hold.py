"""``--output on-failure``: hold the command's output on disk, write it out only if the run failed.

The output goes to a private file in the state directory that has no name: created with
``O_TMPFILE`` where the system has it, else created and unlinked at once.  Its space is
freed by the kernel when jobwrap exits, however it exits, so a killed run leaves nothing
behind; a name left by a run killed between creating and unlinking it (the fallback's
instant) is removed by the next run.  The held output is bounded by the disk, never by memory.

Each chunk is stored with a small header saying which stream it came from, so the output is
written out unchanged, stdout to stdout and stderr to stderr, in the order it arrived.  If
the file cannot be written (disk full), what it holds is written out at once and the rest
of the output passes through live: output is never lost to save a mail.
"""

from __future__ import annotations

import os
import re
import select
import struct
import tempfile
from collections.abc import Callable
from pathlib import Path

PREFIX = ".jobwrap-held-"
_HEADER = struct.Struct(">BI")  # destination fd (1 or 2), chunk length
_STALE_RE = re.compile(re.escape(PREFIX) + r"(\d+)-")

Warn = Callable[[str], None]


class HeldOutput:
    """A sink for the pump: ``write(fd, data)`` stores the chunk instead of writing it."""

    def __init__(self, fd: int, warn: Warn) -> None:
        self.fd = fd
        self.warn = warn
        self.size = 0  # bytes of complete chunks held
        self.live = False  # True once holding failed: chunks pass straight through

    def write(self, dest: int, data: bytes) -> None:
        if self.live:
            write_all(dest, data)
            return
        header = _HEADER.pack(dest, len(data))
        try:
            written = os.writev(self.fd, (header, data))
            if written < len(header) + len(data):  # rare (a full disk): finish it or fail
                write_all(self.fd, (header + data)[written:])
        except OSError as exc:
            self.warn(f"warning: cannot hold the output ({exc.strerror}): passing it through")
            self._spill()
            self.live = True
            write_all(dest, data)
            return
        self.size += len(header) + len(data)

    def finish(self, failed: bool) -> None:
        """Write the held output out if the run failed; free the file either way."""
        try:
            if failed and not self.live:
                self._spill()
        finally:
            os.close(self.fd)

    def _spill(self) -> None:
        """Write out every complete chunk held so far, in order, each to its own stream."""
        broken: set[int] = set()
        with open(self.fd, "rb", closefd=False, buffering=1 << 20) as held:
            held.seek(0)
            pos = 0
            while pos < self.size:
                dest, size = _HEADER.unpack(held.read(_HEADER.size))
                data = held.read(size)
                pos += _HEADER.size + size
                if dest in broken:
                    continue
                try:
                    write_all(dest, data)
                except OSError:
                    broken.add(dest)  # its reader went away: the other stream still goes out


def hold_output(state_dir: Path, warn: Warn) -> HeldOutput | None:
    """A new held-output file in ``state_dir``; None (and a warning) if there cannot be one."""
    remove_stale(state_dir)
    try:
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        return HeldOutput(_nameless_file(state_dir), warn)
    except OSError as exc:
        warn(f"warning: cannot hold the output in {state_dir} ({exc.strerror}): "
             "passing it through")
        return None


def _nameless_file(directory: Path) -> int:
    flags = os.O_RDWR | os.O_CLOEXEC
    tmpfile = getattr(os, "O_TMPFILE", 0)
    if tmpfile:
        try:
            return os.open(directory, flags | tmpfile, 0o600)
        except OSError:
            pass  # a file system without O_TMPFILE: a named file, unlinked at once
    fd, name = tempfile.mkstemp(prefix=f"{PREFIX}{os.getpid()}-", dir=directory)
    os.unlink(name)
    return fd


def remove_stale(state_dir: Path) -> None:
    """Remove held-output files whose jobwrap is gone (killed between create and unlink)."""
    try:
        names = os.listdir(state_dir)
    except OSError:
        return
    for name in names:
        found = _STALE_RE.match(name)
        if found is None or _alive(int(found.group(1))):
            continue
        try:
            os.unlink(state_dir / name)
        except OSError:
            pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def write_all(fd: int, data: bytes) -> None:
    """Write every byte, also to a descriptor someone else made non-blocking."""
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view):]
        except BlockingIOError:
            poller = select.poll()
            poller.register(fd, select.POLLOUT)
            poller.poll()
