"""The one place that builds a requests session, sends JSON, and decides what is retried.

``requests`` is imported inside the functions that need it, never at module import time:
most jobwrap runs never touch the network, and importing requests costs start-up time.

Contracts:

* :func:`send_json` turns every failure into a :class:`jobwrap.errors.ApiError` subclass whose
  message is one line, names what happened and the HTTP status, and never contains a token or
  a request header, in any case or encoding (:func:`scrub`).  No ``requests`` exception
  escapes it.
* Every request is bounded as a whole: ``Timeout.total_s`` covers connecting, the headers and
  the body together (a watchdog shuts the socket at the deadline, so a server dripping one
  byte a second cannot outlast it), and a body is read up to :data:`MAX_BODY_BYTES` only.
* :func:`retry` is the one retry policy; the API clients never retry by themselves.  Every
  wait has a floor and a cap, and the attempts are counted.
"""

from __future__ import annotations

import json
import math
import random
import re
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC
from typing import TYPE_CHECKING, Any, Self, TypeVar

from jobwrap import __version__
from jobwrap.errors import (
    ApiError,
    AuthError,
    ConfigError,
    MalformedResponseError,
    NotFoundError,
    RateLimitedError,
    RejectedError,
    TransientApiError,
)

if TYPE_CHECKING:
    import requests

T = TypeVar("T")

# Request headers whose values are secrets: masked by describe(), scrubbed from error messages.
SECRET_HEADERS = frozenset(
    {"api-token", "authorization", "proxy-authorization", "cookie", "x-api-key"}
)
_EXCERPT_CHARS = 120
_MIN_TIMEOUT_S = 0.001  # urllib3 refuses a timeout of 0; an exhausted budget still needs a value
# The APIs' answers are a few KiB (ProMonitor's 100 checks: ~20 KiB); anything far larger is
# not an answer, and reading it whole could exhaust memory (an endless chunked body).
MAX_BODY_BYTES = 256 * 1024
_CHUNK_BYTES = 16 * 1024
MIN_RETRY_WAIT_S = 1.0  # no wait is shorter: "Retry-After: 0" must not become a tight loop
MAX_RETRY_AFTER_S = 60.0  # a longer Retry-After is not waited for: the call gives up instead
MAX_ATTEMPTS = 4  # one call sends at most this many requests, whatever the budget


@dataclass(frozen=True)
class Timeout:
    """Per-attempt timeouts in seconds.

    ``connect_s`` bounds opening the connection; ``read_s`` bounds each wait for bytes;
    ``total_s`` bounds the whole attempt, headers and body included, however the server
    paces its bytes.
    """

    # Slightly above a multiple of 3 s, TCP's initial retransmission interval (requests' advice).
    connect_s: float = 3.05
    read_s: float = 10.0
    total_s: float = 15.0

    def capped(self, limit_s: float | None) -> Timeout:
        """These timeouts, each lowered to ``limit_s`` (e.g. the remaining retry budget)."""
        if limit_s is None:
            return self
        limit = max(limit_s, _MIN_TIMEOUT_S)
        return Timeout(min(self.connect_s, limit), min(self.read_s, limit),
                       min(self.total_s, limit))


DEFAULT_TIMEOUT = Timeout()


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


def mask_secret(secret: str) -> str:
    """``0123…cdef`` for a long secret; ``****`` when showing 8 characters would reveal too much."""
    if len(secret) < 24:  # from 24 characters on, 8 shown characters are at most a third
        return "****"
    return f"{secret[:4]}…{secret[-4:]}"


def mask_header(name: str, value: str) -> str:
    """``value`` with its secret masked when ``name`` is a secret header; keeps ``Bearer``."""
    if name.lower() not in SECRET_HEADERS:
        return value
    scheme, space, credential = value.partition(" ")
    if space and credential:
        return f"{scheme} {mask_secret(credential)}"
    return mask_secret(value)


def safe_url(url: str) -> str:
    """``url`` without user info, query or fragment: safe to show in messages and logs."""
    parts = urllib.parse.urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", ""))


def check_base_url(base_url: str, service: str) -> str:
    """``base_url`` without its trailing slash; ConfigError unless it is an http(s) URL."""
    parts = urllib.parse.urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"the {service} base URL must start with https:// or http://")
    return base_url.rstrip("/")


def scrub(text: str, secrets: tuple[str, ...]) -> str:
    """``text`` with every form of each secret replaced by ``[redacted]``.

    Case-insensitive (a server may echo a token upper-cased), and the percent-encoded forms
    too (a token echoed in a Location or a URL path).
    """
    pattern = _secret_pattern(secrets)
    return text if pattern is None else pattern.sub("[redacted]", text)


