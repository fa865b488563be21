"""Settings: where each value comes from, declared once.

Precedence, highest first::

    command-line flag > environment variable > user file > system file > built-in default

Within the files, a monitor's own section (``[monitors.SLUG]``) beats the file's general
sections, so a crontab line can be as short as ``jobwrap run -m backup -- backup.sh``:
user ``[monitors.SLUG]`` > system ``[monitors.SLUG]`` > user general > system general.

Files: the system file ``/etc/jobwrap/config.toml`` (``$JOBWRAP_SYSTEM_CONFIG`` moves it) and the
user file ``$JOBWRAP_CONFIG``, else ``$XDG_CONFIG_HOME/jobwrap/config.toml``, else
``~/.config/jobwrap/config.toml``.  Secrets may also come from a file named by ``*_TOKEN_FILE`` /
``token_file`` (systemd credentials, Kubernetes secrets).
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jobwrap.errors import ConfigError, UsageError

SYSTEM_FILE = Path("/etc/jobwrap/config.toml")
SLUG_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}\Z")
_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
REPORT_POLICIES = ("success", "always", "never")
OUTPUT_MODES = ("live", "on-failure")


def parse_duration(text: object, what: str = "duration") -> float:
    """``90``, ``90s``, ``5m``, ``1h30m``, ``250ms`` → seconds (> 0).  UsageError otherwise."""
    if isinstance(text, bool):
        raise UsageError(f"bad {what} {text!r}")
    if isinstance(text, int | float):
        seconds = float(text)
    else:
        raw = str(text).strip().lower()
        if re.fullmatch(r"\d+(?:\.\d+)?", raw):
            seconds = float(raw)
        elif raw and _DURATION_RE.sub("", raw) == "":
            seconds = sum(float(n) * _UNITS[u] for n, u in _DURATION_RE.findall(raw))
        else:
            raise UsageError(
                f"bad {what} {text!r}: use seconds or units like 90s, 5m, 1h30m, 250ms"
            )
    if not 0 < seconds < 10 * 365 * 86400:
        raise UsageError(f"bad {what} {text!r}: it must be positive")
    return seconds


def parse_bool(text: object, what: str = "value") -> bool:
    if isinstance(text, bool):
        return text
    raw = str(text).strip().lower()
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise UsageError(f"bad {what} {text!r}: use true or false")


def parse_slug(text: object, what: str = "monitor slug") -> str:
    raw = str(text).strip()
    if not SLUG_RE.match(raw):
        raise UsageError(f"bad {what} {text!r}: letters, digits, '-', '_' and '.' only")
    return raw


def parse_policy(text: object, what: str = "report policy") -> str:
    raw = str(text).strip().lower()
    if raw not in REPORT_POLICIES:
        raise UsageError(f"bad {what} {text!r}: choose success, always or never")
    return raw


def parse_output_mode(text: object, what: str = "output") -> str:
    raw = str(text).strip().lower().replace("_", "-")
    if raw not in OUTPUT_MODES:
        raise UsageError(f"bad {what} {text!r}: choose live or on-failure")
    return raw


def parse_positive_int(text: object, what: str = "number") -> int:
    try:
        value = int(str(text).strip())
    except ValueError:
        raise UsageError(f"bad {what} {text!r}: a whole number is needed") from None
    if value <= 0:
        raise UsageError(f"bad {what} {text!r}: it must be positive")
    return value


def _text(text: object, what: str = "value") -> str:
    return str(text).strip()


def _require_up(text: object, what: str = "require-up") -> str:
    if isinstance(text, bool):
        return "on" if text else "off"
    raw = str(text).strip().lower()
    aliases = {"true": "on", "yes": "on", "1": "on", "false": "off", "no": "off", "0": "off"}
    raw = aliases.get(raw, raw)
    if raw not in ("off", "on", "strict"):
        raise UsageError(f"bad {what} {text!r}: use on, off or strict")
    return raw


def _exit_code(text: object, what: str = "exit code") -> int:
    try:
        value = int(str(text).strip())
    except ValueError:
        raise UsageError(f"bad {what} {text!r}: a number from 0 to 255") from None
    if not 0 <= value <= 255:
        raise UsageError(f"bad {what} {text!r}: a number from 0 to 255")
    return value


_TOKEN_RE = re.compile(r"[!-~]+\Z")  # printable ASCII, no spaces: what an HTTP header can carry


def _token(text: object, what: str = "token") -> str:
    """A secret: checked here, before the command starts, and never shown in the message."""
    raw = str(text).strip()
    if not raw:
        raise UsageError(f"{what} is empty")
    if not _TOKEN_RE.match(raw):
        raise UsageError(f"{what} holds a space or a character outside printable ASCII: "
                         "check for a stray character")
    return raw


def _path(text: object, what: str = "path") -> Path:
    raw = str(text).strip()
    if not raw:
        raise UsageError(f"bad {what}: empty path")
    return Path(raw).expanduser()


@dataclass(frozen=True)
class Setting:
    """One setting: its env variable, its place in the files, its default and its parser."""

    name: str
    env: str | None
    file_key: tuple[str, str] | None  # (general section, key); None: not in files
    default: Any
    parse: Callable[..., Any]
    per_monitor: bool = False  # may also appear in [monitors.SLUG]
    secret: bool = False


SETTINGS: tuple[Setting, ...] = (
    Setting("monitor", "JOBWRAP_MONITOR", None, None, parse_slug),
    Setting("state_dir", "JOBWRAP_STATE_DIR", ("run", "state_dir"), None, _path),
    Setting("timeout", None, ("run", "timeout"), None, parse_duration, per_monitor=True),
    Setting("kill_after", None, ("run", "kill_after"), 10.0, parse_duration, per_monitor=True),
    Setting("capture", None, ("run", "capture"), True, parse_bool, per_monitor=True),
    Setting("report", "JOBWRAP_REPORT", ("run", "report"), "success", parse_policy,
            per_monitor=True),
    Setting("report_timeout", None, ("run", "report_timeout"), 30.0, parse_duration,
            per_monitor=True),
    Setting("schedule", None, None, None, _text, per_monitor=True),
    Setting("interval", None, None, None, parse_positive_int, per_monitor=True),
    Setting("lock", None, None, None, _text, per_monitor=True),
    Setting("lock_wait", None, None, None, parse_duration, per_monitor=True),
    Setting("idlemon_url", "JOBWRAP_IDLEMON_URL", ("idlemon", "url"),
            "https://www.idlemon.net/api", _text),
    Setting("idlemon_token", "JOBWRAP_IDLEMON_TOKEN", ("idlemon", "token"), None, _token,
            secret=True, per_monitor=True),
    Setting("idlemon_project", "JOBWRAP_IDLEMON_PROJECT", ("idlemon", "project"), None, _text),
    Setting("promonitor_url", "JOBWRAP_PROMONITOR_URL", ("promonitor", "url"),
            "https://promonitor.eu", _text),
    Setting("promonitor_token", "JOBWRAP_PROMONITOR_TOKEN", ("promonitor", "token"), None,
            _token, secret=True),
    Setting("promonitor_rpm", "JOBWRAP_PROMONITOR_RPM", ("promonitor", "requests_per_minute"),
            2, parse_positive_int),
    Setting("promonitor", None, None, None, _text, per_monitor=True),
    Setting("require_up", None, None, None, _require_up, per_monitor=True),
    Setting("skipped_exit", None, ("run", "skipped_exit"), 75, _exit_code, per_monitor=True),
    Setting("on_failure", None, ("run", "on_failure"), None, _text, per_monitor=True),
    Setting("on_success", None, ("run", "on_success"), None, _text, per_monitor=True),
    Setting("hook_timeout", None, ("run", "hook_timeout"), 60.0, parse_duration,
            per_monitor=True),
    Setting("output", None, ("run", "output"), "live", parse_output_mode, per_monitor=True),
    Setting("metrics_dir", "JOBWRAP_METRICS_DIR", ("run", "metrics_dir"), None, _path,
            per_monitor=True),
)


@dataclass(frozen=True)
class Resolved:
    """Effective settings: ``values[name]`` and where each came from, ``sources[name]``."""

    values: Mapping[str, Any]
    sources: Mapping[str, str]
    metas: Mapping[str, str] = field(default_factory=dict)  # from the monitor's section
    counts: Mapping[str, str] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()

    def __getitem__(self, name: str) -> Any:
        return self.values[name]


@dataclass(frozen=True)
class ConfigFile:
    path: Path
    data: Mapping[str, Any]


def user_file(env: Mapping[str, str]) -> Path:
    if env.get("JOBWRAP_CONFIG"):
        return Path(env["JOBWRAP_CONFIG"])
    base = env.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "jobwrap" / "config.toml"


def system_file(env: Mapping[str, str]) -> Path:
    return Path(env.get("JOBWRAP_SYSTEM_CONFIG") or SYSTEM_FILE)


def load_file(path: Path, required: bool = False) -> ConfigFile | None:
    """Read one TOML file; a missing optional file is None, a broken one a ConfigError."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        if required:
            raise ConfigError(f"config file {path} does not exist") from None
        return None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    import tomllib

    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    _check_shape(path, data)
    return ConfigFile(path, data)


