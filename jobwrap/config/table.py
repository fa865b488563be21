"""The settings table: each setting's env variable, place in the files, default and parser,
declared once (:mod:`jobwrap.config.settings` applies the precedence to it).

A setting with a ``service`` says where to report: a bad value in it is a problem for that
service, never an error that stops the command.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from jobwrap.config.values import (
    OutputMode,
    ReportPolicy,
    check_token,
    parse_bool,
    parse_duration,
    parse_exit_code,
    parse_output_mode,
    parse_path,
    parse_policy,
    parse_positive_int,
    parse_require_up,
    parse_slug,
    parse_text,
    parse_timeout,
    parse_url,
)
from jobwrap.errors import ConfigError, UsageError

IDLEMON = "Idlemon"
PROMONITOR = "ProMonitor"


def _token(text: object, what: str = "token") -> str:
    return check_token(str(text).strip(), what)


def _lock_url(text: object, what: str = "lock URL") -> str:
    from jobwrap.store.fleet import check_url

    raw = str(text).strip()
    if what.startswith("--") and urllib.parse.urlsplit(raw).password:
        raise UsageError("--lock-url holds a password: secrets never go on the command line; "
                         "use $JOBWRAP_LOCK_PASSWORD or [lock] password_file")
    try:
        return check_url(raw)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None


def _masked_url(url: str) -> str:
    from jobwrap.store.fleet import mask_url

    return mask_url(url)


def _lock_unavailable(text: object, what: str = "lock-unavailable") -> Literal["skip", "run"]:
    raw = str(text).strip().lower()
    if raw not in ("skip", "run"):
        raise UsageError(f"bad {what} {text!r}: choose skip (the default) or run")
    return "skip" if raw == "skip" else "run"


@dataclass(frozen=True)
class Setting:
    """One setting: its env variable, its place in the files, its default and its parser.

    ``service``: the setting says where to report; a bad value is a problem, not an error.
    """

    name: str
    env: str | None
    file_key: tuple[str, str] | None  # (general section, key); None: not in files
    default: Any
    parse: Callable[..., Any]
    per_monitor: bool = False  # may also appear in [monitors.SLUG]
    secret: bool = False
    service: str | None = None
    show: Callable[[Any], str] | None = None  # how `jobwrap config` shows it (masking)


SETTINGS: tuple[Setting, ...] = (
    Setting("monitor", "JOBWRAP_MONITOR", None, None, parse_slug),
    Setting("state_dir", "JOBWRAP_STATE_DIR", ("run", "state_dir"), None, parse_path),
    Setting("timeout", None, ("run", "timeout"), None, parse_timeout, per_monitor=True),
    Setting("kill_after", None, ("run", "kill_after"), 10.0, parse_duration, per_monitor=True),
    Setting("capture", None, ("run", "capture"), True, parse_bool, per_monitor=True),
    Setting("report", "JOBWRAP_REPORT", ("run", "report"), ReportPolicy.SUCCESS, parse_policy,
            per_monitor=True),
    Setting("report_timeout", None, ("run", "report_timeout"), 30.0, parse_duration,
            per_monitor=True),
    Setting("schedule", None, None, None, parse_text, per_monitor=True),
    Setting("interval", None, None, None, parse_positive_int, per_monitor=True),
    Setting("lock", None, None, None, parse_text, per_monitor=True),
    Setting("lock_wait", None, None, None, parse_duration, per_monitor=True),
    Setting("keep_secrets_env", "JOBWRAP_KEEP_SECRETS_ENV", ("run", "keep_secrets_env"), False,
            parse_bool, per_monitor=True),
    Setting("idlemon_url", "JOBWRAP_IDLEMON_URL", ("idlemon", "url"),
            "https://www.idlemon.net/api", parse_url, service=IDLEMON),
    Setting("idlemon_token", "JOBWRAP_IDLEMON_TOKEN", ("idlemon", "token"), None, _token,
            secret=True, per_monitor=True, service=IDLEMON),
    Setting("idlemon_project", "JOBWRAP_IDLEMON_PROJECT", ("idlemon", "project"), None,
            parse_text),
    Setting("promonitor_url", "JOBWRAP_PROMONITOR_URL", ("promonitor", "url"),
            "https://promonitor.eu", parse_url, service=PROMONITOR),
    Setting("promonitor_token", "JOBWRAP_PROMONITOR_TOKEN", ("promonitor", "token"), None,
            _token, secret=True, service=PROMONITOR),
    Setting("promonitor_rpm", "JOBWRAP_PROMONITOR_RPM", ("promonitor", "requests_per_minute"),
            2, parse_positive_int, service=PROMONITOR),
    Setting("promonitor", None, None, None, parse_text, per_monitor=True),
    Setting("require_up", None, None, None, parse_require_up, per_monitor=True),
    Setting("skipped_exit", None, ("run", "skipped_exit"), 75, parse_exit_code,
            per_monitor=True),
    Setting("lock_url", "JOBWRAP_LOCK_URL", ("lock", "url"), None, _lock_url,
            show=_masked_url),
    Setting("lock_password", "JOBWRAP_LOCK_PASSWORD", ("lock", "password"), None, _token,
            secret=True),
    Setting("lock_lease", None, ("lock", "lease"), 30.0, parse_duration, per_monitor=True),
    Setting("lock_unavailable", None, ("lock", "unavailable"), "skip", _lock_unavailable,
            per_monitor=True),
    Setting("on_failure", None, ("run", "on_failure"), None, parse_text, per_monitor=True),
    Setting("on_success", None, ("run", "on_success"), None, parse_text, per_monitor=True),
    Setting("hook_timeout", None, ("run", "hook_timeout"), 60.0, parse_duration,
            per_monitor=True),
    Setting("output", None, ("run", "output"), OutputMode.LIVE, parse_output_mode,
            per_monitor=True),
    Setting("metrics_dir", "JOBWRAP_METRICS_DIR", ("run", "metrics_dir"), None, parse_path,
            per_monitor=True),
)
_BY_NAME = {s.name: s for s in SETTINGS}

# Variables the wrapped command never sees (unless keep_secrets_env): jobwrap's secrets and
# the files that hold them.
SECRET_ENV: tuple[str, ...] = tuple(
    name for s in SETTINGS if s.secret and s.env for name in (s.env, s.env + "_FILE")
) + ("JOBWRAP_LOCK_URL",)  # a lock URL may hold a password