def scrub_json(value: Any, secrets: tuple[str, ...]) -> Any:
    """A parsed JSON value with :func:`scrub` applied to every string in it, keys included."""
    if _secret_pattern(secrets) is None:
        return value
    if isinstance(value, str):
        return scrub(value, secrets)
    if isinstance(value, list):
        return [scrub_json(item, secrets) for item in value]
    if isinstance(value, dict):
        return {scrub(str(k), secrets): scrub_json(v, secrets) for k, v in value.items()}
    return value


def _secret_pattern(secrets: tuple[str, ...]) -> re.Pattern[str] | None:
    forms: set[str] = set()
    for secret in secrets:
        if len(secret) < 4:  # too short to tell from ordinary text; never a real token
            continue
        forms |= {secret, urllib.parse.quote(secret, safe=""), urllib.parse.quote_plus(secret),
                  json.dumps(secret)[1:-1]}
    if not forms:
        return None
    ordered = sorted(forms, key=len, reverse=True)  # the longest form first
    return re.compile("|".join(re.escape(form) for form in ordered), re.IGNORECASE)


def default_user_agent() -> str:
    """``jobwrap/<version>``."""
    return f"jobwrap/{__version__}"


def _keep_request(request: Any) -> Any:
    return request


def make_session(user_agent: str | None = None) -> requests.Session:
    """A session for jobwrap's API calls: our User-Agent, JSON Accept, no hidden retries.

    ``user_agent`` replaces the default ``jobwrap/<version>``.  Proxy environment variables
    (``HTTPS_PROXY``...) are honoured; ``~/.netrc`` is not (see below).
    """
    import requests

    session = requests.Session()
    session.headers["User-Agent"] = user_agent or default_user_agent()
    session.headers["Accept"] = "application/json"
    # retry() is the one retry policy: urllib3 retrying underneath would multiply the attempts
    # and ignore the time budget.  max_retries=0 also means "no retries on read errors".
    for prefix in ("https://", "http://"):
        session.mount(prefix, _guarded_adapter())
    # With no auth set, requests reads ~/.netrc and its credentials *replace* the
    # Authorization header we set explicitly (ProMonitor's Bearer key).  A no-op auth stops that.
    session.auth = _keep_request
    return session


class _Watchdog:
    """Shuts the sockets of one request at its deadline, wherever requests is blocked on them.

    Socket timeouts bound each wait for bytes, not the whole answer: a server sending a byte
    a second never trips them.  The connections of the session register their socket with
    the watchdog of the request their thread is making (see :func:`_guarded_adapter`).
    """

    _current = threading.local()

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.fired = False
        self._done = False
        self._lock = threading.Lock()
        self._sockets: list[Any] = []
        self._timer = threading.Timer(max(seconds, 0.0), self._fire)
        self._timer.daemon = True

    def __enter__(self) -> _Watchdog:
        _Watchdog._current.dog = self
        self._timer.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        _Watchdog._current.dog = None
        with self._lock:
            self._done = True
        self._timer.cancel()

    @classmethod
    def register(cls, sock: Any) -> None:
        """Called by a connection about to be used by the current thread's request."""
        dog = getattr(cls._current, "dog", None)
        if dog is None or sock is None:
            return
        with dog._lock:
            if dog._done:
                return
            dog._sockets.append(sock)
            if dog.fired:
                _shut(sock)

    def _fire(self) -> None:
        with self._lock:
            if self._done:
                return
            self.fired = True
            for sock in self._sockets:
                _shut(sock)


def _shut(sock: Any) -> None:
    import socket

    try:
        # The plain socket's shutdown, also for a TLS socket: SSLSocket.shutdown() would drop
        # its SSL object under the thread still reading through it.
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except (OSError, TypeError, ValueError):
        pass  # already closed


_ADAPTER_CLASS: Any = None


def _guarded_adapter() -> Any:
    """An HTTPAdapter (no retries) whose connections register with the request's watchdog."""
    global _ADAPTER_CLASS
    if _ADAPTER_CLASS is None:
        _ADAPTER_CLASS = _make_adapter_class()
    return _ADAPTER_CLASS(max_retries=0)


