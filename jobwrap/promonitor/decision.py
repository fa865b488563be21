"""The ``--require-up`` decision: whether a job may start, given what ProMonitor says."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from jobwrap.promonitor.answer import DependencyState, Unavailable
from jobwrap.promonitor.client import PmCheck
from jobwrap.promonitor.downtime import ongoing_period, shown


@dataclass(frozen=True)
class GateDecision:
    """Whether to start the command, and what to tell the user (empty: nothing to say)."""

    run: bool
    message: str


def decide(
    answer: DependencyState | Unavailable,
    strict: bool,
    down_message: Callable[[DependencyState], str],
) -> GateDecision:
    """Whether ``--require-up`` lets the command start.

    * up: run, nothing to say.
    * down: never run; the message is ``down_message``'s (see :func:`down_message`).
    * paused, pending or an unknown status say nothing current: run unless ``strict``.
    * Unavailable: run and say so, unless ``strict``.
    """
    if isinstance(answer, Unavailable):
        return _unknown_gate(f"cannot ask ProMonitor: {answer.message}", strict)
    if answer.status == "up":
        return GateDecision(True, "")
    if answer.status == "down":
        return GateDecision(False, down_message(answer))
    what = f"{_dependency(answer)} is {shown(answer.status)} in ProMonitor"
    return _unknown_gate(f"{what}, which says nothing about whether it is up now", strict)


def down_message(
    state: DependencyState,
    checks: tuple[PmCheck, ...] | Unavailable,
    when: Callable[[datetime], str],
) -> str:
    """"dependency 'X' (url) is down since 10:55 (error)", with what can be known.

    The monitor and URL always; since when and the last error when the ``checks`` could be
    had (the details are a nicety: without them, say what we know); the time of a cached
    answer.  ``when`` writes a moment for people.
    """
    text = f"{_dependency(state)} is down"
    if not isinstance(checks, Unavailable):
        period = ongoing_period(checks)
        if period is not None:
            text += f" since {when(period.start)}"
            if period.error:
                text += f" ({shown(period.error)})"
    if state.source == "cache":
        text += f" (ProMonitor as of {when(datetime.fromtimestamp(state.fetched_at, UTC))})"
    return text


def _unknown_gate(what: str, strict: bool) -> GateDecision:
    if strict:
        return GateDecision(False, f"{what}; not running (--require-up=strict)")
    return GateDecision(True, f"{what}; running anyway")


def _dependency(state: DependencyState) -> str:
    return f"dependency '{shown(state.name)}' ({shown(state.url)})"
