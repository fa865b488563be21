"""The wrapped command never inherits jobwrap's secrets (issue 9, item 16)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import jobwrap, py

ROOT = Path(__file__).resolve().parent.parent
SECRETS = {
    "JOBWRAP_IDLEMON_TOKEN": "0123456789abcdef0123456789abcdef",
    "JOBWRAP_PROMONITOR_TOKEN": "pm_secret",
    "JOBWRAP_PROMONITOR_TOKEN_FILE": "/nonexistent",
}
SHOW_ENV = py("import json, os; print(json.dumps(sorted(k for k in os.environ "
              "if k.startswith('JOBWRAP_'))))")


def child_sees(*args: str, env: dict | None = None) -> list[str]:
    result = jobwrap("run", "--report", "never", *args, "--", *SHOW_ENV,
                     env={**SECRETS, **(env or {})})
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_the_command_does_not_inherit_the_tokens():
    seen = child_sees()
    assert not set(seen) & set(SECRETS), seen
    assert "JOBWRAP_STATE_DIR" in seen  # everything else is inherited


@pytest.mark.parametrize("args, env, config", [
    (["--keep-secrets-env"], {}, ""),
    ([], {"JOBWRAP_KEEP_SECRETS_ENV": "yes"}, ""),
    ([], {}, "[run]\nkeep_secrets_env = true\n"),
])
def test_an_explicit_opt_out_keeps_them(tmp_path, args, env, config):
    if config:
        path = tmp_path / "config" / "jobwrap" / "config.toml"
        path.parent.mkdir(parents=True)
        path.write_text(config)
    assert set(SECRETS) <= set(child_sees(*args, env=env))


def test_the_units_keep_the_state_directory_private():
    units = [p for p in (ROOT / "systemd").glob("*.service")
             if "StateDirectory=" in p.read_text()]
    assert units
    for unit in units:
        assert "StateDirectoryMode=0700" in unit.read_text().splitlines(), unit.name
