"""Sections that talk HTTP: the report flush, the cost of reporting, the ProMonitor cross-check.

Every request goes to a fake server of the test suite started here on 127.0.0.1 (see
``fakeservers.py``); nothing leaves the machine.  Each section keeps its runs in a state dir of
its own under the scratch dir, so the passthrough section's analysis check never sees them.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from harness import BenchError, Context, Figure, Row, Sample, section, walls

if TYPE_CHECKING:
    from fakeservers import KeepAliveIdlemon

# jobwrap's own modules and the test fakes are imported by the sections that use them, so
# `--list` and the other sections work even where they cannot be imported.

MONITOR = "bar"  # a monitor of the fake Idlemon's project
FLUSH_REPORTS = 1000
PROMONITOR_DELAY_S = 0.5
PROMONITOR_JOB_S = 1  # the job runs longer than ProMonitor takes to answer
PROMONITOR_RPM = 1000  # far above what the section sends: the budget never skips a request
# "Close to zero" (issue 4) read as: within 5 % of a 1 s job's wall time (≈ 55 ms here).  The
# issue gives no number; this one is the benchmark's.
PROMONITOR_TARGET = 1.05


def _paired_added_ms(got: list[Sample], base: list[Sample]) -> Figure:
    """Per-round differences (ms): the variants of a round ran back to back."""
    return Figure(tuple((g.wall_s - b.wall_s) * 1000 for g, b in zip(got, base, strict=True)),
                  "ms", digits=0)


def _idlemon_env(ctx: Context, server: KeepAliveIdlemon, state: Path) -> dict[str, str]:
    from fakeservers import IDLEMON_TOKEN

    return ctx.env | {
        "JOBWRAP_STATE_DIR": str(state),
        "JOBWRAP_IDLEMON_URL": server.api_url,
        "JOBWRAP_IDLEMON_TOKEN": IDLEMON_TOKEN,
    }


# --- flush ------------------------------------------------------------------------------------


def _pending_history(directory: Path, count: int) -> set[str]:
    """A history holding ``count`` pending reports of MONITOR, inserted with History.add.

    They read as the backlog of an outage: one successful run a minute, the newest a minute
    ago (so each report also carries the late-delivery metas ``ran_at``/``delayed_s``).
    """
    from jobwrap.store.history import RunRecord, open_history

    host = os.uname().nodename
    now = datetime.now(UTC)
    run_ids: set[str] = set()
    history = open_history(directory)
    try:
        for i in range(count):
            run_id = str(uuid.uuid4())
            started = now - timedelta(minutes=count - i, milliseconds=1234)
            metas = (("exit_code", "0"), ("stdout_lines", "3"), ("stderr_lines", "0"),
                     ("duration_ms", "1234"), ("run_id", run_id), ("host", host),
                     ("rows", str(1000 + i)))
            history.add(RunRecord(
                run_id=run_id, job=MONITOR, monitor=MONITOR, command="/usr/local/bin/backup.sh",
                host=host, started_at=started.isoformat(timespec="milliseconds"),
                duration_ms=1234, exit_code=0, metas=metas, stdout_lines=3,
                report_status="pending",
            ))
            run_ids.add(run_id)
    finally:
        history.close()  # the last connection: SQLite checkpoints the WAL into the file
    return run_ids


@section("flush", f"flush {FLUSH_REPORTS:,} pending reports to a local fake Idlemon")
def flush(ctx: Context) -> list[Row]:
    from fakeservers import KeepAliveIdlemon

    from jobwrap.store.history import open_history

    template = ctx.workdir / "flush-template"
    ctx.say(f"flush: writing {FLUSH_REPORTS:,} pending reports with History.add")
    expected = _pending_history(template, FLUSH_REPORTS)
    db_files = sorted(p.name for p in template.iterdir())
    rounds = min(ctx.rounds, 3)  # each round delivers 1,000 reports: 3 make a median
    state = {"n": 0, "last_flushed": None}
    checks: list[tuple[int, int, int, int, int]] = []  # connections, requests, ports, bad, left
    full, empty = f"jobwrap flush ({FLUSH_REPORTS:,} pending)", "jobwrap flush (nothing pending)"

    with KeepAliveIdlemon() as server:
        marks: dict[str, tuple[int, int, int]] = {}

        def env_for(name: str) -> dict[str, str]:
            if name == full:
                state["n"] += 1
                target = ctx.workdir / f"flush-state-{state['n']}"
                target.mkdir()
                for file in db_files:
                    shutil.copy2(template / file, target / file)
                state["current"] = target
            else:  # the previous round's state dir: same history, its backlog delivered
                target = state["last_flushed"]
                if target is None:  # never the template: it would flush its 1,000 reports
                    raise BenchError("flush: the empty flush must follow a full one")
            conns, reqs, _ = server.counts()
            marks[name] = (conns, reqs, len(server.logs))
            return _idlemon_env(ctx, server, target)

        def after(name: str, _sample: Sample) -> None:
            conns, reqs, logs = marks[name]
            new_conns, new_reqs, ports = server.since(conns, reqs)
            if name != full:
                if new_reqs:
                    raise BenchError(f"{empty} sent {new_reqs} requests")
                return
            sent = Counter(dict(log.metas).get("run_id") for log in server.logs[logs:])
            bad = len(expected ^ set(sent)) + sum(n - 1 for n in sent.values() if n > 1)
            target = state["current"]
            history = open_history(target)
            try:
                left = sum(history.report_backlog().values())
            finally:
                history.close()
            checks.append((new_conns, new_reqs, ports, bad, left))
            state["last_flushed"] = target

        variants = {full: ((*ctx.jobwrap, "flush"),), empty: ((*ctx.jobwrap, "flush"),)}
        ctx.say(f"flush: {rounds} alternating rounds of {FLUSH_REPORTS:,} reports "
                "and an empty flush")
        samples = ctx.alternate(variants, rounds=rounds, env=env_for, after=after)
        handler_errors = list(server.handler_errors)

    got, base = samples[full], samples[empty]
    rates = Figure(tuple(FLUSH_REPORTS / s.wall_s for s in got), "reports/s", digits=0)
    net = walls(got).median - walls(base).median
    conns = Figure(tuple(float(c[0]) for c in checks), "conn.", digits=0)
    bad = Figure(tuple(float(c[3]) for c in checks), "reports", digits=0)
    left = sum(c[4] for c in checks)
    per_conn = ", ".join(f"{c[1]} requests from {c[2]} client port(s)" for c in checks)
    return [
        Row(f"flush {FLUSH_REPORTS:,} pending reports, wall", walls(got), walls(base),
            "jobwrap flush, nothing pending", compare=False,
            note="the baseline is the same command with an empty spool (start-up, history): "
            f"the {FLUSH_REPORTS:,} reports themselves take {net:.2f} s"),
        Row(f"flush {FLUSH_REPORTS:,}: reports per second", rates,
            note=f"{FLUSH_REPORTS / net:.0f} reports/s without the command's fixed cost "
            "(the empty flush); each report is one POST, one answer, one history update"),
        Row(f"flush {FLUSH_REPORTS:,}: TCP connections per flush", conns, max_value=1,
            note=f"every run (warm-up included): {per_conn}; the fake speaks HTTP/1.1 "
            "keep-alive (see fakeservers.py)"),
        Row(f"flush {FLUSH_REPORTS:,}: reports not delivered exactly once", bad, max_value=0,
            note=f"checked by run_id against the {FLUSH_REPORTS:,} inserted, every run; "
            f"left pending or refused afterwards: {left}"
            + (f"; server handler errors: {len(handler_errors)}" if handler_errors else "")),
    ]


# --- the added wall time of a run that reports -------------------------------------------------


@section("report", "added wall time of a run that reports to a local fake Idlemon")
def report(ctx: Context) -> list[Row]:
    from fakeservers import KeepAliveIdlemon

    pairs = max(10, ctx.pairs // 2)
    state = ctx.workdir / "report-state"
    rows: list[Row] = []
    with KeepAliveIdlemon() as server:
        env = _idlemon_env(ctx, server, state)
        for label, job in (("sleep 0.2", ("sleep", "0.2")), ("true", ("true",))):
            reports = f"jobwrap run -m {MONITOR} -- {label}"
            never = f"jobwrap run -m {MONITOR} --report never -- {label}"
            variants = {
                reports: ((*ctx.jobwrap, "run", "-m", MONITOR, "--", *job),),
                never: ((*ctx.jobwrap, "run", "-m", MONITOR, "--report", "never", "--", *job),),
            }
            before = len(server.logs)
            ctx.say(f"report, -- {label}: {pairs} alternating rounds of 2 commands")
            samples = ctx.alternate(variants, rounds=pairs, env=env)
            delivered = len(server.logs) - before
            wanted = len(samples[reports]) + 1  # the warm-up round reports too
            if delivered != wanted:
                raise BenchError(f"{reports}: {delivered} reports arrived, {wanted} expected")
            got, base = samples[reports], samples[never]
            added = _paired_added_ms(got, base)
            why = ("requests is imported while the job sleeps" if label != "true" else
                   "a job too short to hide the import of requests behind")
            rows += [
                Row(f"run that reports, -- {label}", walls(got, "ms"), walls(base, "ms"),
                    "same run, --report never",
                    note=f"{why}; every run's report arrived ({delivered} POSTs)"),
                Row(f"added by reporting, -- {label}", added,
                    note=f"per-round difference of the two (median {added.median:.0f} ms; "
                    f"difference of the medians "
                    f"{walls(got, 'ms').median - walls(base, 'ms').median:.0f} ms)"),
            ]
    return rows


# --- ProMonitor ---------------------------------------------------------------------------------


@section("promonitor", "added wall time of --promonitor, ProMonitor answering in 500 ms")
def promonitor(ctx: Context) -> list[Row]:
    from fakeservers import MONITOR_API, PROMONITOR_KEY, SlowProMonitor

    from jobwrap.promonitor.cache import open_pmcache
    from jobwrap.store.history import open_history

    rounds = 8 if not ctx.quick else 4
    job = ("sleep", str(PROMONITOR_JOB_S))
    with_pm = f"jobwrap run --promonitor ID -- sleep {PROMONITOR_JOB_S}"
    with_fast = f"jobwrap run --promonitor ID -- sleep {PROMONITOR_JOB_S} (answer at once)"
    without = f"jobwrap run -- sleep {PROMONITOR_JOB_S}"
    asking = (with_pm, with_fast)
    runs = {"n": 0}
    missing: list[str] = []  # promonitor runs whose record lacks promonitor_status=up

    # Every run starts from a copy of one state dir whose history and ProMonitor cache exist
    # but hold nothing (a host where jobwrap has run before, its cache entry expired): no
    # cache answers, every run asks, and no run pays for creating the SQLite files.
    template = ctx.workdir / "pm-template"
    open_history(template).close()
    open_pmcache(template, PROMONITOR_KEY, requests_per_minute=PROMONITOR_RPM)

    # A second server answering at once tells the fixed cost of --promonitor (imports, the
    # cache, a larger interpreter to tear down) from the wait for a slow answer.
    with SlowProMonitor(PROMONITOR_DELAY_S) as server, SlowProMonitor(0.0) as fast:
        base_env = ctx.env | {
            "JOBWRAP_PROMONITOR_URL": server.url,
            "JOBWRAP_PROMONITOR_TOKEN": PROMONITOR_KEY,
            "JOBWRAP_PROMONITOR_RPM": str(PROMONITOR_RPM),
        }
        current: dict[str, Path] = {}

        def env_for(name: str) -> dict[str, str]:
            runs["n"] += 1  # a fresh copy of the template for every run, every variant
            current[name] = ctx.workdir / f"pm-state-{runs['n']}"
            shutil.copytree(template, current[name])
            env = base_env | {"JOBWRAP_STATE_DIR": str(current[name])}
            if name == with_fast:
                env["JOBWRAP_PROMONITOR_URL"] = fast.url
            return env

        def after(name: str, _sample: Sample) -> None:
            if name not in asking:
                return
            history = open_history(current[name])
            try:
                record = history.get()
            finally:
                history.close()
            metas = dict(record.metas) if record else {}
            if metas.get("promonitor_status") != "up":
                missing.append(str(metas.get("promonitor_status")))

        pm_run = (*ctx.jobwrap, "run", "--promonitor", MONITOR_API, "--", *job)
        variants = {with_pm: (pm_run,), without: ((*ctx.jobwrap, "run", "--", *job),),
                    with_fast: (pm_run,)}
        ctx.say(f"promonitor: {rounds} alternating rounds of 3 commands "
                f"(~{PROMONITOR_JOB_S} s each)")
        samples = ctx.alternate(variants, rounds=rounds, env=env_for, after=after)
        hits = server.hits + fast.hits
    wanted = 2 * (rounds + 1)
    if hits != wanted or missing:
        raise BenchError(f"--promonitor: {hits} requests for {wanted} runs; runs without "
                         f"promonitor_status=up: {missing}")
    got, base, fast_got = samples[with_pm], samples[without], samples[with_fast]
    added = _paired_added_ms(got, base)
    fixed = _paired_added_ms(fast_got, base)
    slow = _paired_added_ms(got, fast_got)
    return [
        Row(f"--promonitor, answer in {PROMONITOR_DELAY_S * 1000:.0f} ms, job {PROMONITOR_JOB_S} s",
            walls(got, "ms"), walls(base, "ms"), "same run without --promonitor",
            max_ratio=PROMONITOR_TARGET,
            note=f"target: the bench's reading of 'close to zero' (≤ 5 % of the run); "
            f"JOBWRAP_PROMONITOR_RPM={PROMONITOR_RPM} so the budget skips no request; every run "
            f"(every variant) starts from a copy of an empty state dir, so no cache answers: "
            f"{hits} requests for {wanted} runs, each recorded promonitor_status=up"),
        Row("added by --promonitor (answer in 500 ms)", added,
            note=f"per-round difference (difference of the medians "
            f"{walls(got, 'ms').median - walls(base, 'ms').median:.0f} ms)"),
        Row("  of which: --promonitor answered at once", fixed,
            note="the fixed cost, whatever ProMonitor's speed: per-round difference against "
            "no --promonitor"),
        Row("  of which: waiting for the 500 ms answer", slow,
            note="per-round difference of the 500 ms and the immediate answer: ≈ 0 when the "
            "question is really asked while the job runs"),
    ]
