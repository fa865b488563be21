"""Configuration: precedence declared once, monitor sections, secrets from files, clear errors."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from jobwrap.config.settings import ConfigFile, mask, resolve
from jobwrap.config.values import parse_duration
from jobwrap.errors import ConfigError, UsageError
from tests.fakes.idlemon_server import PROJECT_ID, TOKEN, IdlemonServer
from tests.helpers import jobwrap


def write(path: Path, text: str, mode: int = 0o600) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)
    return path


@pytest.fixture
def user_file(tmp_path) -> Path:
    return tmp_path / "config" / "jobwrap" / "config.toml"


@pytest.fixture
def system_file(tmp_path) -> Path:
    return tmp_path / "etc" / "config.toml"


def files(**sections) -> list[ConfigFile]:
    return [ConfigFile(Path(name), data) for name, data in sections.items()]


def test_precedence_flag_env_user_system_default():
    user = {"run": {"timeout": "3m"}, "idlemon": {"url": "http://user/api"}}
    system = {"run": {"timeout": "4m", "kill_after": "5s"}, "idlemon": {"project": "p-sys"}}
    layered = [ConfigFile(Path("user.toml"), user), ConfigFile(Path("sys.toml"), system)]
    env = {"JOBWRAP_IDLEMON_URL": "http://env/api"}
    r = resolve({"timeout": "1m"}, env, layered)
    assert (r.timeout, r.sources["timeout"]) == (60.0, "flag --timeout")
    assert r.idlemon_url == "http://env/api"
    assert r.sources["idlemon_url"] == "env JOBWRAP_IDLEMON_URL"
    r = resolve({}, {}, layered)
    assert (r.timeout, r.sources["timeout"]) == (180.0, "user.toml [run]")
    assert (r.kill_after, r.sources["kill_after"]) == (5.0, "sys.toml [run]")
    assert r.idlemon_project == "p-sys"
    assert (r.report, r.sources["report"]) == ("success", "default")


def test_monitor_section_beats_general_sections_but_not_env_or_flags():
    data = {"run": {"timeout": "1h", "report": "never"},
            "monitors": {"backup": {"timeout": "30m", "report": "always",
                                    "meta": {"rows": "(\\d+) rows"}}}}
    layered = [ConfigFile(Path("u.toml"), data)]
    r = resolve({"monitor": "backup"}, {}, layered)
    assert r.timeout == 1800.0 and r.sources["timeout"] == "u.toml [monitors.backup]"
    assert r.report == "always"
    assert r.metas == {"rows": "(\\d+) rows"}
    r = resolve({"monitor": "other"}, {}, layered)
    assert r.timeout == 3600.0 and r.metas == {}
    r = resolve({"monitor": "backup"}, {"JOBWRAP_REPORT": "success"}, layered)
    assert r.report == "success"


def test_token_from_a_file_named_by_env(tmp_path):
    secret = write(tmp_path / "token", TOKEN + "\n")
    r = resolve({}, {"JOBWRAP_IDLEMON_TOKEN_FILE": str(secret)}, [])
    assert r.idlemon_token == TOKEN
    assert r.warnings == ()
    assert str(secret) in r.sources["idlemon_token"]


def test_token_file_readable_by_others_gets_a_warning(tmp_path):
    secret = write(tmp_path / "token", TOKEN, mode=0o644)
    r = resolve({}, {}, files(**{"u.toml": {"idlemon": {"token_file": str(secret)}}}))
    assert r.idlemon_token == TOKEN
    assert len(r.warnings) == 1 and "chmod 600" in r.warnings[0]


@pytest.mark.parametrize(
    "data, message",
    [
        ({"runn": {}}, "unknown section [runn]"),
        ({"run": {"timeoutt": "1m"}}, "unknown key 'timeoutt' in [run]"),
        ({"run": {"timeout": "soon"}}, "bad timeout"),
        ({"run": {"report": "sometimes"}}, "bad report"),
        ({"monitors": {"b": {"meta": {"x": 1}}}}, "NAME = 'REGEX'"),
    ],
)
def test_bad_config_is_a_clear_error(user_file, data, message):
    from jobwrap.config.files import load_file

    lines = []
    for section, table in data.items():
        if section == "monitors":
            for slug, sub in table.items():
                meta = sub.pop("meta", None)
                lines.append(f"[monitors.{slug}]")
                lines += [f"{k} = {json.dumps(v)}" for k, v in sub.items()]
                if meta is not None:
                    lines.append(f"[monitors.{slug}.meta]")
                    lines += [f"{k} = {json.dumps(v)}" for k, v in meta.items()]
        else:
            lines.append(f"[{section}]")
            lines += [f"{k} = {json.dumps(v)}" for k, v in table.items()]
    write(user_file, "\n".join(lines) + "\n")
    with pytest.raises((ConfigError, UsageError), match=re.escape(message)):
        resolve({"monitor": "b"}, dict(os.environ), [load_file(user_file)])


def test_broken_toml_stops_run_before_the_command_with_one_line(user_file, tmp_path):
    write(user_file, "[run\ntimeout = 3\n")
    marker = tmp_path / "ran"
    result = jobwrap("run", "--", "touch", str(marker))
    assert result.returncode == 2
    lines = result.stderr.decode().splitlines()
    assert len(lines) == 1 and "not valid TOML" in lines[0]
    assert not marker.exists()


def test_jobwrap_config_variable_names_the_user_file(tmp_path):
    custom = write(tmp_path / "custom.toml", '[run]\ntimeout = "7m"\n')
    result = jobwrap("config", "--json", env={"JOBWRAP_CONFIG": str(custom)})
    rows = {r["name"]: r for r in json.loads(result.stdout)["settings"]}
    assert rows["timeout"]["value"] == 420 and rows["timeout"]["shown"] == "7m"
    assert str(custom) in rows["timeout"]["source"]
    missing = jobwrap("config", env={"JOBWRAP_CONFIG": str(tmp_path / "nope.toml")})
    assert missing.returncode == 2 and b"does not exist" in missing.stderr


def test_monitor_section_supplies_metas_and_timeout_to_a_short_crontab_line(user_file, tmp_path):
    write(user_file, '[monitors.backup]\ntimeout = "0.5s"\n'
                     '[monitors.backup.meta]\nrows = "processed (\\\\d+) rows"\n'
                     '[monitors.backup.count]\nerrors = "ERROR"\n')
    summary = tmp_path / "s.json"
    result = jobwrap("run", "-m", "backup", "--report", "never", "--summary-json", str(summary),
                     "--", "sh", "-c", "echo processed 7 rows; echo ERROR; sleep 5")
    assert result.returncode == 124
    metas = {m["name"]: m["value"] for m in json.loads(summary.read_text())["metas"]}
    assert metas["rows"] == "7" and metas["errors"] == "1" and metas["timed_out"] == "true"


def test_flag_meta_overrides_the_sections_meta_of_the_same_name(user_file, tmp_path):
    write(user_file, '[monitors.backup.meta]\nrows = "never matches"\n')
    summary = tmp_path / "s.json"
    jobwrap("run", "-m", "backup", "--report", "never", "--meta", "rows=(\\d+)",
            "--summary-json", str(summary), "--", "echo", "5")
    metas = {m["name"]: m["value"] for m in json.loads(summary.read_text())["metas"]}
    assert metas["rows"] == "5"


def test_config_command_shows_sources_and_masks_the_token(user_file):
    write(user_file, f'[idlemon]\ntoken = "{TOKEN}"\n')
    result = jobwrap("config")
    text = result.stdout.decode()
    assert TOKEN not in text
    token_line = next(line for line in text.splitlines() if line.startswith("idlemon_token"))
    assert mask(TOKEN) in token_line and str(user_file) in token_line
    assert "default" in text


def test_durations():
    assert parse_duration("90") == 90
    assert parse_duration("1h30m") == 5400
    assert parse_duration("250ms") == 0.25
    for bad in ("", "1x", "-5", "0", "m", "1h 2m x"):
        with pytest.raises(UsageError):
            parse_duration(bad)


@pytest.fixture
def idlemon():
    with IdlemonServer() as server:
        yield server


def test_status_shows_project_monitors_and_local_runs(idlemon, monkeypatch):
    monkeypatch.setenv("JOBWRAP_IDLEMON_URL", idlemon.api_url)
    monkeypatch.setenv("JOBWRAP_IDLEMON_TOKEN", TOKEN)
    monkeypatch.setenv("JOBWRAP_IDLEMON_PROJECT", PROJECT_ID)
    jobwrap("run", "-m", "bar", "--", "true")
    jobwrap("run", "-m", "local-only", "--", "sh", "-c", "exit 3")
    result = jobwrap("status")
    assert result.returncode == 0, result.stderr
    text = result.stdout.decode()
    assert text.startswith("project Foo\n")
    bar = next(line for line in text.splitlines() if line.startswith("bar "))
    assert "active" in bar and "60m" in bar and "ok" in bar
    assert "IDLE" in next(line for line in text.splitlines() if line.startswith("backup job/1"))
    local = next(line for line in text.splitlines() if line.startswith("local-only"))
    assert "not in project" in local and "exit 3" in local
    data = json.loads(jobwrap("status", "--json").stdout)
    bar_json = next(m for m in data["monitors"] if m["slug"] == "bar")
    assert bar_json["interval_min"] == 60 and bar_json["last_exit_code"] == 0


def test_status_without_token_shows_local_runs_and_says_why():
    jobwrap("run", "-m", "x", "--", "true")
    result = jobwrap("status")
    assert result.returncode == 1
    row = next(line for line in result.stdout.decode().splitlines() if line.startswith("x "))
    assert row.split()[1] == "-"  # no project was read: whether x is in it is unknown
    assert b"no Idlemon token" in result.stdout


def test_doctor_all_good_then_each_problem(idlemon, monkeypatch, user_file):
    monkeypatch.setenv("JOBWRAP_IDLEMON_URL", idlemon.api_url)
    monkeypatch.setenv("JOBWRAP_IDLEMON_TOKEN", TOKEN)
    monkeypatch.setenv("JOBWRAP_IDLEMON_PROJECT", PROJECT_ID)
    write(user_file, "[monitors.bar]\n")
    result = jobwrap("doctor")
    assert result.returncode == 0, result.stdout
    assert all(line.startswith("ok") for line in result.stdout.decode().splitlines())
    write(user_file, "[monitors.bar]\n[monitors.typo]\n")
    result = jobwrap("doctor")
    assert result.returncode == 1
    assert b"FAIL  no Idlemon monitor with slug 'typo'" in result.stdout
    result = jobwrap("doctor", env={"JOBWRAP_IDLEMON_TOKEN": "f" * 32})
    assert result.returncode == 1 and b"rejected the API token" in result.stdout
    result = jobwrap("doctor", env={"JOBWRAP_IDLEMON_TOKEN": ""})
    assert b"FAIL  no Idlemon token" in result.stdout


@pytest.mark.parametrize("token", ["SECRETabc\u20acdef", "SECRET abc", "SECRET\tabc"])
def test_a_malformed_token_never_stops_the_run_and_is_never_shown(tmp_path, token):
    marker = tmp_path / "ran"
    result = jobwrap("run", "-m", "x", "--", "touch", str(marker),
                     env={"JOBWRAP_IDLEMON_TOKEN": token})
    assert result.returncode == 0 and marker.exists()
    assert b"printable ASCII" in result.stderr
    assert b"SECRET" not in result.stderr
    secret = write(tmp_path / "token", "SECRET\u20ac\n")
    result = jobwrap("doctor", env={"JOBWRAP_IDLEMON_TOKEN_FILE": str(secret)})
    assert result.returncode == 1 and b"SECRET" not in result.stdout + result.stderr
    assert b"FAIL  Idlemon: the secret in" in result.stdout


def test_a_sections_meta_and_count_may_not_share_a_name(user_file, tmp_path):
    write(user_file, '[monitors.b.meta]\nx = "a"\n[monitors.b.count]\nx = "b"\n')
    marker = tmp_path / "ran"
    result = jobwrap("run", "-m", "b", "--", "touch", str(marker))
    assert result.returncode == 2 and b"'x' is given twice" in result.stderr
    assert not marker.exists()


# Typed settings ------------------------------------------------------------------------------


def test_settings_are_a_frozen_typed_record():
    import dataclasses

    from jobwrap.config.settings import Settings
    from jobwrap.config.table import SETTINGS

    r = resolve({"timeout": "2m", "report": "ALWAYS"}, {}, [])
    assert isinstance(r, Settings) and r.timeout == 120.0 and r.report == "always"
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.timeout = 1  # type: ignore[misc]
    names = {f.name for f in dataclasses.fields(Settings)}
    assert {s.name for s in SETTINGS} <= names


def test_every_run_option_maps_to_a_setting():
    from jobwrap.cli.run import run
    from jobwrap.config.table import SETTINGS

    # cron_slot and run_id are internal: jobwrap cron passes them (cron/launch.py, instances.py)
    handled_by_run = {"command", "metas", "counts", "summary_json", "dry_run",
                      "cron_slot", "run_id"}
    settings = {s.name for s in SETTINGS}
    params = {p.name for p in run.params}
    assert params - handled_by_run <= settings, params - handled_by_run - settings


def test_an_unknown_flag_fails_loudly_instead_of_being_ignored():
    with pytest.raises(ValueError, match="timeoutt"):
        resolve({"timeoutt": "1m"}, {}, [])


def test_one_true_false_word_list_for_flags_files_env_and_locks():
    from jobwrap.config.values import FALSE_WORDS, TRUE_WORDS, parse_bool, parse_require_up
    from jobwrap.run.options import _lock_name

    for word in TRUE_WORDS:
        assert parse_bool(word.upper()) is True
        assert parse_require_up(word) == "on"
        assert _lock_name(word, "m", ("x",), None) == "m"
    for word in FALSE_WORDS:
        assert parse_bool(word) is False
        assert parse_require_up(word) == "off"
        assert _lock_name(word, "m", ("x",), None) is None


def test_per_monitor_settings_come_from_the_files_already_read(user_file):
    from jobwrap.config.files import load_files

    write(user_file, '[run]\ntimeout = "1m"\n[monitors.a]\ntimeout = "2m"\ninterval = 5\n')
    env = {"XDG_CONFIG_HOME": str(user_file.parent.parent), "JOBWRAP_SYSTEM_CONFIG": "/nonexistent"}
    base = resolve({}, env, load_files(env))
    user_file.unlink()  # a second read would now find nothing
    assert base.configured_monitors() == ["a"]
    each = base.for_monitor("a")
    assert (each.timeout, each.interval, base.timeout) == (120.0, 5, 60.0)


def test_config_describe_returns_data():
    from jobwrap.config.view import ConfigRow, describe

    rows = describe(resolve({}, {"JOBWRAP_IDLEMON_TOKEN": TOKEN}, []))
    assert all(isinstance(r, ConfigRow) for r in rows)
    token = next(r for r in rows if r.name == "idlemon_token")
    assert token.value == mask(TOKEN) and token.source == "env JOBWRAP_IDLEMON_TOKEN"


def test_one_token_rule_for_config_and_both_clients():
    from jobwrap.idlemon.client import check_token_format
    from jobwrap.promonitor.client import check_key_format

    for bad in ("ab cd", "ab\u20accd", "ab\x00cd", ""):
        r = resolve({}, {"JOBWRAP_IDLEMON_TOKEN": bad or " "}, [])
        assert r.idlemon_token is None and "idlemon_token" in r.problems
        for check in (check_token_format, check_key_format):
            with pytest.raises(ConfigError) as caught:
                check(bad)
            message = str(caught.value)
            assert ("printable ASCII" in message) or ("empty" in message)
