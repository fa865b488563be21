"""The HTTP transport: the one requests session, and sending one JSON request over it.

This is the only module that imports ``requests`` or ``urllib3``, and only inside the functions
that need them, never at module import time: most jobwrap runs never touch the network, and
importing requests costs start-up time (:func:`prewarm` imports it while a job runs).

Contracts:

* :func:`send_json` turns every failure into a :class:`jobwrap.errors.ApiError` subclass whose
  message is one line, names what happened and the HTTP status, and never contains a token or
  a request header, in any case or encoding (:func:`jobwrap.net.masking.scrub`).  No
  ``requests`` exception escapes it.
* Every request is bounded as a whole (:mod:`jobwrap.net.deadline`): ``Timeout.total_s``
  covers connecting, the headers and the body together, and a body is read up to
  ``MAX_BODY_BYTES`` only.
* Nothing here retries: :func:`jobwrap.net.retry.retry` is the one retry policy.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from jobwrap import __version__
from jobwrap.errors import ApiError, MalformedResponseError, TransientApiError
from jobwrap.net.deadline import CHUNK_BYTES, DEFAULT_TIMEOUT, Timeout, Watchdog, read_body
from jobwrap.net.masking import safe_url, scrub, scrub_json, secrets_of
from jobwrap.net.message import Context, Response, raise_for_status

if TYPE_CHECKING:
    import requests
    from requests import Session


def default_user_agent() -> str:
    """``jobwrap/<version>``."""
    return f"jobwrap/{__version__}"


def _keep_request(request: Any) -> Any:
    return request


def make_session(user_agent: str | None = None) -> Session:
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
            Watchdog.register(self.sock)

        def request(self, *args: Any, **kwargs: Any) -> None:
            Watchdog.register(self.sock)  # a reused connection: connect() is not called
            super().request(*args, **kwargs)

    class GuardedHTTPS(HTTPSConnection):
        def connect(self) -> None:
            super().connect()
            Watchdog.register(self.sock)

        def request(self, *args: Any, **kwargs: Any) -> None:
            Watchdog.register(self.sock)
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


def send_json(
    session: Session,
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
    ``MAX_BODY_BYTES``.  Never follows redirects (a POST would become a GET, and a custom
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
    ctx = Context(service, f"{method} {safe_url(url)}", secrets_of(headers) + secrets)
    with Watchdog(timeout.total_s) as dog:
        raw = _transmit(session, method, url, headers, json_body, timeout, ctx, dog)
        with raw:  # releases (or, after a partial read, closes) the connection at once
            status, reason = raw.status_code, scrub(raw.reason or "", ctx.secrets)
            headers_received = _lower_keys(raw.headers)
            content, problem = read_body(raw.iter_content(CHUNK_BYTES), dog)
    body, is_json = (None, False) if problem else _parse_json(content)
    if not is_json and problem is None and status != 204:
        kind = (headers_received.get("content-type") or "no content type")[:40]
        problem = f"the body is not JSON ({scrub(kind, ctx.secrets)})"
    response = Response(status, headers_received, scrub_json(body, ctx.secrets))
    if on_response is not None:
        on_response(response)
    raise_for_status(response, reason, ctx)
    if problem is None or status == 204:
        return response
    if not require_json:
        return Response(status, headers_received, None, problem)
    message = f"{ctx.service} answered {ctx.where} with HTTP {status} but {problem}"
    if "not JSON" in problem or "larger" in problem:
        raise MalformedResponseError(message, status=status)
    raise TransientApiError(message, status=status)


def _lower_keys(headers: Mapping[str, str]) -> dict[str, str]:
    return {name.lower(): value for name, value in headers.items()}


def _parse_json(content: bytes) -> tuple[Any, bool]:
    try:
        return json.loads(content), True
    except ValueError:  # JSONDecodeError and UnicodeDecodeError both derive from it
        return None, False


def _transmit(
    session: Session,
    method: str,
    url: str,
    headers: Mapping[str, str],
    json_body: Any,
    timeout: Timeout,
    ctx: Context,
    dog: Watchdog,
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
            stream=True,  # the body is read by read_body: bounded in size and time
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


def _transmit_error(exc: Exception, timeout: Timeout, ctx: Context) -> ApiError:
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



def prewarm() -> threading.Thread:
    """Import requests in the background, so a request made later adds little wall time."""

    def load() -> None:
        try:
            import requests  # noqa: F401
        except Exception:
            pass  # the real import will report the problem

    thread = threading.Thread(target=load, name="jobwrap-prewarm", daemon=True)
    thread.start()
    return thread
