"""Bad input is one line and exit 2, never "internal error" (issue 9, item 13).

Named cases first (each once ended as status 70), then property tests over the command line,
the config files and crontabs: whatever the input, jobwrap exits 0, 1, 2, 75 or the job's
status, never 70 and never with a traceback.  They call the CLI in-process (fast) with the
environment swapped; the commands run are harmless (`true`, a missing path).
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jobwrap.cli.main import _main
from jobwrap.cli.run import run
from tests.helpers import jobwrap

FUZZ = settings(max_examples=60, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])
ALLOWED = {0, 1, 2, 75, 124, 126, 127}


def call(argv: list[str], env: dict[str, str], cwd: Path) -> tuple[int, str]:
    """Run the CLI in-process with ``env`` as the environment; (status, stderr)."""
    saved_env, saved_cwd = dict(os.environ), os.getcwd()
    err, out = io.StringIO(), io.StringIO()
    try:
        os.environ.clear()
        os.environ.update(env)
        os.chdir(cwd)
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            status = _main(argv)
    finally:
        os.environ.clear()
        os.environ.update(saved_env)
        os.chdir(saved_cwd)
    return status, err.getvalue()


def assert_clean(status: int, stderr: str) -> None:
    assert status != 70 and "internal error" not in stderr, stderr
    assert "Traceback" not in stderr
    assert status in ALLOWED, (status, stderr)


# ---- the named cases -------------------------------------------------------------------------


@pytest.fixture
def fifo(tmp_path) -> Path:
    path = tmp_path / "fifo"
    os.mkfifo(path)
    return path


def test_named_inputs_are_one_line_and_exit_2(tmp_path, fifo):
    deep = tmp_path / "deep.toml"
    deep.write_text("a = " + "[" * 2000 + "]" * 2000 + "\n")
    cases = [
        (["run", "--", ""], {}),
        (["run", "--", "true"], {"JOBWRAP_STATE_DIR": "~nouser/x"}),
        (["history"], {"JOBWRAP_STATE_DIR": "~nouser/x"}),
        (["config"], {"JOBWRAP_CONFIG": str(deep)}),
        (["config"], {"JOBWRAP_CONFIG": "/dev/zero"}),
        (["config"], {"JOBWRAP_CONFIG": str(fifo)}),
        (["cron", "--check", str(fifo)], {}),
        (["cron", "--check", "/dev/zero"], {}),
    ]
    for argv, env in cases:
        result = jobwrap(*argv, env=env, timeout=10)
        lines = result.stderr.decode().splitlines()
        assert result.returncode == 2 and len(lines) == 1, (argv, env, lines)
        assert "internal error" not in lines[0]


def test_a_huge_history_limit_is_not_an_internal_error():
    result = jobwrap("history", "-n", "99999999999999999999")
    assert result.returncode == 0, result.stderr


def test_a_token_file_that_is_a_fifo_or_dev_zero_never_blocks(fifo):
    for path in (str(fifo), "/dev/zero"):
        result = jobwrap("run", "-m", "x", "--", "true",
                         env={"JOBWRAP_IDLEMON_TOKEN_FILE": path}, timeout=10)
        assert result.returncode == 0 and b"not a regular file" in result.stderr


def test_a_bad_idlemon_url_is_not_an_internal_error():
    env = {"JOBWRAP_IDLEMON_URL": "http://[::1", "JOBWRAP_IDLEMON_TOKEN": "a" * 32}
    assert jobwrap("run", "-m", "x", "--", "true", env=env).returncode == 0
    result = jobwrap("status", env=env)
    assert result.returncode == 1 and b"internal error" not in result.stderr + result.stdout


# ---- properties ------------------------------------------------------------------------------

_texts = st.one_of(
    st.text(max_size=30),
    st.sampled_from(["", "0", "-1", "1e999", "nan", "99999999999999999999", "~nouser/x",
                     "http://[::1", "5m", "1h30m", "true", "off", "strict", "*/5 * * * *",
                     "@reboot", "a=(", "x=(\\d+)", "x", "\x00", "\udcff", "é"]),
)
_RUN_OPTIONS = sorted(o for p in run.params if p.name != "command" for o in p.opts)
_SAFE_COMMANDS = [["true"], [""], ["/nonexistent/cmd"], [sys.executable, "-c", "pass"]]


@st.composite
def run_argv(draw) -> list[str]:
    argv = ["run"]
    for option in draw(st.lists(st.sampled_from(_RUN_OPTIONS), max_size=4)):
        if option.startswith("--") and draw(st.booleans()):
            argv.append(f"{option}={draw(_texts)}")  # never a bare value: it could be the command
        else:
            argv.append(option)
    return [*argv, "--", *draw(st.sampled_from(_SAFE_COMMANDS))]


@st.composite
def other_argv(draw) -> list[str]:
    command = draw(st.sampled_from([
        ["history"], ["show"], ["config"], ["next"], ["history", "-n"], ["history", "--limit"],
        ["show", "--json"], ["config", "-m"], ["next", "-n"], ["next", "--tz"], ["flush",
        "--budget"], ["--version"], ["nosuch"]]))
    return [*command, *draw(st.lists(_texts, max_size=3))]


def _env(tmp: Path, extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBWRAP_")}
    env.update({"JOBWRAP_STATE_DIR": str(tmp / "state"), "XDG_CONFIG_HOME": str(tmp / "cfg"),
                "JOBWRAP_SYSTEM_CONFIG": str(tmp / "none.toml"),
                "JOBWRAP_IDLEMON_URL": "http://127.0.0.1:9/api",
                "JOBWRAP_PROMONITOR_URL": "http://127.0.0.1:9"})
    env.update(extra)
    return env


_env_values = st.dictionaries(
    st.sampled_from(["JOBWRAP_IDLEMON_TOKEN", "JOBWRAP_PROMONITOR_RPM", "JOBWRAP_REPORT",
                     "JOBWRAP_MONITOR", "JOBWRAP_IDLEMON_URL", "JOBWRAP_PROMONITOR_TOKEN",
                     "JOBWRAP_IDLEMON_TOKEN_FILE", "JOBWRAP_KEEP_SECRETS_ENV"]),
    _texts.filter(lambda t: "\x00" not in t and "\udcff" not in t), max_size=3)


@FUZZ
@given(argv=st.one_of(run_argv(), other_argv()), extra=_env_values)
def test_any_command_line_exits_cleanly(tmp_path, argv, extra):
    if "--report-timeout" in " ".join(argv) or "--budget" in argv:
        extra = {**extra, "JOBWRAP_IDLEMON_URL": "http://127.0.0.1:9/api"}
    assert_clean(*call(argv, _env(tmp_path, extra), tmp_path))


_toml_values = st.one_of(
    st.sampled_from(['"5m"', '"soon"', "0", "-1", "true", '"always"', '"x"', "[1, 2]", "{}",
                     '{a = 1}', '"/dev/zero"', '"~nouser/x"', '"http://[::1"', "1e999",
                     '"' + "[" * 3 + '"', "[" * 50 + "]" * 50]),
    st.text(max_size=20).map(lambda t: '"' + t.replace("\\", "").replace('"', "") + '"'),
)
_keys = st.sampled_from(["timeout", "kill_after", "capture", "report", "report_timeout",
                         "state_dir", "url", "token", "token_file", "project",
                         "requests_per_minute", "skipped_exit", "keep_secrets_env", "lock",
                         "interval", "schedule", "require_up", "promonitor", "lock_wait",
                         "idlemon_token_file", "nosuch"])
_headers = st.sampled_from(["[run]", "[idlemon]", "[promonitor]", "[monitors.m]",
                            "[monitors.m.meta]", "[monitors.m.count]", "[other]", "[run"])


@st.composite
def toml_text(draw) -> str:
    lines = []
    for _ in range(draw(st.integers(0, 6))):
        kind = draw(st.integers(0, 4))
        if kind == 0:
            lines.append(draw(_headers))
        elif kind == 4:
            lines.append(draw(st.text(max_size=20)))
        else:
            lines.append(f"{draw(_keys)} = {draw(_toml_values)}")
    return "\n".join(lines) + "\n"


@FUZZ
@given(text=toml_text(), command=st.sampled_from([
    ["config"], ["config", "-m", "m"], ["history"], ["run", "-m", "m", "--report=never", "--",
                                                     "true"]]))
def test_any_config_file_exits_cleanly(tmp_path, text, command):
    path = tmp_path / "cfg" / "jobwrap" / "config.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8", errors="surrogateescape")
    assert_clean(*call(command, _env(tmp_path, {}), tmp_path))


_cron_lines = st.one_of(
    st.sampled_from(["*/5 * * * * true", "@reboot true", "@daily", "61 * * * * x",
                     "# jobwrap: overlap=allow", "# jobwrap: overlap=", "# jobwrap: x=y",
                     "CRON_TZ=Nowhere/Zone", "SHELL=/bin/sh", "* * * * * echo %", "",
                     "0 0 31 2 * never", "*/0 * * * * x", "9999999999 * * * * x"]),
    st.text(max_size=40),
)


@FUZZ
@given(lines=st.lists(_cron_lines, max_size=6))
def test_any_crontab_exits_cleanly(tmp_path, lines):
    path = tmp_path / "crontab"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8", errors="surrogateescape")
    assert_clean(*call(["cron", "--check", str(path)], _env(tmp_path, {}), tmp_path))
