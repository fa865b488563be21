"""Idlemon client: post an activity log for a monitor, read a project and its monitors.

A log means "this job was active"; Idlemon has no failure endpoint and no idempotency, so a
retried POST may store the log twice (see :func:`jobwrap.net.retry.retry`).  Logs carry no run
time: a log delivered late is received "now", so its metas should say it is late.
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from jobwrap.errors import (
    AuthError,
    ConfigError,
    MalformedResponseError,
    NotFoundError,
    UsageError,
)
from jobwrap.net.api import ApiClient
from jobwrap.net.http import send_json
from jobwrap.net.jsonfields import JsonRecord
from jobwrap.net.message import PreparedCall, Response

if TYPE_CHECKING:
    pass

__all__ = [
    "IdleMonitor",
    "IdlemonClient",
    "LogMeta",
    "LogReceipt",
    "PreparedCall",
    "Project",
    "check_token_format",
]

SERVICE = "Idlemon"
_SOURCE = "Idlemon answer"
_TOKEN_SHAPE = re.compile(r"[0-9a-fA-F]{32}")


@dataclass(frozen=True)
class LogMeta:
    """One ``{name, value}`` pair as Idlemon stored it."""

    id: str
    name: str
    value: str


@dataclass(frozen=True)
class LogReceipt:
    """Idlemon's answer to a posted log.

    ``warning`` is set when Idlemon answered 2xx (so the log is stored) with a body that is
    not the documented one; ``id`` is then empty and ``metas`` are what was sent.
    """

    id: str
    duration: int  # seconds, as sent
    metas: tuple[LogMeta, ...]
    warning: str | None = None


@dataclass(frozen=True)
class IdleMonitor:
    """One monitor of a project.

    ``interval`` and ``interval_avg`` are in **minutes**: Idlemon gives no unit, and its own
    example only makes sense in minutes.  ``duration_avg`` is in seconds.  The averages are
    None when Idlemon sends null (a monitor with no logs yet has nothing to average).
    """

    id: str
    project_id: str
    name: str
    slug: str
    description: str | None
    interval: int
    interval_avg: float | None
    duration_avg: float | None
    is_idle: bool
    last_idle: datetime | None
    last_contact: datetime | None


@dataclass(frozen=True)
class Project:
    """A project: the unit an API token belongs to."""

    id: str
    name: str
    description: str | None
    token_last_used: datetime | None
    monitors: tuple[IdleMonitor, ...]


def check_token_format(token: str) -> str | None:
    """Reject a token that cannot work; return a warning if it merely looks unusual.

    Raises ConfigError for an empty token or one containing whitespace or control characters
    (typically a newline left by a secret file).  Returns a warning, or None, for the shape:
    Idlemon's documented tokens are 32 hex characters, but we do not know all of them are.
    Neither the error nor the warning quotes the token.
    """
    from jobwrap.config.values import check_token

    try:
        check_token(token, "the Idlemon API token")
    except UsageError as exc:
        raise ConfigError(str(exc)) from None
    if not _TOKEN_SHAPE.fullmatch(token):
        return (
            "the Idlemon API token does not look like one "
            f"(expected 32 hex characters, got {len(token)} characters)"
        )
    return None


class IdlemonClient(ApiClient):
    """Talks to one Idlemon project with its token.  Makes one attempt per call: no retries."""

    service = SERVICE

    def log_request(self, slug: str, duration_s: int, metas: list[tuple[str, str]]) -> PreparedCall:
        """The exact request :meth:`post_log` sends; ``describe()`` it for ``--dry-run``.

        Raises ConfigError for an empty slug, TypeError/ValueError for a duration that is not
        a non-negative int or metas that are not pairs of strings (callers' bugs).
        """
        if not slug:
            raise ConfigError("the Idlemon monitor slug is empty")
        body = {"duration": _check_duration(duration_s), "metas": _meta_list(metas)}
        # safe="": a "/" in a slug must stay inside the slug's path segment.
        url = f"{self.base_url}/monitors/{urllib.parse.quote(slug, safe='')}/logs"
        return PreparedCall("POST", url, self._headers(with_body=True), body)

    def post_log(
        self,
        slug: str,
        duration_s: int,
        metas: list[tuple[str, str]],
        timeout: float | None = None,
    ) -> LogReceipt:
        """Post one activity log.  ``timeout`` caps this attempt, in seconds.

        A 2xx answer means the log is stored, whatever its body: a body that is not the
        documented JSON gives a receipt with a ``warning``, never an error (retrying would
        store the log again).  Raises NotFoundError "no Idlemon monitor with slug 'x'",
        AuthError, and the other errors of :func:`jobwrap.net.http.send_json`.
        """
        call = self.log_request(slug, duration_s, metas)
        try:
            response = self._send(call, timeout, require_json=False)
        except NotFoundError as exc:
            raise NotFoundError(
                f"no Idlemon monitor with slug {slug!r} (HTTP 404)", status=exc.status
            ) from None
        sent = tuple(LogMeta("", name, value) for name, value in metas)
        if response.problem is not None:
            warning = (f"Idlemon accepted the log (HTTP {response.status}) "
                       f"but {response.problem}")
            return LogReceipt("", duration_s, sent, warning)
        try:
            return _parse_receipt(JsonRecord(response.body, "", _SOURCE).record("log"))
        except MalformedResponseError as exc:
            warning = f"Idlemon accepted the log (HTTP {response.status}) but its answer is {exc}"
            return LogReceipt("", duration_s, sent, warning)

    def get_project(self, project_id: str, timeout: float | None = None) -> Project:
        """Read a project and its monitors.

        Raises NotFoundError "no Idlemon project 'id'", AuthError, and the other errors of
        :func:`jobwrap.net.http.send_json`.
        """
        quoted = urllib.parse.quote(project_id, safe="")
        call = PreparedCall("GET", f"{self.base_url}/projects/{quoted}", self._headers())
        try:
            body = self._send(call, timeout).body
        except NotFoundError as exc:
            raise NotFoundError(
                f"no Idlemon project {project_id!r} (HTTP 404)", status=exc.status
            ) from None
        return _parse_project(JsonRecord(body, "", _SOURCE).record("project"))




    def _headers(self, *, with_body: bool = False) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if with_body:
            headers["Content-Type"] = "application/json"
        headers["Api-Token"] = self._token
        return headers

    def _send(self, call: PreparedCall, timeout: float | None, *,
              require_json: bool = True) -> Response:
        try:
            return send_json(
                self._session_in_use(),
                call.method,
                call.url,
                headers=call.headers,
                json_body=call.body,
                timeout=self.timeout.capped(timeout),
                service=SERVICE,
                require_json=require_json,
            )
        except AuthError as exc:
            raise AuthError(
                f"Idlemon rejected the API token (HTTP {exc.status})", status=exc.status
            ) from None


def _check_duration(duration_s: int) -> int:
    if not isinstance(duration_s, int) or isinstance(duration_s, bool):
        raise TypeError(f"duration_s must be an int, not {type(duration_s).__name__}")
    if duration_s < 0:
        raise ValueError(f"duration_s must not be negative, not {duration_s}")
    return duration_s


def _meta_list(metas: list[tuple[str, str]]) -> list[dict[str, str]]:
    result = []
    for name, value in metas:
        if not isinstance(name, str) or not isinstance(value, str):
            raise TypeError(f"meta names and values must be strings, not {name!r}: {value!r}")
        result.append({"name": name, "value": value})
    return result


def _parse_receipt(log: JsonRecord) -> LogReceipt:
    metas = tuple(
        LogMeta(id=meta.text("id"), name=meta.text("name"), value=meta.text("value"))
        for meta in log.records("metas")
    )
    return LogReceipt(id=log.text("id"), duration=log.integer("duration"), metas=metas)


def _parse_project(project: JsonRecord) -> Project:
    return Project(
        id=project.text("id"),
        name=project.text("name"),
        description=project.text_or_none("description"),
        token_last_used=project.timestamp_or_none("token_last_used"),
        monitors=tuple(_parse_monitor(item) for item in project.records("monitors")),
    )


def _parse_monitor(monitor: JsonRecord) -> IdleMonitor:
    return IdleMonitor(
        id=monitor.text("id"),
        project_id=monitor.text("project_id"),
        name=monitor.text("name"),
        slug=monitor.text("slug"),
        description=monitor.text_or_none("description"),
        interval=monitor.integer("interval"),
        interval_avg=monitor.number_or_none("interval_avg"),
        duration_avg=monitor.number_or_none("duration_avg"),
        is_idle=monitor.flag("is_idle"),
        last_idle=monitor.timestamp_or_none("last_idle"),
        last_contact=monitor.timestamp_or_none("last_contact"),
    )
