"""Helpers for tests that run the real CLI and real child processes."""

from __future__ import annotations

import os
import subprocess
import sys

JOBWRAP = [sys.executable, "-m", "jobwrap"]


def jobwrap(*args: str, input: bytes | None = None, env: dict | None = None,
            timeout: float = 60, **kw) -> subprocess.CompletedProcess:
    """Run the real CLI in a subprocess (CliRunner cannot see what the child writes to fd 1)."""
    full_env = dict(os.environ, **(env or {}))
    return subprocess.run(
        [*JOBWRAP, *args], input=input, capture_output=True, env=full_env, timeout=timeout, **kw
    )


def py(code: str) -> list[str]:
    """A child command running Python code (no shell quoting to get wrong)."""
    return [sys.executable, "-c", code]
