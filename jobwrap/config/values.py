"""Value parsers: text from a flag, a variable or a file → a checked value, else UsageError.

Every parser takes the value and ``what`` (how to name it in the message: ``--timeout``,
``$JOBWRAP_REPORT``, ``timeout in FILE [run]``).  The closed vocabularies live here too, so
the CLI, the files and the crontab directives accept the same words.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path

from jobwrap.errors import UsageError

SLUG_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}\Z")
_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
_MAX_DURATION_S = 10 * 365 * 86400

# The one list of true/false words: flags, variables, config files and crontab directives.
TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS = frozenset({"0", "false", "no", "off"})


class ReportPolicy(StrEnum):
    """Which runs send an Idlemon log."""

    SUCCESS = "success"
    ALWAYS = "always"
    NEVER = "never"


class OutputMode(StrEnum):
    """Where the command's output goes: through at once, or held and shown only on failure."""

    LIVE = "live"
    ON_FAILURE = "on-failure"


class RequireUp(StrEnum):
    """Whether a down (or unknown) ProMonitor dependency keeps the job from starting."""

    OFF = "off"
    ON = "on"
    STRICT = "strict"


class Overlap(StrEnum):
    """What ``jobwrap cron`` does when a job is due while its previous run still runs."""

    SKIP = "skip"
    ALLOW = "allow"
    REPLACE = "replace"


def bool_word(text: object) -> bool | None:
    """True or False for a true/false word (or a bool), None for anything else."""
    if isinstance(text, bool):
        return text
    raw = str(text).strip().lower()
    if raw in TRUE_WORDS:
        return True
    if raw in FALSE_WORDS:
        return False
    return None


def parse_bool(text: object, what: str = "value") -> bool:
    value = bool_word(text)
    if value is None:
        raise UsageError(f"bad {what} {text!r}: use true or false")
    return value


def parse_duration(text: object, what: str = "duration") -> float:
    """``90``, ``90s``, ``5m``, ``1h30m``, ``250ms`` → seconds (> 0).  UsageError otherwise."""
    if isinstance(text, bool):
        raise UsageError(f"bad {what} {text!r}")
    if isinstance(text, int | float):
        seconds = float(text)
    else:
        raw = str(text).strip().lower()
        if re.fullmatch(r"\d{1,12}(?:\.\d{1,12})?", raw):
            seconds = float(raw)
        elif raw and len(raw) <= 100 and _DURATION_RE.sub("", raw) == "":
            seconds = sum(float(n) * _UNITS[u] for n, u in _DURATION_RE.findall(raw))
        else:
            raise UsageError(
                f"bad {what} {text!r}: use seconds or units like 90s, 5m, 1h30m, 250ms"
            )
    if not 0 < seconds < _MAX_DURATION_S:  # also rejects nan and inf
        raise UsageError(f"bad {what} {text!r}: it must be positive and under ten years")
    return seconds


def parse_timeout(text: object, what: str = "timeout") -> float:
    """A duration, or ``0`` / ``off``: no timeout (``--timeout 0`` turns a configured timeout
    off for one run, as GNU timeout's 0 does).  0.0 stands for "none"."""
    if isinstance(text, int | float) and not isinstance(text, bool) and text == 0:
        return 0.0
    if isinstance(text, str) and text.strip().lower() in ("0", "0s", "off", "none"):
        return 0.0
    return parse_duration(text, what)


def format_duration(seconds: float) -> str:
    """Seconds as a person writes them, and :func:`parse_duration` reads back: ``1h``,
    ``1h30m``, ``90s`` stays ``1m30s``, ``0.25`` → ``250ms``."""
    if seconds < 1 or seconds != int(seconds):
        ms = round(seconds * 1000)
        if ms % 1000:
            return f"{int(seconds) * 1000 + ms % 1000 if seconds >= 1 else ms}ms"
    left = int(round(seconds))
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if left >= size:
            parts.append(f"{left // size}{unit}")
            left %= size
    return "".join(parts) or "0s"