def _make_adapter_class() -> Any:
    from requests.adapters import HTTPAdapter
    from urllib3.connection import HTTPConnection, HTTPSConnection
    from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

    class GuardedHTTP(HTTPConnection):
        def connect(self) -> None:
            super().connect()
            _Watchdog.register(self.sock)

        def request(self, *args: Any, **kwargs: Any) -> None:
            _Watchdog.register(self.sock)  # a reused connection: connect() is not called
            super().request(*args, **kwargs)

    class GuardedHTTPS(HTTPSConnection):
        def connect(self) -> None:
            super().connect()
            _Watchdog.register(self.sock)

        def request(self, *args: Any, **kwargs: Any) -> None:
            _Watchdog.register(self.sock)
            super().request(*args, **kwargs)

    class GuardedHTTPPool(HTTPConnectionPool):
        ConnectionCls = GuardedHTTP

    class GuardedHTTPSPool(HTTPSConnectionPool):
        ConnectionCls = GuardedHTTPS

    pools = {"http": GuardedHTTPPool, "https": GuardedHTTPSPool}

    class GuardedAdapter(HTTPAdapter):
        def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
            super().init_poolmanager(*args, **kwargs)
            self.poolmanager.pool_classes_by_scheme = pools

        def proxy_manager_for(self, proxy: str, **kwargs: Any) -> Any:
            manager = super().proxy_manager_for(proxy, **kwargs)
            if hasattr(manager, "pool_classes_by_scheme") and not proxy.startswith("socks"):
                manager.pool_classes_by_scheme = pools
            return manager

    return GuardedAdapter


@dataclass(frozen=True)
class _Context:
    """What error messages may say about a request: never its headers."""

    service: str
    where: str  # "POST https://host/path", from safe_url()
    secrets: tuple[str, ...] = field(repr=False)


def send_json(
    session: requests.Session,
    method: str,
    url: str,
    *,
    headers: Mapping[str, str],
    json_body: Any = None,
    timeout: Timeout = DEFAULT_TIMEOUT,
    service: str = "the API",
    on_response: Callable[[Response], None] | None = None,
    require_json: bool = True,
    secrets: tuple[str, ...] = (),
) -> Response:
    """Send one request and return its 2xx answer with the body parsed as JSON.

    The whole request, body included, ends within ``timeout.total_s``; a body is read up to
    :data:`MAX_BODY_BYTES`.  Never follows redirects (a POST would become a GET, and a custom
    token header would be sent to the new host).  ``on_response`` sees every answer that
    arrived, whatever its status, before it is mapped to an error (ProMonitor reads its
    rate-limit headers there).  Every string of the body and every message is scrubbed of the
    secret headers' values and of ``secrets``.

    With ``require_json`` False a 2xx is returned whatever its body: when the body is not
    JSON, too large, cut short or too slow, ``Response.problem`` says so (a POST answered 2xx
    was accepted, and retrying it would store it again).

    Raises: TransientApiError (no connection, timeout, reset, 5xx, 408, a 2xx body cut short),
    RateLimitedError (429), AuthError (401/403), NotFoundError (404), RejectedError (3xx, other
    4xx), MalformedResponseError (2xx whose body is not JSON or too large), ApiError (a request
    that cannot be sent at all, e.g. an invalid URL or header).
    """
    ctx = _Context(service, f"{method} {safe_url(url)}", _secrets_of(headers) + secrets)
    with _Watchdog(timeout.total_s) as dog:
        raw = _transmit(session, method, url, headers, json_body, timeout, ctx, dog)
        with raw:  # releases (or, after a partial read, closes) the connection at once
            status, reason = raw.status_code, scrub(raw.reason or "", ctx.secrets)
            headers_received = _lower_keys(raw.headers)
            content, problem = _read_body(raw, dog, ctx)
    body, is_json = (None, False) if problem else _parse_json(content)
    if not is_json and problem is None and status != 204:
        kind = (headers_received.get("content-type") or "no content type")[:40]
        problem = f"the body is not JSON ({scrub(kind, ctx.secrets)})"
    response = Response(status, headers_received, scrub_json(body, ctx.secrets))
    if on_response is not None:
        on_response(response)
    _raise_for_status(response, reason, ctx)
    if problem is None or status == 204:
        return response
    if not require_json:
        return Response(status, headers_received, None, problem)
    message = f"{ctx.service} answered {ctx.where} with HTTP {status} but {problem}"
    if "not JSON" in problem or "larger" in problem:
        raise MalformedResponseError(message, status=status)
    raise TransientApiError(message, status=status)


