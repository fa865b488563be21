"""The bounds of one request as a whole: its timeouts, its deadline and the size of its body.

Socket timeouts bound each wait for bytes, not the whole answer: a server dripping one byte a
second never trips them.  A :class:`Watchdog` shuts the request's sockets at its deadline
instead, and :func:`read_body` stops at :data:`MAX_BODY_BYTES`.  Nothing here imports
requests: the session's connections register their sockets (see :mod:`jobwrap.net.http`).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

_MIN_TIMEOUT_S = 0.001  # urllib3 refuses a timeout of 0; an exhausted budget still needs a value
# The APIs' answers are a few KiB (ProMonitor's 100 checks: ~20 KiB); anything far larger is
# not an answer, and reading it whole could exhaust memory (an endless chunked body).
MAX_BODY_BYTES = 256 * 1024
CHUNK_BYTES = 16 * 1024


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


class Watchdog:
    """Shuts the sockets of one request at its deadline, wherever requests is blocked on them.

    Socket timeouts bound each wait for bytes, not the whole answer: a server sending a byte
    a second never trips them.  The connections of the session register their socket with
    the watchdog of the request their thread is making (see :func:`jobwrap.net.http.make_session`).
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

    def __enter__(self) -> Watchdog:
        Watchdog._current.dog = self
        self._timer.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        Watchdog._current.dog = None
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
                shut(sock)

    def _fire(self) -> None:
        with self._lock:
            if self._done:
                return
            self.fired = True
            for sock in self._sockets:
                shut(sock)


def shut(sock: Any) -> None:
    """Shut ``sock`` for reading and writing; a socket already closed is left alone."""
    import socket

    try:
        # The plain socket's shutdown, also for a TLS socket: SSLSocket.shutdown() would drop
        # its SSL object under the thread still reading through it.
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except (OSError, TypeError, ValueError):
        pass  # already closed



def read_body(chunks: Iterable[bytes], dog: Watchdog) -> tuple[bytes, str | None]:
    """The body, up to MAX_BODY_BYTES, within the deadline; or what went wrong reading it.

    ``chunks`` is the answer's body as it arrives (``iter_content``); requests' errors while
    reading it are OSErrors (``RequestException`` derives from ``IOError``).
    """
    collected: list[bytes] = []
    size = 0
    try:
        for chunk in chunks:
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                return b"", f"the body is larger than {MAX_BODY_BYTES // 1024} KiB"
            collected.append(chunk)
            if dog.fired:
                break
    except (OSError, ValueError):
        if not dog.fired:
            return b"", "the answer was cut short"
    if dog.fired:
        return b"", f"the answer was not complete within {dog.seconds:g} s"
    return b"".join(collected), None
