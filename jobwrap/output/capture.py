"""A bounded head and tail of a run's combined output, kept in the history for ``jobwrap show``.

Memory stays bounded whatever the volume: the head stops growing at its byte limit and the tail
keeps only the newest chunks needed to cover its byte limit.  Chunks are kept as the very
objects read from the pipes, so capturing costs no copy on the hot path.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

HEAD_LINES, HEAD_BYTES = 20, 16 * 1024
TAIL_LINES, TAIL_BYTES = 100, 64 * 1024


@dataclass(frozen=True)
class CapturedOutput:
    """The first and last lines of the output; ``omitted_lines`` were between them."""

    head: bytes
    tail: bytes
    omitted_lines: int


class OutputCapture:
    def __init__(self) -> None:
        self._head = bytearray()
        self._tail: deque[bytes] = deque()
        self._tail_size = 0
        self._total = 0

    def feed(self, data: bytes) -> None:
        self._total += len(data)
        if len(self._head) < HEAD_BYTES:
            self._head += data[: HEAD_BYTES - len(self._head)]
        self._tail.append(data)
        self._tail_size += len(data)
        while self._tail_size - len(self._tail[0]) >= TAIL_BYTES:
            self._tail_size -= len(self._tail.popleft())

    def finish(self, total_lines: int) -> CapturedOutput:
        """Cut head and tail at line boundaries; ``total_lines`` is the output's line count."""
        kept = b"".join(self._tail)
        kept_from = self._total - len(kept)  # offset of the first byte still kept for the tail
        small = len(kept) <= HEAD_BYTES + TAIL_BYTES
        if kept_from == 0 and small and _line_count(kept) <= HEAD_LINES + TAIL_LINES:
            return CapturedOutput(kept, b"", 0)
        head = _first_lines(bytes(self._head), HEAD_LINES)
        rest = kept[max(0, len(head) - kept_from) :]  # never show a line twice
        tail = _last_lines(rest[-TAIL_BYTES:], TAIL_LINES)
        shown = _line_count(head) + _line_count(tail)
        return CapturedOutput(head, tail, max(0, total_lines - shown))


def _first_lines(data: bytes, limit: int) -> bytes:
    end = -1
    for _ in range(limit):
        end = data.find(b"\n", end + 1)
        if end == -1:
            return data
    return data[: end + 1]


def _last_lines(data: bytes, limit: int) -> bytes:
    start = len(data) - 1 if data.endswith(b"\n") else len(data)
    for _ in range(limit):
        start = data.rfind(b"\n", 0, start)
        if start == -1:
            return data
    return data[start + 1 :]


def _line_count(data: bytes) -> int:
    return data.count(b"\n") + (1 if data and not data.endswith(b"\n") else 0)
