"""Private files and directories: jobwrap's state is 0600/0700 whatever the umask.

The history holds captured output (which may contain secrets) and the locks and spool say
what runs when: no other local user has any business reading them.  Files are created with
``O_NOFOLLOW`` (a symlink planted at a predictable name must not redirect a write) and
temporary files with ``mkstemp`` (unpredictable names, ``O_EXCL``).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

FILE_MODE = 0o600
DIR_MODE = 0o700


def private_dir(path: Path) -> None:
    """Make ``path`` and its missing parents, each 0700 (existing ones are left alone)."""
    missing = []
    for candidate in (path, *path.parents):
        if candidate.is_dir():
            break
        missing.append(candidate)
    for directory in reversed(missing):
        try:
            os.mkdir(directory, DIR_MODE)
        except FileExistsError:
            continue  # made by a concurrent process: not ours to chmod
        os.chmod(directory, DIR_MODE)  # mkdir's mode is masked by the umask


def open_private(path: Path, flags: int = os.O_RDWR) -> int:
    """Open ``path`` (creating it 0600), never following a symlink at its name.

    A file we own that is readable by others (made by an older jobwrap) is made 0600.
    Raises OSError (ELOOP for a symlink).
    """
    fd = os.open(path, flags | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE)
    try:
        info = os.fstat(fd)
        if stat.S_IMODE(info.st_mode) != FILE_MODE and info.st_uid == os.geteuid():
            os.fchmod(fd, FILE_MODE)
    except BaseException:
        os.close(fd)
        raise
    return fd


def write_atomic(path: Path, data: bytes, mode: int = FILE_MODE) -> None:
    """Write ``data`` to ``path`` via a temporary file (``mkstemp``: an unpredictable name, so
    a planted symlink cannot redirect it) and a rename (OSError).  Private unless ``mode``."""
    import tempfile  # here, not at the top: most runs write no file this way (start-up)

    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
