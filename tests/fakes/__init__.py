"""Fake HTTP servers for the API clients' tests: real sockets, recorded requests, planned faults.

Every server binds 127.0.0.1 on a free port (never another address), serves from a
background thread, and is used as a context manager::

    with FakeServer() as server:
        server.fail_next(2, Reply.html(503))
        ...  # requests to server.url
        assert server.hits == 3

A planned :class:`Reply` replaces the server's normal answer for one request; without one the
server answers as the API it imitates (:meth:`FakeServer.route`).  Every request is recorded
first, whatever its answer.  Closing the server releases slow replies and joins all handler
threads, so nothing outlives a test.
"""

from __future__ import annotations

import collections
import json
import socketserver
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self

LOOPBACK = "127.0.0.1"  # the only address a fake may listen on


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the server received it.  ``body`` is the parsed JSON, or None."""

    method: str
    path: str  # as sent, still percent-encoded
    headers: dict[str, str]
    body: Any
    raw_body: bytes
    peer_port: int = 0  # the client's port: requests sharing one are on one connection

    def header(self, name: str) -> str | None:
        """Case-insensitive header lookup."""
        for key, value in self.headers.items():
            if key.lower() == name.lower():
                return value
        return None


@dataclass(frozen=True)
class Reply:
    """One answer.  ``delay_s``: wait first (ended early when the server closes).

    ``passthrough``: after the delay, answer as the API normally would.  ``drop``: close the
    connection without answering at all.

    Hostile answers (each ends when the client hangs up or the server closes):
    ``drip_s``: send the whole answer, status line included, one byte every ``drip_s``
    (``drip_headers`` False: the headers at once, then the body dripping).  ``endless``: a
    chunked body that never ends.  ``huge_bytes``: a body of that many bytes (streamed, never
    held in memory), announced with its Content-Length.
    """

    status: int = 200
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()
    delay_s: float = 0.0
    passthrough: bool = False
    drop: bool = False
    drip_s: float = 0.0
    drip_headers: bool = True
    endless: bool = False
    huge_bytes: int = 0

    @classmethod
    def json(cls, status: int, payload: Any, headers: tuple[tuple[str, str], ...] = ()) -> Reply:
        content = (("Content-Type", "application/json"), *headers)
        return cls(status, json.dumps(payload).encode(), content)

    @classmethod
    def html(cls, status: int = 503) -> Reply:
        """What a proxy in front of the API sends during an outage."""
        page = b"<html><body><h1>503 Service Temporarily Unavailable</h1></body></html>"
        return cls(status, page, (("Content-Type", "text/html"),))

    @classmethod
    def rate_limited(cls, retry_after: str | None = "30") -> Reply:
        headers = (("Retry-After", retry_after),) if retry_after is not None else ()
        return cls.json(429, {"error": "Too Many Requests"}, headers)

    @classmethod
    def malformed(cls, status: int = 200) -> Reply:
        """A JSON content type with a body cut short."""
        return cls(status, b'{"log": {"id": "d8d4', (("Content-Type", "application/json"),))

    @classmethod
    def slow(cls, delay_s: float) -> Reply:
        """The normal answer, after ``delay_s`` (or when the server closes, if sooner)."""
        return cls(delay_s=delay_s, passthrough=True)

    @classmethod
    def dropped(cls) -> Reply:
        """Close the connection without a byte of answer."""
        return cls(drop=True)

    @classmethod
    def dripping(cls, payload: Any = None, *, every_s: float = 0.2,
                 headers_too: bool = True) -> Reply:
        """A JSON answer sent one byte at a time, each byte well within any read timeout."""
        base = cls.json(200, {"ok": True} if payload is None else payload)
        return cls(base.status, base.body, base.headers, drip_s=every_s,
                   drip_headers=headers_too)

    @classmethod
    def endless_chunked(cls) -> Reply:
        """200, JSON content type, a chunked body that never ends."""
        return cls(headers=(("Content-Type", "application/json"),), endless=True)

    @classmethod
    def huge(cls, size: int = 1 << 30) -> Reply:
        """200 with a Content-Length body of ``size`` bytes (1 GiB by default)."""
        return cls(headers=(("Content-Type", "application/json"),), huge_bytes=size)


class FakeClock:
    """A clock that moves only when told; ``sleep`` moves it and records the wait."""

    def __init__(self, start: float = 1_000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    def advance(self, seconds: float) -> None:
        self.now += seconds


class FakeServer(ThreadingHTTPServer):
    """A recording HTTP server on 127.0.0.1; answers ``{"ok": true}`` unless a reply is planned.

    Subclasses imitate an API by overriding :meth:`route`.  It speaks HTTP/1.0 (a connection
    per request) unless ``keep_alive``: then HTTP/1.1, and a client may reuse its connection.
    """

    # Non-daemon handler threads, so server_close() joins them: no thread outlives a test.
    daemon_threads = False

    def __init__(self, *, keep_alive: bool = False) -> None:
        super().__init__((LOOPBACK, 0), _Handler)
        self.keep_alive = keep_alive
        self._lock = threading.Lock()
        self._received: list[RecordedRequest] = []
        self._planned: collections.deque[Reply] = collections.deque()
        self._release = threading.Event()  # set on close: ends every slow reply's wait
        self._thread: threading.Thread | None = None
        self.handler_errors: list[str] = []  # e.g. a client that hung up before a slow reply

    def server_bind(self) -> None:
        # HTTPServer.server_bind() does a reverse DNS lookup (getfqdn) that can take seconds.
        socketserver.TCPServer.server_bind(self)
        self.server_name = LOOPBACK
        self.server_port = self.server_address[1]

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.server_port}"

    def start(self) -> Self:
        self._thread = threading.Thread(
            target=self.serve_forever, kwargs={"poll_interval": 0.005}, daemon=True
        )
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving, release slow replies, join every thread, close the socket."""
        self._release.set()
        if self._thread is not None:
            self.shutdown()
            self._thread.join()
            self._thread = None
        self.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def plan(self, *replies: Reply) -> None:
        """Answer the next requests with ``replies``, in order, instead of normally."""
        with self._lock:
            self._planned.extend(replies)

    def fail_next(self, count: int, reply: Reply) -> None:
        """Answer the next ``count`` requests with ``reply``."""
        self.plan(*([reply] * count))

    @property
    def received(self) -> list[RecordedRequest]:
        """A copy of every request received so far, oldest first."""
        with self._lock:
            return list(self._received)

    @property
    def hits(self) -> int:
        with self._lock:
            return len(self._received)

    def route(self, request: RecordedRequest) -> Reply:
        """The normal answer to ``request``; subclasses imitate their API here."""
        return Reply.json(200, {"ok": True})

    def wait_released(self, seconds: float) -> None:
        """Wait ``seconds``, or less if the server is closing."""
        self._release.wait(seconds)

    def _admit(self, request: RecordedRequest) -> Reply | None:
        """Record ``request``; return the planned reply for it, if any."""
        with self._lock:
            self._received.append(request)
            return self._planned.popleft() if self._planned else None

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Expected when a client gave up (read timeout) before a slow reply was written; keep
        # it for inspection rather than printing a traceback into the test output.
        import traceback

        self.handler_errors.append(traceback.format_exc(limit=1))


