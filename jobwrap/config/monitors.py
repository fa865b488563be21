"""The configured monitors' own settings, read from the files a command already loaded."""

from __future__ import annotations

from typing import Any

from jobwrap.config.settings import Settings


def monitor_settings(settings: Settings) -> dict[str, Settings]:
    """Each configured monitor's settings (its section over the general ones), resolved once."""
    return {slug: settings.for_monitor(slug) for slug in settings.configured_monitors()}


def per_monitor(settings: dict[str, Settings], name: str) -> dict[str, Any]:
    """A setting's value for each monitor, where it is set."""
    return {slug: getattr(each, name) for slug, each in settings.items()
            if getattr(each, name)}