def _read_body(raw: requests.Response, dog: _Watchdog, ctx: _Context) -> tuple[bytes, str | None]:
    """The body, up to MAX_BODY_BYTES, within the deadline; or what went wrong reading it."""
    import requests

    chunks: list[bytes] = []
    size = 0
    try:
        for chunk in raw.iter_content(_CHUNK_BYTES):
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                return b"", f"the body is larger than {MAX_BODY_BYTES // 1024} KiB"
            chunks.append(chunk)
            if dog.fired:
                break
    except (requests.RequestException, OSError, ValueError):
        if not dog.fired:
            return b"", "the answer was cut short"
    if dog.fired:
        return b"", f"the answer was not complete within {dog.seconds:g} s"
    return b"".join(chunks), None


def _secrets_of(headers: Mapping[str, str]) -> tuple[str, ...]:
    found = []
    for name, value in headers.items():
        if name.lower() in SECRET_HEADERS and value:
            found.append(value)
            credential = value.partition(" ")[2]
            if credential:
                found.append(credential)
    return tuple(found)


def _lower_keys(headers: Mapping[str, str]) -> dict[str, str]:
    return {name.lower(): value for name, value in headers.items()}


def _parse_json(content: bytes) -> tuple[Any, bool]:
    try:
        return json.loads(content), True
    except ValueError:  # JSONDecodeError and UnicodeDecodeError both derive from it
        return None, False


def _transmit(
    session: requests.Session,
    method: str,
    url: str,
    headers: Mapping[str, str],
    json_body: Any,
    timeout: Timeout,
    ctx: _Context,
    dog: _Watchdog,
) -> requests.Response:
    import requests

    try:
        return session.request(
            method,
            url,
            headers=dict(headers),
            json=json_body,
            timeout=(timeout.connect_s, timeout.read_s),
            allow_redirects=False,
            stream=True,  # the body is read by _read_body: bounded in size and time
        )
    except Exception as exc:
        if dog.fired:  # whatever broke, it broke because the watchdog shut the socket
            raise TransientApiError(
                f"{ctx.service} did not answer within {dog.seconds:g} s ({ctx.where})"
            ) from None
        if not isinstance(exc, requests.RequestException):
            raise
        error = _transmit_error(exc, timeout, ctx)
        # No chaining for a request that could not be sent: the message of requests'
        # InvalidHeader quotes the header value, which may be the token.
        raise error from (None if type(error) is ApiError else exc)


def _transmit_error(exc: Exception, timeout: Timeout, ctx: _Context) -> ApiError:
    import requests

    if isinstance(exc, requests.ConnectTimeout):
        return TransientApiError(
            f"{ctx.service} did not accept a connection within {timeout.connect_s:g} s "
            f"({ctx.where})"
        )
    if isinstance(exc, requests.ReadTimeout):
        return TransientApiError(
            f"{ctx.service} did not answer within {timeout.read_s:g} s ({ctx.where})"
        )
    if isinstance(exc, requests.ConnectionError | requests.exceptions.ChunkedEncodingError):
        return TransientApiError(f"{ctx.service} unreachable: {_cause_text(exc)} ({ctx.where})")
    # Invalid URL or header: the same request can never succeed.
    return ApiError(f"cannot send the request to {ctx.service} ({ctx.where})")


def _cause_text(exc: BaseException) -> str:
    """A short name for why a connection failed; urllib3's own text spans several lines."""
    # requests has loaded these already; importing them here keeps them off jobwrap's start-up.
    import http.client
    import socket
    import ssl

    # Most specific first: RemoteDisconnected is a ConnectionResetError.
    causes: tuple[tuple[type[BaseException], str], ...] = (
        (http.client.RemoteDisconnected, "connection closed without a response"),
        (ConnectionRefusedError, "connection refused"),
        (ConnectionResetError, "connection reset"),
        (socket.gaierror, "host name not resolved"),
        (ssl.SSLError, "TLS error"),
        (http.client.IncompleteRead, "answer cut short"),
        (TimeoutError, "timed out"),
    )
    chain = list(_exception_chain(exc))
    for kind, text in causes:
        if any(isinstance(item, kind) for item in chain):
            return text
    return "connection failed"


def _exception_chain(exc: BaseException, depth: int = 8) -> Iterator[BaseException]:
    yield exc
    if depth == 0:
        return
    linked = [getattr(exc, "reason", None), exc.__cause__, exc.__context__, *exc.args]
    for item in linked:
        if isinstance(item, BaseException) and item is not exc:
            yield from _exception_chain(item, depth - 1)


def _raise_for_status(response: Response, reason: str, ctx: _Context) -> None:
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


