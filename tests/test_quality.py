"""Project hygiene that tooling can check: help text, README coverage, lint."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from jobwrap.cli.main import cli
from tests.helpers import jobwrap

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("name", sorted(cli.commands))
def test_every_command_has_help_and_is_in_the_readme(name):
    command = cli.commands[name]
    assert (command.help or "").strip(), f"{name} has no help text"
    result = jobwrap(name, "--help")
    assert result.returncode == 0
    assert b"Usage: jobwrap " + name.encode() in result.stdout
    assert f"jobwrap {name}" in README, f"the README does not show `jobwrap {name}`"


def test_run_help_shows_examples_and_the_exit_status_table():
    text = jobwrap("run", "--help").stdout.decode()
    assert "Examples:" in text
    for code in ("128+N", "124", "127", "126"):
        assert code in text


def test_version():
    result = jobwrap("--version")
    assert result.returncode == 0
    assert result.stdout.startswith(b"jobwrap, version ")


def readme_setup_commands() -> tuple[str, str]:
    """The README's first two code blocks: install and run a job; install and run the tests."""
    blocks = README.split("```")
    setup = [b.strip() for b in blocks[1:4:2]]
    for block in setup:
        assert block.startswith(("sh\n", "bash\n")), block
    install_and_run, install_and_test = (b.split("\n", 1)[1].strip() for b in setup)
    for command in (install_and_run, install_and_test):
        assert "\n" not in command, f"one command per set-up block: {command!r}"
    return install_and_run, install_and_test


def test_readme_starts_with_exactly_two_setup_commands_and_ci_runs_the_second():
    install_and_run, install_and_test = readme_setup_commands()
    assert "jobwrap run" in install_and_run
    # A system pip refuses to install on Debian 12 / Ubuntu 24.04: both make a virtualenv.
    for command in (install_and_run, install_and_test):
        assert command.startswith("python3 -m venv "), command
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    commands = [line for line in ci if line.strip() and not line.startswith(("#", " "))]
    assert commands[-1] == install_and_test, "CI's last command is not the README's"


RUFF = shutil.which("ruff") or str(Path(sys.executable).with_name("ruff"))


@pytest.mark.skipif(not Path(RUFF).exists(), reason="ruff is not installed")
def test_ruff_is_clean():
    ruff = RUFF
    result = subprocess.run([ruff, "check", "--quiet", str(ROOT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.skipif(importlib.util.find_spec("mypy") is None, reason="mypy is not installed")
def test_mypy_is_clean():
    result = subprocess.run([sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
