"""What ``jobwrap config`` shows: every effective setting with its source (secrets masked), the
files read, and each monitor section's settings.  Data only: ``views/config.py`` renders it.

Apart from :mod:`jobwrap.config.settings` so that a run, which never shows its settings, does
not load it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jobwrap.config.files import system_file, user_file
from jobwrap.config.settings import Settings, mask
from jobwrap.config.table import SETTINGS
from jobwrap.config.values import format_duration, parse_duration, parse_timeout
from jobwrap.errors import JobwrapError


@dataclass(frozen=True)
class ConfigRow:
    """One line of ``jobwrap config``: the value as shown (secrets masked) and its source."""

    name: str
    value: str
    source: str
    problem: str | None = None
    typed: Any = None  # for --json: a number, a boolean, null or text (secrets masked)


@dataclass(frozen=True)
class ConfigView:
    """``jobwrap config``: the files read, the effective settings, each monitor section's."""

    files: tuple[Path, ...]
    looked: tuple[Path, ...]  # where a file was looked for and not found
    rows: list[ConfigRow]
    monitors: dict[str, list[ConfigRow]]  # slug → what its [monitors.SLUG] section sets


def describe(settings: Settings) -> list[ConfigRow]:
    """The effective settings with their sources; secrets masked.  Data: views render it."""
    rows = []
    for setting in SETTINGS:
        value = getattr(settings, setting.name)
        problem = settings.problems.get(setting.name)
        typed: Any
        if problem:
            shown = typed = "(unusable)"
        elif setting.secret:
            shown = typed = mask(value)
        elif setting.show is not None and value is not None:
            shown = typed = setting.show(value)
        elif setting.parse is parse_timeout and value == 0:
            shown, typed = "off", 0  # --timeout 0: no timeout
        elif setting.parse in (parse_duration, parse_timeout) and value is not None:
            shown, typed = format_duration(value), value  # as a person writes it; JSON: s
        else:
            shown = "-" if value is None else (
                str(value).lower() if isinstance(value, bool) else str(value))
            typed = value if value is None or isinstance(value, bool | int | float) else str(value)
        rows.append(ConfigRow(setting.name, shown, settings.sources[setting.name], problem,
                              typed))
    for kind, table in (("meta", settings.metas), ("count", settings.counts)):
        for name, pattern in table.items():
            rows.append(ConfigRow(f"{kind}.{name}", pattern, _pattern_source(settings, kind, name),
                                  typed=pattern))
    return rows


def _pattern_source(settings: Settings, kind: str, name: str) -> str:
    for f in settings.files:
        section = f.data.get("monitors", {}).get(settings.monitor, {})
        if isinstance(section.get(kind), dict) and name in section[kind]:
            return f"{f.path} [monitors.{settings.monitor}.{kind}]"
    return "config file"


def describe_all(settings: Settings) -> ConfigView:
    """The files read, every effective setting and, for each ``[monitors.SLUG]`` section of
    the files, the settings that section gives its runs."""
    read = tuple(f.path for f in settings.files)
    looked = tuple(p for p in (user_file(settings.env), system_file(settings.env))
                   if p not in read)
    monitors = {}
    for slug in settings.configured_monitors():
        if slug == settings.monitor:
            continue  # already the effective settings above
        try:
            each = settings.for_monitor(slug)
        except JobwrapError as exc:  # the section holds a bad value: say so, show the rest
            monitors[slug] = [ConfigRow("(section)", "(unusable)", "", str(exc), None)]
            continue
        monitors[slug] = [row for row in describe(each)
                          if f"[monitors.{slug}" in row.source]
    return ConfigView(read, looked, describe(settings), monitors)