def parse_retry_after(value: str | None, now: Callable[[], float] = time.time) -> float | None:
    """Seconds to wait from a Retry-After value: delay-seconds or an HTTP-date.

    Returns None when absent or unreadable, 0 for a date in the past.
    """
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        return _seconds_until_http_date(value, now)
    if not math.isfinite(seconds) or seconds < 0:
        return None
    return seconds


def _seconds_until_http_date(value: str, now: Callable[[], float]) -> float | None:
    import email.utils

    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # "-0000" means UTC with no claim about local time
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now())


def retry(
    call: Callable[[float], T],
    *,
    budget_s: float,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], object] = time.sleep,
    rng: Callable[[], float] = random.random,
    base_delay: float = MIN_RETRY_WAIT_S,
    max_delay: float = 8.0,
    max_attempts: int = MAX_ATTEMPTS,
    on_retry: Callable[[ApiError, float], object] | None = None,
) -> T:
    """Call ``call(remaining_s)`` until it returns, retrying retriable ApiErrors in ``budget_s``.

    ``remaining_s`` is the budget left; pass it as the attempt's timeout cap so an attempt
    cannot outlive the budget (``Timeout.total_s`` bounds a whole attempt).  At most
    ``max_attempts`` calls are made.  Waits are exponential backoff with jitter between
    :data:`MIN_RETRY_WAIT_S` and ``max_delay``; a 429's Retry-After is waited (never less than
    the floor: "0" or a date in the past must not become a tight loop) if it is at most
    :data:`MAX_RETRY_AFTER_S` and fits in the budget.  When the next wait would not leave time
    for another attempt, the last error is re-raised.  Errors that are not ApiErrors, and
    non-retriable ones, propagate at once.  ``on_retry(error, delay)`` is called before each
    wait (for logging).
    """
    if budget_s <= 0:
        raise ValueError(f"retry budget must be positive, not {budget_s}")
    deadline = clock() + budget_s
    attempt = 0
    while True:
        try:
            return call(deadline - clock())
        except ApiError as exc:
            attempt += 1
            delay = _delay_before_retry(exc, attempt - 1, rng, base_delay, max_delay)
            # ">=": an attempt started at the deadline would have no time at all.
            if delay is None or attempt >= max_attempts or delay >= deadline - clock():
                raise
            if on_retry is not None:
                on_retry(exc, delay)
            sleep(delay)
            if clock() >= deadline:  # the sleep overran: no attempt may start past the budget
                raise


def _delay_before_retry(
    exc: ApiError, attempt: int, rng: Callable[[], float], base_delay: float, max_delay: float
) -> float | None:
    """How long to wait before retrying ``exc``, or None when it must not be retried.

    Why each class is or is not retried:

    * TransientApiError (refused, reset, timeout, 5xx): outages are often short.  A POST whose
      answer was lost may already be stored, so retrying can create a duplicate Idlemon log;
      we accept that because every log carries the run id in its metas, which identifies
      duplicates, whereas a missing log raises a false "idle" alarm.  (A POST answered 2xx is
      never retried, whatever its body: the clients pass ``require_json=False`` there.)
    * RateLimitedError (429): the server says when to come back; waiting less only burns quota.
      A wait beyond MAX_RETRY_AFTER_S is not worth holding a run or a flush for.
    * MalformedResponseError: usually a proxy's HTML error page during an outage.
    * AuthError, NotFoundError, RejectedError (retriable=False): the same request will be
      refused again until someone fixes the token, slug or body.
    """
    if not exc.retriable:
        return None
    floor = MIN_RETRY_WAIT_S
    if isinstance(exc, RateLimitedError) and exc.retry_after is not None:
        if exc.retry_after > MAX_RETRY_AFTER_S:
            return None
        return max(floor, exc.retry_after)
    # Jitter ("Exponential Backoff And Jitter", AWS): cron fires jobs on many hosts at the
    # same second, and random waits keep their retries from arriving together again.
    ceiling = max(floor, min(max_delay, base_delay * 2 ** min(attempt, 32)))
    return floor + rng() * (ceiling - floor)


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
        session: requests.Session | None = None,
        timeout: Timeout = DEFAULT_TIMEOUT,
    ) -> None:
        self.base_url = check_base_url(base_url, self.service)
        self._token = token
        self._session = session
        self._owns_session = session is None
        self.timeout = timeout

    def __repr__(self) -> str:  # never show the token
        return f"{type(self).__name__}(base_url={self.base_url!r})"

    def _session_in_use(self) -> requests.Session:
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
