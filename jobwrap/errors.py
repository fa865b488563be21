"""The one error family and the one exit-status table.

Only the CLI turns a :class:`JobwrapError` into a message and an exit status; the core raises
these and never calls ``sys.exit``.  Messages are single lines meant for people and never
contain secrets.
"""

from __future__ import annotations

import os
import signal
from enum import IntEnum


class ExitStatus(IntEnum):
    """Every exit status jobwrap itself chooses.  A run otherwise exits with the child's code."""

    OK = 0
    FAILURE = 1  # a non-run command (status, doctor, flush) found something wrong
    USAGE = 2  # jobwrap's own usage or configuration error, caught before the command starts
    INTERNAL = 70  # EX_SOFTWARE: a bug in jobwrap (never for a run whose command has run)
    TEMPFAIL = 75  # EX_TEMPFAIL: a run was skipped (dependency down, previous run still locked)
    TIMEOUT = 124  # the run hit --timeout, even when it took a SIGKILL (GNU timeout says 137)
    NOT_EXECUTABLE = 126  # the command exists but cannot be executed
    NOT_FOUND = 127  # the command does not exist
    SIGNAL_BASE = 128  # killed by signal N: 128 + N


def exit_status_of(wait_status: int) -> tuple[int, str | None]:
    """The exit status for a wait status, and the signal's name when a signal killed it.

    The one rule, as a shell has it: the exit code, or 128+N for a death by signal N.
    """
    code = os.waitstatus_to_exitcode(wait_status)
    if code >= 0:
        return code, None
    return ExitStatus.SIGNAL_BASE - code, signal_name(-code)


def signal_name(signum: int) -> str:
    """``SIGTERM`` for 15; ``SIG99`` for a number Python does not name."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"SIG{signum}"


class JobwrapError(Exception):
    """Base of every error jobwrap reports to the user as one clear line."""

    exit_status: int = ExitStatus.USAGE


class UsageError(JobwrapError):
    """A bad flag value: regex, NAME=REGEX, duration, cron expression, missing command."""


class ConfigError(JobwrapError):
    """A bad configuration file, environment variable or secret file."""


class StateError(JobwrapError):
    """The local state (history database, spool, cache, locks) cannot be used."""

    exit_status = ExitStatus.FAILURE


class ApiError(JobwrapError):
    """An HTTP API (Idlemon or ProMonitor) did not give a usable answer.

    ``retriable`` says whether trying the same request later may succeed (outage, timeout,
    rate limit), as opposed to a refusal that needs the user to fix something first.
    """

    exit_status = ExitStatus.FAILURE
    retriable = False

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class TransientApiError(ApiError):
    """Connection refused or reset, timeout, 5xx: worth retrying later."""

    retriable = True


class RateLimitedError(TransientApiError):
    """429 Too Many Requests; ``retry_after`` is in seconds when the server said."""

    def __init__(
        self, message: str, *, status: int | None = 429, retry_after: float | None = None
    ) -> None:
        super().__init__(message, status=status)
        self.retry_after = retry_after


class AuthError(ApiError):
    """401/403: the token is missing, malformed or rejected."""


class NotFoundError(ApiError):
    """404: unknown monitor slug, project or monitor id."""


class RejectedError(ApiError):
    """422 or another 4xx: the server refused the request as it is."""


class MalformedResponseError(ApiError):
    """The server answered, but not with the JSON the API specifies."""

    retriable = True  # typically an HTML error page from a proxy during an outage
