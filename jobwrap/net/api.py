"""What both API clients share: a checked base URL, a token, timeouts and a session."""

from __future__ import annotations

import urllib.parse
from typing import TYPE_CHECKING, Self

from jobwrap.errors import ConfigError
from jobwrap.net.deadline import DEFAULT_TIMEOUT, Timeout
from jobwrap.net.http import make_session

if TYPE_CHECKING:
    from jobwrap.net.http import Session


def check_base_url(base_url: str, service: str) -> str:
    """``base_url`` without its trailing slash; ConfigError unless it is an http(s) URL."""
    parts = urllib.parse.urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"the {service} base URL must start with https:// or http://")
    return base_url.rstrip("/")


class ApiClient:
    """What both API clients share: a checked base URL, a token, and a session.

    Without ``session`` the client makes its own on first use (so constructing a client does
    not import requests) and :meth:`close` closes it; a session passed in is left open.
    """

    service = "the API"

    def __init__(
        self,
        base_url: str,
        token: str,
        session: Session | None = None,
        timeout: Timeout = DEFAULT_TIMEOUT,
    ) -> None:
        self.base_url = check_base_url(base_url, self.service)
        self._token = token
        self._session = session
        self._owns_session = session is None
        self.timeout = timeout

    def __repr__(self) -> str:  # never show the token
        return f"{type(self).__name__}(base_url={self.base_url!r})"

    def _session_in_use(self) -> Session:
        if self._session is None:
            self._session = make_session()
        return self._session

    def close(self) -> None:
        """Close the session if this client made it."""
        if self._owns_session and self._session is not None:
            self._session.close()
            self._session = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