_SECTIONS = {"run", "idlemon", "promonitor", "monitors"}


def _check_shape(path: Path, data: Mapping[str, Any]) -> None:
    unknown = set(data) - _SECTIONS
    if unknown:
        raise ConfigError(
            f"config file {path}: unknown section [{sorted(unknown)[0]}] "
            f"(known: {', '.join(sorted(_SECTIONS))})"
        )
    for name in _SECTIONS:
        if name in data and not isinstance(data[name], dict):
            raise ConfigError(f"config file {path}: [{name}] must be a table")
    known_keys: dict[str, set[str]] = {s.file_key[0]: set() for s in SETTINGS if s.file_key}
    for s in SETTINGS:
        if s.file_key:
            known_keys[s.file_key[0]].add(s.file_key[1])
    for section in ("idlemon", "promonitor"):
        known_keys[section].add("token_file")
    for section, keys in known_keys.items():
        extra = set(data.get(section, {})) - keys
        if extra:
            raise ConfigError(
                f"config file {path}: unknown key {sorted(extra)[0]!r} in [{section}]"
            )
    monitor_keys = {s.name for s in SETTINGS if s.per_monitor} | {"meta", "count"}
    monitor_keys |= {s.name + "_file" for s in SETTINGS if s.per_monitor and s.secret}
    for slug, section in data.get("monitors", {}).items():
        if not isinstance(section, dict):
            raise ConfigError(f"config file {path}: [monitors.{slug}] must be a table")
        extra = set(section) - monitor_keys
        if extra:
            raise ConfigError(
                f"config file {path}: unknown key {sorted(extra)[0]!r} in [monitors.{slug}]"
            )


