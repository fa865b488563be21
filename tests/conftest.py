"""Shared fixtures: every test gets its own state and config directories, and no real token."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Variables that would make a test depend on the machine it runs on.
_LEAKY_PREFIXES = ("JOBWRAP_", "GITHUB_", "GITLAB_", "CIRCLE", "BUILDKITE", "JENKINS_")
_LEAKY_NAMES = ("CI", "INVOCATION_ID", "NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


@pytest.fixture(autouse=True)
def hermetic_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in list(os.environ):
        if name.startswith(_LEAKY_PREFIXES) or name in _LEAKY_NAMES:
            monkeypatch.delenv(name, raising=False)
    state = tmp_path / "state"
    monkeypatch.setenv("JOBWRAP_STATE_DIR", str(state))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("JOBWRAP_SYSTEM_CONFIG", str(tmp_path / "etc" / "config.toml"))
    # The ProMonitor request budget is host-wide: each test gets a host of its own.
    monkeypatch.setenv("JOBWRAP_PROMONITOR_BUDGET_DIR", str(tmp_path / "host-budget"))
    # Never talk to the real services, even if a test forgets to point somewhere else.
    monkeypatch.setenv("JOBWRAP_IDLEMON_URL", "http://127.0.0.1:9/api")
    monkeypatch.setenv("JOBWRAP_PROMONITOR_URL", "http://127.0.0.1:9")
    return state


@pytest.fixture
def state_dir(hermetic_env: Path) -> Path:
    return hermetic_env


@pytest.fixture
def idlemon():
    """A fake Idlemon on 127.0.0.1 (tests/fakes/idlemon_server.py) for the test's duration."""
    from tests.fakes.idlemon_server import IdlemonServer

    with IdlemonServer() as server:
        yield server


@pytest.fixture
def env(idlemon, monkeypatch):
    """jobwrap pointed at the fake Idlemon, with its token and project: the variables set."""
    from tests.fakes.idlemon_server import PROJECT_ID, TOKEN

    values = {
        "JOBWRAP_IDLEMON_URL": idlemon.api_url,
        "JOBWRAP_IDLEMON_TOKEN": TOKEN,
        "JOBWRAP_IDLEMON_PROJECT": PROJECT_ID,
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return values