def parse_since(text: object, now: datetime | None = None) -> datetime:
    """``--since``: a duration back from now (``36h``, ``7d``) or an ISO date or date-time
    (without an offset: local time) → an aware datetime.  UsageError otherwise."""
    raw = str(text).strip()
    now = now or datetime.now(UTC)
    if not re.fullmatch(r"\d{4}-.*", raw):
        return now - timedelta(seconds=parse_duration(raw, "--since"))
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError:
        raise UsageError(f"bad --since {text!r}: a duration back from now (36h, 7d) or a date "
                         "(2024-06-01, 2024-06-01T02:00)") from None
    return moment if moment.tzinfo else moment.astimezone()


def parse_slug(text: object, what: str = "monitor slug") -> str:
    raw = str(text).strip()
    if not SLUG_RE.match(raw):
        raise UsageError(f"bad {what} {text!r}: letters, digits, '-', '_' and '.' only")
    return raw


def parse_policy(text: object, what: str = "report policy") -> ReportPolicy:
    try:
        return ReportPolicy(str(text).strip().lower())
    except ValueError:
        raise UsageError(f"bad {what} {text!r}: choose success, always or never") from None


def parse_output_mode(text: object, what: str = "output") -> OutputMode:
    raw = str(text).strip().lower().replace("_", "-")
    if raw not in tuple(OutputMode):
        raise UsageError(f"bad {what} {text!r}: choose live or on-failure")
    return OutputMode(raw)


def parse_require_up(text: object, what: str = "require-up") -> RequireUp:
    word = bool_word(text)
    raw = {True: "on", False: "off", None: str(text).strip().lower()}[word]
    try:
        return RequireUp(raw)
    except ValueError:
        raise UsageError(f"bad {what} {text!r}: use on, off or strict") from None


def parse_overlap(text: object, what: str = "overlap") -> Overlap:
    try:
        return Overlap(str(text).strip().lower())
    except ValueError:
        choices = ", ".join(o.value for o in Overlap)
        raise UsageError(f"{what}={text!r}: choose {choices}") from None


def parse_positive_int(text: object, what: str = "number") -> int:
    value = _int(text, what, "a whole number is needed")
    if not 0 < value <= 10**9:
        raise UsageError(f"bad {what} {text!r}: it must be positive")
    return value


def parse_exit_code(text: object, what: str = "exit code") -> int:
    value = _int(text, what, "a number from 0 to 255")
    if not 0 <= value <= 255:
        raise UsageError(f"bad {what} {text!r}: a number from 0 to 255")
    return value


def _int(text: object, what: str, hint: str) -> int:
    if isinstance(text, bool):
        raise UsageError(f"bad {what} {text!r}: {hint}")
    raw = str(text).strip()
    if not re.fullmatch(r"[+-]?\d{1,12}", raw):
        raise UsageError(f"bad {what} {text!r}: {hint}")
    return int(raw)


def parse_text(text: object, what: str = "value") -> str:
    return str(text).strip()


def parse_path(text: object, what: str = "path") -> Path:
    raw = str(text).strip()
    if not raw or "\0" in raw:
        raise UsageError(f"bad {what}: {'empty path' if not raw else 'a NUL in the path'}")
    try:
        return Path(raw).expanduser()
    except RuntimeError:  # ~nouser/x: no such user (or no home to expand ~ to)
        raise UsageError(f"bad {what} {raw!r}: cannot expand '~' (no such user or home)")\
            from None


def parse_url(text: object, what: str = "URL") -> str:
    """An http(s) base URL without its trailing slash."""
    import urllib.parse

    raw = str(text).strip()
    try:
        parts = urllib.parse.urlsplit(raw)
        ok = parts.scheme in ("http", "https") and bool(parts.hostname)
        _ = parts.port  # raises for a port that is not a number in range
    except ValueError:
        ok = False
    if not ok or any(c.isspace() or not c.isprintable() for c in raw):
        raise UsageError(f"bad {what} {raw[:80]!r}: it must be an http:// or https:// URL")
    return raw.rstrip("/")


# Printable ASCII without spaces: what an HTTP header can carry.
_TOKEN_RE = re.compile(r"[!-~]+\Z")


def check_token(raw: str, what: str = "token") -> str:
    """The one rule for a secret's format (config, Idlemon, ProMonitor): never quotes it.

    ``raw`` is checked as given: a caller reading a file strips its newline first.
    """
    if not raw.strip():
        raise UsageError(f"{what} is empty")
    if not _TOKEN_RE.match(raw):
        raise UsageError(f"{what} holds a space or a character outside printable ASCII: "
                         "check for a stray character")
    return raw