def load_files(env: Mapping[str, str]) -> list[ConfigFile]:
    """The config files that exist, highest precedence first (user, then system)."""
    files = [load_file(user_file(env), required=bool(env.get("JOBWRAP_CONFIG")))]
    files.append(load_file(system_file(env)))
    return [f for f in files if f is not None]


def resolve(
    flags: Mapping[str, Any],
    env: Mapping[str, str] | None = None,
    files: list[ConfigFile] | None = None,
) -> Resolved:
    """Apply the precedence to every setting.  ``flags`` holds only flags given (not None)."""
    env = os.environ if env is None else env
    files = load_files(env) if files is None else files
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    warnings: list[str] = []
    for setting in SETTINGS:
        value, source = _lookup(setting, flags, env, files, values.get("monitor"), warnings)
        values[setting.name] = value
        sources[setting.name] = source
    if values["state_dir"] is None:
        from jobwrap.store.history import default_state_dir

        values["state_dir"] = default_state_dir(env)
    metas, counts = _monitor_patterns(files, values["monitor"])
    return Resolved(values, sources, metas, counts, tuple(warnings))


def _lookup(setting, flags, env, files, monitor, warnings) -> tuple[Any, str]:
    what = setting.name.replace("_", "-")
    if flags.get(setting.name) is not None:
        return setting.parse(flags[setting.name], "--" + what), "flag --" + what
    if setting.env and env.get(setting.env):
        return setting.parse(env[setting.env], f"${setting.env}"), "env " + setting.env
    if setting.secret and setting.env and env.get(setting.env + "_FILE"):
        path = Path(env[setting.env + "_FILE"])
        return _read_secret(path, warnings), f"file {path} (${setting.env}_FILE)"
    for scope in _file_scopes(setting, files, monitor):
        found = _from_file(setting, scope, warnings, what)
        if found is not None:
            return found
    return setting.default, "default"


