"""The files settings come from: the TOML config files and the secret (token) files.

Every read is bounded and never blocks: a path that names ``/dev/zero``, a FIFO or a
directory is one clear ConfigError, as is a file larger than the limit.  A config file's
sections and keys are checked against the settings table when it is loaded.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jobwrap.config.table import SETTINGS
from jobwrap.errors import ConfigError, UsageError

SYSTEM_FILE = Path("/etc/jobwrap/config.toml")
CONFIG_LIMIT = 1024 * 1024  # a config file or a crontab: far more than any real one
SECRET_LIMIT = 64 * 1024


@dataclass(frozen=True)
class ConfigFile:
    path: Path
    data: Mapping[str, Any]


def user_file(env: Mapping[str, str]) -> Path:
    if env.get("JOBWRAP_CONFIG"):
        return Path(env["JOBWRAP_CONFIG"])
    base = env.get("XDG_CONFIG_HOME") or str(_home(env) / ".config")
    return Path(base) / "jobwrap" / "config.toml"


def _home(env: Mapping[str, str]) -> Path:
    try:
        return Path.home()
    except RuntimeError:  # no $HOME and no passwd entry: a container's odd uid
        raise ConfigError("cannot find the home directory: set HOME or JOBWRAP_CONFIG")\
            from None


def system_file(env: Mapping[str, str]) -> Path:
    return Path(env.get("JOBWRAP_SYSTEM_CONFIG") or SYSTEM_FILE)


def read_bounded(path: Path, what: str, limit: int = CONFIG_LIMIT) -> bytes:
    """A regular file's bytes (at most ``limit``).  FileNotFoundError passes through; every
    other problem is a ConfigError naming ``what`` and the path."""
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror}") from None
    except ValueError:  # a NUL in the path
        raise ConfigError(f"cannot read {what} {path!r}: bad path") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ConfigError(f"cannot read {what} {path}: not a regular file")
        chunks = []
        size = 0
        while size <= limit:
            chunk = os.read(fd, min(65536, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror}") from None
    finally:
        os.close(fd)
    if size > limit:
        raise ConfigError(f"{what} {path} is larger than {limit // 1024} KiB")
    return b"".join(chunks)


def read_toml(path: Path, required: bool = False) -> ConfigFile | None:
    """Read one TOML file; a missing optional file is None, a broken one a ConfigError."""
    try:
        raw = read_bounded(path, "config file")
    except FileNotFoundError:
        if required:
            raise ConfigError(f"config file {path} does not exist") from None
        return None
    import tomllib

    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    except RecursionError:
        raise ConfigError(f"config file {path} is not valid TOML: nested too deeply") from None
    return ConfigFile(path, data)


def read_secret(path: Path, warnings: list[str]) -> str:
    """The token in a secret file (its surrounding whitespace dropped); ConfigError if the
    file cannot be read or holds something no token looks like."""
    from jobwrap.config.values import check_token

    try:
        value = read_bounded(path, "the secret file", SECRET_LIMIT).decode("utf-8").strip()
    except FileNotFoundError:
        raise ConfigError(f"cannot read the secret file {path}: no such file") from None
    except UnicodeDecodeError:
        raise ConfigError(f"the secret in {path} is not UTF-8 text") from None
    try:
        value = check_token(value, f"the secret in {path}")
    except UsageError as exc:
        raise ConfigError(str(exc)) from None
    warn_if_readable(path, warnings)
    return value


def warn_if_readable(path: Path, warnings: list[str]) -> None:
    try:
        mode = path.stat().st_mode
    except (OSError, ValueError):
        return
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        warnings.append(
            f"{path} holds a token and is readable by group or others: chmod 600 {path}"
        )


def default_state_dir(env: Mapping[str, str] = os.environ) -> Path:
    """Where the state lives when nothing says otherwise (``JOBWRAP_STATE_DIR`` and the config
    files are config's business): ``$XDG_STATE_HOME/jobwrap``, else the user's or root's."""
    if env.get("XDG_STATE_HOME"):
        return Path(env["XDG_STATE_HOME"]) / "jobwrap"
    if os.geteuid() == 0:
        return Path("/var/lib/jobwrap")
    return Path.home() / ".local" / "state" / "jobwrap"


def load_file(path: Path, required: bool = False) -> ConfigFile | None:
    """Read one config file and check its sections and keys; None if optional and missing."""
    loaded = read_toml(path, required)
    if loaded is not None:
        _check_shape(path, loaded.data)
    return loaded


_SECTIONS = {"run", "idlemon", "promonitor", "lock", "monitors"}


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
        if s.file_key:  # a secret may instead be read from a file: token_file, password_file
            suffixes = ("", "_file") if s.secret else ("",)
            known_keys[s.file_key[0]].update(s.file_key[1] + x for x in suffixes)
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
