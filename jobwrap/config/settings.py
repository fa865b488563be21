"""Settings: where each value comes from, declared once, resolved once per command.

Precedence, highest first::

    command-line flag > environment variable > user file > system file > built-in default

Within the files, a monitor's own section (``[monitors.SLUG]``) beats the file's general
sections, so a crontab line can be as short as ``jobwrap run -m backup -- backup.sh``:
user ``[monitors.SLUG]`` > system ``[monitors.SLUG]`` > user general > system general.

Files: the system file ``/etc/jobwrap/config.toml`` (``$JOBWRAP_SYSTEM_CONFIG`` moves it) and the
user file ``$JOBWRAP_CONFIG``, else ``$XDG_CONFIG_HOME/jobwrap/config.toml``, else
``~/.config/jobwrap/config.toml``.  Secrets may also come from a file named by ``*_TOKEN_FILE`` /
``token_file`` (systemd credentials, Kubernetes secrets).

Two kinds of bad value.  One in *what to run* (a duration, a policy, a slug, a path, a file that
is not valid TOML) is a UsageError/ConfigError: the command stops before it starts.  One in
*where to report* (a token, a token file, a URL, the ProMonitor budget) never stops anything:
it lands in :attr:`Settings.problems`, the service it belongs to is off for this command, and
the command says so in one line (the run keeps its report for ``jobwrap flush``).

Each setting is declared in :mod:`jobwrap.config.table`; the files are read and checked by
:mod:`jobwrap.config.files`; this module applies the precedence and describes the result.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from jobwrap.config.files import (
    ConfigFile,
    default_state_dir,
    load_files,
    read_secret,
)
from jobwrap.config.files import warn_if_readable as _warn_if_readable
from jobwrap.config.table import IDLEMON as IDLEMON
from jobwrap.config.table import PROMONITOR as PROMONITOR
from jobwrap.config.table import SECRET_ENV, SETTINGS
from jobwrap.config.values import (
    OutputMode,
    ReportPolicy,
    RequireUp,
)
from jobwrap.errors import ConfigError, JobwrapError, UsageError


@dataclass(frozen=True)
class Settings:
    """The effective settings of one command, with where each came from (``sources``)."""

    monitor: str | None
    state_dir: Path
    timeout: float | None
    kill_after: float
    capture: bool
    report: ReportPolicy
    report_timeout: float
    schedule: str | None
    interval: int | None
    lock: str | None
    lock_wait: float | None
    keep_secrets_env: bool
    idlemon_url: str
    idlemon_token: str | None
    idlemon_project: str | None
    promonitor_url: str
    promonitor_token: str | None
    promonitor_rpm: int
    promonitor: str | None
    require_up: RequireUp | None
    skipped_exit: int
    lock_url: str | None
    lock_password: str | None
    lock_lease: float
    lock_unavailable: Literal["skip", "run"]
    on_failure: str | None
    on_success: str | None
    hook_timeout: float
    output: OutputMode
    metrics_dir: Path | None
    sources: Mapping[str, str] = field(default_factory=dict)
    metas: Mapping[str, str] = field(default_factory=dict)  # from the monitor's section
    counts: Mapping[str, str] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    problems: Mapping[str, str] = field(default_factory=dict)  # name → why it is unusable
    files: tuple[ConfigFile, ...] = field(default=(), repr=False, compare=False)
    env: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)

    def problem(self, service: str) -> str | None:
        """Why ``service`` (IDLEMON or PROMONITOR) cannot be used, or None."""
        return next((self.problems[s.name] for s in SETTINGS
                     if s.service == service and s.name in self.problems), None)

    def for_monitor(self, slug: str) -> Settings:
        """A monitor's settings, from the files already loaded (they are not read again)."""
        return resolve({"monitor": slug}, self.env, list(self.files))

    def configured_monitors(self) -> list[str]:
        """Slugs that have a [monitors.SLUG] section in any config file."""
        return sorted({slug for f in self.files for slug in f.data.get("monitors", {})})


_SETTING_FIELDS = frozenset(f.name for f in fields(Settings)) & frozenset(s.name for s in SETTINGS)


def resolve(
    flags: Mapping[str, Any],
    env: Mapping[str, str] | None = None,
    files: list[ConfigFile] | None = None,
) -> Settings:
    """Apply the precedence to every setting.  ``flags`` holds only flags given (not None);
    a name that is no setting is a bug in the caller, and fails loudly (ValueError)."""
    unknown = set(flags) - _SETTING_FIELDS
    if unknown:
        raise ValueError(f"no such setting: {', '.join(sorted(unknown))}")
    env = os.environ if env is None else env
    files = load_files(env) if files is None else files
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    warnings: list[str] = []
    problems: dict[str, str] = {}
    for setting in SETTINGS:
        try:
            value, source = _lookup(setting, flags, env, files, values.get("monitor"), warnings)
        except JobwrapError as exc:
            if setting.service is None:
                raise
            value, source = setting.default, "unusable"
            problems[setting.name] = str(exc)
        values[setting.name] = value
        sources[setting.name] = source
    if values["state_dir"] is None:
        values["state_dir"] = _default_state_dir(env)
        if env.get("XDG_STATE_HOME"):
            sources["state_dir"] = "env XDG_STATE_HOME"
    metas, counts = _monitor_patterns(files, values["monitor"])
    return Settings(**values, sources=sources, metas=metas, counts=counts,
                    warnings=tuple(warnings), problems=problems, files=tuple(files), env=env)


def _default_state_dir(env: Mapping[str, str]) -> Path:
    try:
        return default_state_dir(env)
    except RuntimeError:  # no home directory to put it in
        raise ConfigError("cannot find the home directory for the state dir: set "
                          "JOBWRAP_STATE_DIR") from None


def _lookup(setting, flags, env, files, monitor, warnings) -> tuple[Any, str]:
    what = setting.name.replace("_", "-")
    if flags.get(setting.name) is not None:
        return setting.parse(flags[setting.name], "--" + what), "flag --" + what
    if setting.env and env.get(setting.env):
        return setting.parse(env[setting.env], f"${setting.env}"), "env " + setting.env
    if setting.secret and setting.env and env.get(setting.env + "_FILE"):
        path = Path(env[setting.env + "_FILE"])
        return read_secret(path, warnings), f"file {path} (${setting.env}_FILE)"
    for scope in _file_scopes(setting, files, monitor):
        found = _from_file(setting, scope, warnings, what)
        if found is not None:
            return found
    return setting.default, "default"


def _file_scopes(setting, files, monitor) -> Iterator[tuple[ConfigFile, str, Mapping]]:
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
    file_key = key + "_file"
    if setting.secret and file_key in table:
        path = Path(str(table[file_key]))
        return read_secret(path, warnings), f"file {path} ({where} {file_key})"
    return None


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


def child_environment(settings: Settings) -> dict[str, str] | None:
    """The wrapped command's environment: jobwrap's, without its secrets (None: unchanged)."""
    if settings.keep_secrets_env or not any(name in settings.env for name in SECRET_ENV):
        return None
    return {k: v for k, v in settings.env.items() if k not in SECRET_ENV}


def mask(secret: str | None) -> str:
    """Show that a secret is set without showing it (the same rule as request dumps)."""
    if not secret:
        return "(not set)"
    from jobwrap.net.masking import mask_secret

    return mask_secret(secret)
