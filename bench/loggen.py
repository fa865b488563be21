"""Realistic cron-job log lines, written fast: one varied block built once, written repeatedly.

The block mixes what batch jobs print: ISO timestamps, INFO/DEBUG/WARN/ERROR levels, worker
names, ``processed N rows`` progress lines, slow SQL, long JSON payloads, the odd multi-line
Python traceback and a rare FATAL.  Lengths vary from ~40 bytes to a few KiB; a few lines
carry Latin-1 accented names (``José Müller``), as customer data does.  The block is seeded, so
every run of the benchmark feeds the same bytes.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

BLOCK_BYTES = 4 << 20
WORKERS = [f"etl-worker-{i}" for i in range(1, 9)] + ["scheduler", "exporter", "main"]
TABLES = ["orders", "customers", "invoices", "line_items", "events", "sessions", "payments"]
NAMES = ["Ana Souza", "José Müller", "Zoë Lefèvre", "Li Wei", "Björn Ståhl", "Sam Taylor"]
ERRORS = [
    "upstream returned 503 for batch {n}, retrying in {s}s (attempt {a}/5)",
    "could not parse record {n}: unexpected end of JSON input",
    "timeout after {s}s waiting for lock on table {t}",
]
TRACEBACK_FRAMES = [
    ('/srv/etl/app/jobs/load.py', 'load_batch', 'conn.execute(stmt, rows)'),
    ('/srv/etl/app/db.py', 'execute', 'return self._cursor.execute(sql, params)'),
    ('/usr/lib/python3/dist-packages/psycopg2/extras.py', 'execute', 'return super().execute(q)'),
    ('/srv/etl/app/jobs/transform.py', 'run', 'for row in self.source.rows():'),
]


def _line(rng: random.Random, ts: datetime) -> str:
    stamp = ts.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond // 1000:03d}Z"
    worker = rng.choice(WORKERS)
    r = rng.random()
    n = rng.randrange(1, 250_000)
    if r < 0.32:
        return (f"{stamp} INFO  [{worker}] processed {n} rows from {rng.choice(TABLES)} "
                f"in {rng.uniform(0.01, 9):.3f}s")
    if r < 0.57:
        return (f"{stamp} DEBUG [{worker}] heartbeat seq={n} queue_depth={rng.randrange(90)} "
                f"lag_ms={rng.randrange(400)}")
    if r < 0.72:
        return (f"{stamp} INFO  [{worker}] fetched page {rng.randrange(1, 900)}/900 "
                f"({rng.randrange(512, 65536)} bytes) from https://api.example.com/v2/items"
                f"?cursor={rng.getrandbits(96):024x}")
    if r < 0.77:
        items = ", ".join(
            f'{{"id": {rng.randrange(10**6)}, "sku": "SKU-{rng.randrange(10**5):05d}", '
            f'"qty": {rng.randrange(1, 40)}, "price": {rng.uniform(1, 500):.2f}}}'
            for _ in range(rng.randrange(1, 20))
        )
        return f'{stamp} INFO  [exporter] payload={{"order": {n}, "items": [{items}]}}'
    if r < 0.87:
        return (f"{stamp} INFO  [{worker}] upserted customer {n} ({rng.choice(NAMES)}, "
                f"{rng.choice(['PT', 'DE', 'FR', 'CN', 'SE', 'US'])})")
    if r < 0.96:
        return (f"{stamp} WARN  [{worker}] slow query took {rng.uniform(1, 30):.2f}s: "
                f"SELECT id, status, updated_at FROM {rng.choice(TABLES)} WHERE updated_at > "
                f"'{ts.date().isoformat()}' AND shard = {rng.randrange(64)} ORDER BY id LIMIT 5000")
    if r < 0.99:
        msg = rng.choice(ERRORS).format(
            n=n, s=rng.randrange(1, 60), a=rng.randrange(1, 6), t=rng.choice(TABLES)
        )
        return f"{stamp} ERROR [{worker}] {msg}"
    if r < 0.9995:
        frames = rng.sample(TRACEBACK_FRAMES, rng.randrange(2, 5))
        lines = [f"{stamp} ERROR [{worker}] batch {n} failed", "Traceback (most recent call last):"]
        for path, func, code in frames:
            lines.append(f'  File "{path}", line {rng.randrange(20, 900)}, in {func}')
            lines.append(f"    {code}")
        lines.append("psycopg2.errors.DeadlockDetected: deadlock detected")
        return "\n".join(lines)
    return f"{stamp} FATAL [main] giving up after 5 attempts: connection refused"


def build_block(size: int = BLOCK_BYTES, seed: int = 1) -> bytes:
    """About ``size`` bytes of complete log lines (ends with a newline)."""
    rng = random.Random(seed)
    ts = datetime(2024, 5, 17, 2, 0, tzinfo=UTC)
    parts, total = [], 0
    while total < size:
        ts += timedelta(microseconds=rng.randrange(50, 20_000))
        line = _line(rng, ts) + "\n"
        parts.append(line)
        total += len(line)
    return "".join(parts).encode("utf-8")


@dataclass(frozen=True)
class LogFile:
    """A written log: ``reps`` copies of ``block`` then ``tail`` (a prefix of the block)."""

    path: Path
    block: bytes
    reps: int
    tail: bytes

    @property
    def size(self) -> int:
        return self.reps * len(self.block) + len(self.tail)

    @property
    def lines(self) -> int:
        return self.reps * self.block.count(b"\n") + self.tail.count(b"\n")

    def expected_count(self, pattern: str) -> int:
        """Lines that match ``pattern``, checked one line at a time (the reference result)."""
        rx = re.compile(pattern)
        per_block = sum(1 for line in self.block.decode().splitlines() if rx.search(line))
        in_tail = sum(1 for line in self.tail.decode().splitlines() if rx.search(line))
        return self.reps * per_block + in_tail

    def expected_meta(self, pattern: str) -> str | None:
        """First group (or whole match) of the last matching line, checked line by line."""
        rx = re.compile(pattern)
        for part in (self.tail, self.block if self.reps else b""):
            for line in reversed(part.decode().splitlines()):
                m = rx.search(line)
                if m:
                    return m.group(1) if rx.groups else m.group(0)
        return None


def write_log(path: Path, size: int, seed: int = 1) -> LogFile:
    """Write about ``size`` bytes of log lines to ``path``, cut at a line end."""
    block = build_block(min(size, BLOCK_BYTES), seed)
    reps = size // len(block)
    tail = block[: block.rfind(b"\n", 0, size - reps * len(block)) + 1]
    with open(path, "wb") as f:
        for _ in range(reps):
            f.write(block)
        f.write(tail)
    return LogFile(path, block, reps, tail)


if __name__ == "__main__":  # a quick look: python bench/loggen.py | head
    import sys

    sys.stdout.buffer.write(build_block(16 << 10))
