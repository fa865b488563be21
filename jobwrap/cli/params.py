"""What options become: the click types of durations and ``--since``, and the flags resolved
into :class:`Settings` (config warnings on stderr)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from jobwrap.errors import JobwrapError

if TYPE_CHECKING:
    from jobwrap.config.settings import Settings


class Duration(click.ParamType):
    """A duration (``90s``, ``5m``); with ``off``: also ``0``, which turns the setting off."""

    name = "DURATION"

    def __init__(self, off: bool = False) -> None:
        self.off = off

    def convert(self, value, param, ctx):
        from jobwrap.config.values import parse_duration, parse_timeout

        parse = parse_timeout if self.off else parse_duration
        try:
            return parse(value, f"--{param.name.replace('_', '-')}" if param else "")
        except JobwrapError as exc:
            self.fail(str(exc), param, ctx)


class Since(click.ParamType):
    """``--since``: a duration back from now (``2h``, ``1d``) or a date/time (local zone)."""

    name = "DURATION|DATE"

    def convert(self, value, param, ctx):
        from jobwrap.config.values import parse_since

        try:
            return parse_since(value)
        except JobwrapError as exc:
            self.fail(str(exc), param, ctx)


def resolve_flags(flags: dict) -> Settings:
    """Settings with flags applied; config warnings (e.g. a readable token file) on stderr."""
    from jobwrap.config.settings import resolve

    settings = resolve({k: v for k, v in flags.items() if v is not None})
    for warning in settings.warnings:
        click.echo(f"jobwrap: warning: {warning}", err=True)
    return settings