class _Handler(BaseHTTPRequestHandler):
    server: FakeServer
    timeout = 5  # a connection that never sends a request cannot hold close() for long

    def setup(self) -> None:
        if self.server.keep_alive:
            self.protocol_version = "HTTP/1.1"
            # As production servers do: else Nagle against the client's delayed ACK adds
            # ~40 ms to every answer on a kept-alive connection.
            self.disable_nagle_algorithm = True
        super().setup()

    def do_GET(self) -> None:
        self._serve()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep test output clean; the server records every request instead

    def _serve(self) -> None:
        request = self._read_request()
        reply = self.server._admit(request) or Reply(passthrough=True)
        if reply.delay_s:
            self.server.wait_released(reply.delay_s)
        if reply.drop:
            self.close_connection = True
            return
        if reply.passthrough:
            reply = self.server.route(request)
        if reply.drip_s or reply.endless or reply.huge_bytes:
            self.close_connection = True
            try:
                self._write_hostile(reply)
            except OSError:
                pass  # the client gave up, as it should
            return
        self._write(reply)

    def _read_request(self) -> RecordedRequest:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        return RecordedRequest(self.command, self.path, dict(self.headers.items()), body, raw,
                               peer_port=self.client_address[1])

    def _write(self, reply: Reply) -> None:
        self.send_response(reply.status)
        for name, value in reply.headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(reply.body)))
        self.end_headers()
        self.wfile.write(reply.body)

    def _head(self, reply: Reply, extra: tuple[tuple[str, str], ...]) -> bytes:
        lines = [f"HTTP/1.1 {reply.status} OK", *(f"{n}: {v}" for n, v in reply.headers)]
        lines += [f"{n}: {v}" for n, v in extra]
        lines.append("Connection: close")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def _write_hostile(self, reply: Reply) -> None:
        """The drip, endless and huge answers, written raw until done or the client leaves."""
        release = self.server._release
        out = self.wfile
        if reply.drip_s:
            head = self._head(reply, (("Content-Length", str(len(reply.body))),))
            if not reply.drip_headers:
                out.write(head)
                out.flush()
                head = b""
            for byte in head + reply.body:
                if release.wait(reply.drip_s):
                    return
                out.write(bytes([byte]))
                out.flush()
            return
        if reply.endless:
            out.write(self._head(reply, (("Transfer-Encoding", "chunked"),)))
            chunk = b" " * 65536
            framed = b"%x\r\n%s\r\n" % (len(chunk), chunk)
            while not release.is_set():
                out.write(framed)
            return
        out.write(self._head(reply, (("Content-Length", str(reply.huge_bytes)),)))
        left = reply.huge_bytes
        block = b" " * 65536
        while left > 0 and not release.is_set():
            out.write(block[:left])
            left -= len(block)


def json_error(status: int, message: str, **extra: Any) -> Reply:
    """An API error answer: ``{"message": ...}`` plus any ``extra`` fields."""
    return Reply.json(status, {"message": message, **extra})