def _file_scopes(setting, files, monitor):
    """(file, section name, table) in precedence order for one setting."""
    if setting.per_monitor and monitor:
        for f in files:
            table = f.data.get("monitors", {}).get(monitor)
            if table is not None:
                yield f, f"monitors.{monitor}", table
    if setting.file_key:
        for f in files:
            section = setting.file_key[0]
            if section in f.data:
                yield f, section, f.data[section]


def _from_file(setting, scope, warnings, what):
    f, section, table = scope
    key = setting.name if section.startswith("monitors.") else setting.file_key[1]
    where = f"{f.path} [{section}]"
    if key in table:
        try:
            value = setting.parse(table[key], f"{what} in {where}")
        except UsageError as exc:
            raise ConfigError(str(exc)) from None
        if setting.secret:
            _warn_if_readable(f.path, warnings)
        return value, where
    file_key = key + "_file" if section.startswith("monitors.") else "token_file"
    if setting.secret and file_key in table:
        path = Path(str(table[file_key]))
        return _read_secret(path, warnings), f"file {path} ({where} {file_key})"
    return None


def _read_secret(path: Path, warnings: list[str]) -> str:
    try:
        value = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the secret file {path}: {exc}") from None
    try:
        value = _token(value, f"the secret in {path}")
    except UsageError as exc:
        raise ConfigError(str(exc)) from None
    _warn_if_readable(path, warnings)
    return value


def _warn_if_readable(path: Path, warnings: list[str]) -> None:
    try:
        mode = path.stat().st_mode
    except OSError:
        return
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        warnings.append(
            f"{path} holds a token and is readable by group or others: chmod 600 {path}"
        )


def _monitor_patterns(files, monitor) -> tuple[dict[str, str], dict[str, str]]:
    """The monitor section's ``meta``/``count`` tables; the user file wins per name."""
    metas: dict[str, str] = {}
    counts: dict[str, str] = {}
    if not monitor:
        return metas, counts
    for f in reversed(files):  # system first, so the user file overrides it
        table = f.data.get("monitors", {}).get(monitor, {})
        for key, target in (("meta", metas), ("count", counts)):
            patterns = table.get(key, {})
            if not isinstance(patterns, dict) or not all(
                isinstance(v, str) for v in patterns.values()
            ):
                raise ConfigError(
                    f"{f.path} [monitors.{monitor}] {key} must be a table of NAME = 'REGEX'"
                )
            target.update(patterns)
    return metas, counts


def mask(secret: str | None) -> str:
    """Show that a secret is set without showing it (the same rule as request dumps)."""
    if not secret:
        return "(not set)"
    from jobwrap.net.http import mask_secret

    return mask_secret(secret)


def describe(resolved: Resolved, as_json: bool = False) -> str:
    """The effective settings with their sources; secrets masked."""
    import json

    rows = []
    for setting in SETTINGS:
        value = resolved.values[setting.name]
        shown = mask(value) if setting.secret else ("-" if value is None else str(value))
        rows.append((setting.name, shown, resolved.sources[setting.name]))
    for kind, table in (("meta", resolved.metas), ("count", resolved.counts)):
        for name, pattern in table.items():
            rows.append((f"{kind}.{name}", pattern, "config file"))
    if as_json:
        return json.dumps([{"name": n, "value": v, "source": s} for n, v, s in rows],
                          indent=2) + "\n"
    width = max(len(n) for n, _, _ in rows)
    vwidth = min(48, max(len(v) for _, v, _ in rows))
    return "".join(f"{n.ljust(width)}  {v.ljust(vwidth)}  {s}\n" for n, v, s in rows)


def configured_monitors(env: Mapping[str, str] | None = None) -> list[str]:
    """Slugs that have a [monitors.SLUG] section in any config file."""
    files = load_files(os.environ if env is None else env)
    return sorted({slug for f in files for slug in f.data.get("monitors", {})})
