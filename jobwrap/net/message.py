"""An HTTP exchange as jobwrap sees it: the request prepared, the answer, what its status means.

:func:`raise_for_status` is the one table from an HTTP status to a
:class:`jobwrap.errors.ApiError` subclass; its messages are one line, name what happened and the
status, and never contain a token or a request header (:mod:`jobwrap.net.masking`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from jobwrap.errors import (
    ApiError,
    AuthError,
    MalformedResponseError,
    NotFoundError,
    RateLimitedError,
    RejectedError,
    TransientApiError,
)
from jobwrap.net.masking import mask_header, safe_url, scrub
from jobwrap.net.retry import parse_retry_after

_EXCERPT_CHARS = 120


@dataclass(frozen=True)
class Response:
    """A successful (or, for ``on_response`` hooks, any) answer.

    ``headers`` has lower-cased names; use :meth:`header` for case-insensitive lookups.
    ``body`` is the parsed JSON (``None`` for 204 No Content or an error body that is not JSON).
    ``problem`` says why a 2xx body could not be read (only with ``require_json=False``):
    not JSON, too large, cut short or too slow; ``body`` is then None.
    """

    status: int
    headers: Mapping[str, str]
    body: Any
    problem: str | None = None

    def header(self, name: str) -> str | None:
        """The value of header ``name`` (any case), or None."""
        return self.headers.get(name.lower())


@dataclass(frozen=True)
class PreparedCall:
    """One exact HTTP request, built before it is sent so ``--dry-run`` can show it.

    Treat ``headers`` and ``body`` as read-only: they are exactly what will be sent.
    """

    method: str
    url: str
    headers: Mapping[str, str]
    body: Any = None

    def describe(self, masked: bool = True) -> str:
        """Render the request for people: method and URL, headers, blank line, pretty JSON.

        With ``masked`` (the default) secret header values show at most their first and last
        4 characters, and credentials embedded in the URL are dropped.
        """
        url = safe_url(self.url) if masked else self.url
        lines = [f"{self.method} {url}"]
        for name, value in self.headers.items():
            shown = mask_header(name, value) if masked else value
            lines.append(f"{name}: {shown}")
        if self.body is not None:
            lines += ["", json.dumps(self.body, indent=2, ensure_ascii=False)]
        return "\n".join(lines)


@dataclass(frozen=True)
class Context:
    """What error messages may say about a request: never its headers."""

    service: str
    where: str  # "POST https://host/path", from safe_url()
    secrets: tuple[str, ...] = field(repr=False)


def raise_for_status(response: Response, reason: str, ctx: Context) -> None:
    """Raise the ApiError that ``response.status`` means; return for 2xx."""
    status = response.status
    if 200 <= status < 300:
        return
    what = f"HTTP {status} {reason}".rstrip()
    detail = _excerpt(response.body, ctx.secrets)
    suffix = f": {detail}" if detail else ""
    if status == 429:
        retry_after = parse_retry_after(response.header("retry-after"))
        wait = "" if retry_after is None else f", retry after {retry_after:g} s"
        raise RateLimitedError(
            f"{ctx.service} is rate limiting us ({what}{wait}) on {ctx.where}{suffix}",
            retry_after=retry_after,
        )
    if 300 <= status < 400:
        target = scrub(safe_url(response.header("location") or "?"), ctx.secrets)
        message = f"{ctx.service} redirected {ctx.where} to {target} ({what}): check the base URL"
        raise RejectedError(message, status=status)
    error_class, verb = _STATUS_ERRORS.get(status) or _status_family(status)
    raise error_class(f"{ctx.service} {verb} ({what}) on {ctx.where}{suffix}", status=status)


_STATUS_ERRORS: dict[int, tuple[type[ApiError], str]] = {
    401: (AuthError, "refused the credentials"),
    403: (AuthError, "refused the credentials"),
    404: (NotFoundError, "found nothing"),
    408: (TransientApiError, "timed out waiting for the request"),
}


def _status_family(status: int) -> tuple[type[ApiError], str]:
    if 400 <= status < 500:
        return RejectedError, "rejected the request"
    if status >= 500:
        return TransientApiError, "failed"
    return MalformedResponseError, "gave an unexpected status"


def _excerpt(body: Any, secrets: tuple[str, ...]) -> str:
    """The server's own error message, one line, short, with our secrets scrubbed."""
    if not isinstance(body, dict):
        return ""
    text = body.get("message") or body.get("error")
    if isinstance(text, dict):  # {"error": {"message": ...}}
        text = text.get("message")
    if not isinstance(text, str):
        return ""
    text = scrub(" ".join(text.split()), secrets)
    if len(text) > _EXCERPT_CHARS:
        text = text[: _EXCERPT_CHARS - 1] + "…"
    return text
