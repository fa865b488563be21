"""The test suite's fake Idlemon and ProMonitor, adapted for measuring (127.0.0.1 only).

The fakes live in ``tests/fakes`` (repo root put on ``sys.path``); this module only adds what
a benchmark needs on top of them:

* :class:`KeepAliveIdlemon` is the test fake in its ``keep_alive`` mode: HTTP/1.1 with
  keep-alive and ``TCP_NODELAY``, as the real API behind its web server does (the tests use
  HTTP/1.0 by default, a connection per answer). It also counts TCP connections (one handler
  per accepted connection) and notes the client port of every request, so "one connection
  reused" is observed, not assumed.
* :class:`SlowProMonitor` answers every request after a fixed delay, with a rate limit far
  above anything the bench sends (the budget under test is jobwrap's own, not the server's).
"""

from __future__ import annotations

import sys
import threading
from collections import Counter
from typing import Any

from harness import BENCH_DIR

if str(BENCH_DIR.parent) not in sys.path:
    sys.path.insert(0, str(BENCH_DIR.parent))

from tests.fakes import LOOPBACK, RecordedRequest, Reply, _Handler  # noqa: E402
from tests.fakes.idlemon_server import TOKEN as IDLEMON_TOKEN  # noqa: E402
from tests.fakes.idlemon_server import IdlemonServer  # noqa: E402
from tests.fakes.promonitor_server import KEY as PROMONITOR_KEY  # noqa: E402
from tests.fakes.promonitor_server import MONITOR_API, ProMonitorServer  # noqa: E402

__all__ = [
    "IDLEMON_TOKEN",
    "LOOPBACK",
    "MONITOR_API",
    "PROMONITOR_KEY",
    "KeepAliveIdlemon",
    "SlowProMonitor",
]


class _KeepAliveHandler(_Handler):
    def setup(self) -> None:
        super().setup()
        self.server.note_connection(self.client_address)  # type: ignore[attr-defined]

    def _serve(self) -> None:
        self.server.note_request(self.client_address)  # type: ignore[attr-defined]
        super()._serve()


class KeepAliveIdlemon(IdlemonServer):
    """The fake Idlemon over HTTP/1.1 keep-alive, counting connections and request ports."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(keep_alive=True, **kwargs)
        assert self.server_address[0] == LOOPBACK
        self.RequestHandlerClass = _KeepAliveHandler
        self._conn_lock = threading.Lock()
        self.connections: list[tuple[str, int]] = []  # one entry per accepted connection
        self.request_peers: list[tuple[str, int]] = []  # the client address of each request

    def note_connection(self, peer: tuple[str, int]) -> None:
        with self._conn_lock:
            self.connections.append(peer)

    def note_request(self, peer: tuple[str, int]) -> None:
        with self._conn_lock:
            self.request_peers.append(peer)

    def counts(self) -> tuple[int, int, int]:
        """(connections accepted, requests, distinct client ports) so far."""
        with self._conn_lock:
            ports = Counter(port for _, port in self.request_peers)
            return len(self.connections), len(self.request_peers), len(ports)

    def since(self, connections: int, requests: int) -> tuple[int, int, int]:
        """Like :meth:`counts`, for what came after the given counts."""
        with self._conn_lock:
            peers = self.request_peers[requests:]
            return len(self.connections) - connections, len(peers), len({p for _, p in peers})


class SlowProMonitor(ProMonitorServer):
    """The fake ProMonitor, answering every request after ``delay_s`` (as ``Reply.slow``)."""

    def __init__(self, delay_s: float, per_minute: int = 100_000, **kwargs: Any) -> None:
        super().__init__(per_minute=per_minute, **kwargs)
        assert self.server_address[0] == LOOPBACK
        self.delay_s = delay_s

    def _admit(self, request: RecordedRequest) -> Reply | None:
        planned = super()._admit(request)
        return planned or Reply.slow(self.delay_s)
