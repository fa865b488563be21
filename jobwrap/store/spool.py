"""Runs waiting to enter the history: one JSON file each, when the history could not be
written in time (locked by a stuck writer, a transient error).

The run's outcome must not wait long for the history after the job, nor be lost: its row is
written here (atomically, 0600) and the next process that opens the history for writing moves
it in.  A file that cannot be read is left where it is and named, never fatal.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

from jobwrap.store.files import private_dir, write_atomic

SPOOL_DIR = "spool"


def write(state_dir: Path, run_id: str, values: dict) -> Path:
    """Keep one run's row (column → value) for later; OSError if even that fails."""
    import base64  # only when the spool is used: not on every run's start-up

    directory = state_dir / SPOOL_DIR
    private_dir(directory)
    encoded = {k: {"b64": base64.b64encode(v).decode("ascii")} if isinstance(v, bytes) else v
               for k, v in values.items()}
    path = directory / f"{_safe(run_id)}.json"
    write_atomic(path, json.dumps(encoded).encode("ascii"))
    return path


def has_waiting(state_dir: Path) -> bool:
    try:
        return any(os.scandir(state_dir / SPOOL_DIR))
    except OSError:
        return False


def waiting(state_dir: Path, bad: list[tuple[str, str]]) -> Iterator[tuple[Path, dict]]:
    """The spooled rows; unreadable files are appended to ``bad``."""
    directory = state_dir / SPOOL_DIR
    try:
        names = sorted(n for n in os.listdir(directory) if n.endswith(".json"))
    except OSError:
        return
    if names:
        import base64  # only when runs wait there: not on every run's start-up
    for name in names:
        path = directory / name
        try:
            data = json.loads(path.read_bytes())
            if not isinstance(data, dict) or not isinstance(data.get("run_id"), str):
                raise ValueError("not a run")
            values = {k: base64.b64decode(v["b64"]) if isinstance(v, dict) else v
                      for k, v in data.items()}
        except (OSError, ValueError, TypeError, KeyError) as exc:
            bad.append((name, f"spool file {path} unreadable: {exc}"))
            continue
        yield path, values


def remove(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


def _safe(run_id: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in run_id)
