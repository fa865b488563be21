"""The benchmark sections: one registered function each (see harness.section).

To add one: write a function that builds its variants, measures them with ``ctx.alternate``
against a baseline from the same run and returns rows with targets, then decorate it with
``@section(...)``.  Start-up, passthrough and its diagnostics are here; reporting, flush and
ProMonitor in ``sections_net.py``; the cron supervisor in ``sections_cron.py``.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass

import loggen
from harness import BENCH_DIR, Context, Row, Sample, cpu, peak_rss, section, walls

# The three metas of the benchmark ("with three metas": three --meta options): a
# literal-led pattern, an alternation (its value: the last matching line's whole match) and a
# capture.  The target (≤ 3×) is measured with these.
METAS = (
    ("--meta", r"a=processed (\d+) rows"),
    ("--meta", "b=ERROR|Traceback|FATAL"),
    ("--meta", r"c=(\d{4}-\d\d-\d\d)"),
)
# The same with the alternation as a --count (every line must be searched, not just the last
# matching one): shown for information, next to the target row, without a verdict.
METAS_COUNT = (METAS[0], ("--count", "b=ERROR|Traceback|FATAL"), METAS[2])
COUNT_LABEL = "3 metas (info: alternation as --count)"
STARTUP_TARGET = 4.0
PLAIN_TARGET, METAS_TARGET = 1.5, 3.0
RSS_TARGET_MIB = 40
WRITE_PIECE = 8192  # the writer generator's write size: Python's default stdout buffer


# --- start-up --------------------------------------------------------------------------------


@section("startup", "start-up: `jobwrap run -- true` against `python -c pass`")
def startup(ctx: Context) -> list[Row]:
    py = ctx.python
    variants = {
        "python -c pass": ((py, "-c", "pass"),),
        "python -c 'import click'": ((py, "-c", "import click"),),
    }
    for label, prefix in ctx.jobwrap_variants.items():
        variants[f"jobwrap run -- true ({label})"] = ((*prefix, "run", "--", "true"),)
    ctx.say(f"start-up: {ctx.pairs} alternating rounds of {len(variants)} commands")
    samples = ctx.alternate(variants, rounds=ctx.pairs, warmup=2)
    base = walls(samples["python -c pass"], "ms")
    rows = [
        Row(
            f"start-up, {label}",
            walls(samples[f"jobwrap run -- true ({label})"], "ms"),
            base,
            "python -c pass",
            max_ratio=STARTUP_TARGET,
        )
        for label in ctx.jobwrap_variants
    ]
    first = next(iter(ctx.jobwrap_variants))
    rows.append(
        Row(
            f"peak RSS, jobwrap run -- true ({first})",
            peak_rss(samples[f"jobwrap run -- true ({first})"]),
            peak_rss(samples["python -c pass"]),
            "python -c pass",
            compare=False,
            note="jobwrap's resting size: the part of the RSS budget no output can shrink",
        )
    )
    rows.append(
        Row(
            "reference: python -c 'import click'",
            walls(samples["python -c 'import click'"], "ms"),
            base,
            "python -c pass",
            note="what importing click alone costs; not a jobwrap figure",
        )
    )
    return rows


# --- the generators of log output ---------------------------------------------------------------


@dataclass(frozen=True)
class Generator:
    name: str  # as given to --gen
    label: str
    argv: tuple[str, ...]


def log_file(ctx: Context) -> loggen.LogFile:
    """The generators' data, written once per benchmark run and shared by the sections."""
    if "log" not in ctx.cache:
        ctx.say(f"writing {ctx.size_mib} MiB of log lines")
        log = loggen.write_log(ctx.workdir / "log.txt", ctx.size_mib << 20)
        (ctx.workdir / "block.txt").write_bytes(log.block)
        ctx.cache["log"] = log
    log = ctx.cache["log"]
    assert isinstance(log, loggen.LogFile)
    return log


def generators(ctx: Context) -> list[Generator]:
    """GEN, the command whose output is copied: the same bytes whichever is chosen."""
    log = log_file(ctx)
    emit = (ctx.python, "-I", "-S", str(BENCH_DIR / "emit.py"))
    known = {
        "cat": Generator("cat", "GEN=cat", ("cat", str(log.path))),
        "writer": Generator(
            "writer",
            "GEN=8 KiB writer",
            (*emit, str(ctx.workdir / "block.txt"), str(log.size), str(WRITE_PIECE)),
        ),
    }
    return [known[name] for name in ctx.gens]


def _rate(log: loggen.LogFile, samples: list[Sample]) -> str:
    return f"{log.size / 1e6 / walls(samples).median:.0f} MB/s"


def _cpu_note(label: str, samples: list[Sample]) -> str:
    return f"{label} {cpu(samples).median:.2f} s"


# --- passthrough and peak RSS --------------------------------------------------------------------


@section("passthrough", "passthrough of log lines against `GEN | cat`, plain and with 3 metas")
def passthrough(ctx: Context) -> list[Row]:
    log = log_file(ctx)
    size = f"{log.size / (1 << 20):.0f} MiB"
    metas = [arg for pair in METAS for arg in pair]
    metas_count = [arg for pair in METAS_COUNT for arg in pair]
    rows: list[Row] = []
    plain_all: list[Sample] = []
    metas_all: list[Sample] = []
    count_all: list[Sample] = []
    cat_all: list[Sample] = []
    for gen in generators(ctx):
        variants = {
            f"GEN | cat [{gen.name}]": (gen.argv, ("cat",)),
            f"jobwrap run -- GEN [{gen.name}]": ((*ctx.jobwrap, "run", "--", *gen.argv),),
            f"jobwrap run (3 metas) -- GEN [{gen.name}]": (
                (*ctx.jobwrap, "run", *metas, "--", *gen.argv),
            ),
            f"jobwrap run (3 metas, b as --count) -- GEN [{gen.name}]": (
                (*ctx.jobwrap, "run", *metas_count, "--", *gen.argv),
            ),
        }
        ctx.say(f"passthrough, {gen.label}: {ctx.rounds} alternating rounds of 4 commands")
        samples = ctx.alternate(variants, rounds=ctx.rounds)
        cat, plain, with_metas, with_count = samples.values()
        cat_all += cat
        plain_all += plain
        metas_all += with_metas
        count_all += with_count
        cpu_cat = _cpu_note("CPU of the pipeline: GEN | cat", cat)
        rows += [
            Row(
                f"passthrough {size}, {gen.label}, plain",
                walls(plain),
                walls(cat),
                "GEN | cat",
                max_ratio=PLAIN_TARGET,
                note=f"cat {_rate(log, cat)}, jobwrap {_rate(log, plain)}; "
                f"{cpu_cat}, {_cpu_note('jobwrap', plain)}",
            ),
            Row(
                f"passthrough {size}, {gen.label}, 3 metas",
                walls(with_metas),
                walls(cat),
                "GEN | cat",
                max_ratio=METAS_TARGET,
                note=f"jobwrap {_rate(log, with_metas)}; {_cpu_note('CPU', with_metas)}",
            ),
            Row(
                f"passthrough {size}, {gen.label}, {COUNT_LABEL}",
                walls(with_count),
                walls(cat),
                "GEN | cat",
                note=f"no verdict: the ≤ {METAS_TARGET:g}× target is the row above's (three "
                f"--meta); jobwrap {_rate(log, with_count)}; {_cpu_note('CPU', with_count)}",
            ),
        ]
    check, check_count = check_analysis(ctx, log)
    rows += [
        Row(
            "peak RSS, plain passthrough",
            peak_rss(plain_all),
            peak_rss(cat_all),
            "floor (cat)",
            max_value=RSS_TARGET_MIB,
            compare=False,
            note="the floor is the probe's own RSS, which Linux charges to what it spawns",
        ),
        Row(
            "peak RSS, 3 metas",
            peak_rss(metas_all),
            peak_rss(cat_all),
            "floor (cat)",
            max_value=RSS_TARGET_MIB,
            compare=False,
            note=check,
        ),
        Row(
            f"peak RSS, {COUNT_LABEL}",
            peak_rss(count_all),
            peak_rss(cat_all),
            "floor (cat)",
            max_value=RSS_TARGET_MIB,  # the RSS target holds for every run, whatever its options
            compare=False,
            note=check_count,
        ),
    ]
    return rows


def check_analysis(ctx: Context, log: loggen.LogFile) -> tuple[str, str]:
    """Compare the last 3-metas runs' recorded metas with a line-by-line ``re`` reference.

    One verdict for the newest run with ``--meta b`` (b: the last matching line's whole match,
    never digits) and one for the newest with ``--count b`` (b: a number of lines).  A fast but
    wrong analyzer must not look like a win: the figures only count if it worked.
    """
    done = subprocess.run(
        [*ctx.jobwrap, "history", "--json", "--limit", "50"],
        env=ctx.env, cwd=ctx.workdir, capture_output=True, text=True, check=False,
    )
    try:
        records = json.loads(done.stdout)
    except ValueError:
        failed = f"ANALYSIS NOT CHECKED (jobwrap history failed: {done.stderr.strip()[-200:]})"
        return failed, failed
    found: dict[bool, dict[str, str]] = {}  # is the b meta a count? -> the run's metas
    for record in records:
        metas = {m["name"]: m["value"] for m in record.get("metas", [])}
        if "b" in metas:
            found.setdefault(metas["b"].isdigit(), metas)
    common = {
        "stdout_lines": str(log.lines),
        "a": log.expected_meta(r"processed (\d+) rows"),
        "c": log.expected_meta(r"(\d{4}-\d\d-\d\d)"),
    }
    results = []
    for is_count, what in ((False, "3-metas (--meta b)"), (True, "3-metas (--count b)")):
        metas = found.get(is_count)
        if metas is None:
            results.append(f"ANALYSIS NOT CHECKED (no {what} run in the history)")
            continue
        b = (str(log.expected_count("ERROR|Traceback|FATAL")) if is_count
             else log.expected_meta("ERROR|Traceback|FATAL"))
        expected = {**common, "b": b}
        wrong = {k: (metas.get(k), v) for k, v in expected.items() if metas.get(k) != v}
        if wrong:
            results.append(f"WRONG ANALYSIS in the {what} run (got, expected): {wrong}")
        else:
            results.append(f"{what} analysis verified: "
                           + ", ".join(f"{k}={v}" for k, v in expected.items()))
    return results[0], results[1]


# --- diagnostics (run only when named in --only) ------------------------------------------------


@section("patterns", "diagnosis: each of the three metas alone (and b as --count)",
         default=False)
def patterns(ctx: Context) -> list[Row]:
    log = log_file(ctx)
    rows: list[Row] = []
    for gen in generators(ctx):
        variants = {
            "GEN | cat": (gen.argv, ("cat",)),
            "plain": ((*ctx.jobwrap, "run", "--", *gen.argv),),
        }
        for flag, spec in (*METAS, METAS_COUNT[1]):
            variants[f"{flag} {spec}"] = ((*ctx.jobwrap, "run", flag, spec, "--", *gen.argv),)
        ctx.say(f"patterns, {gen.label}: {ctx.rounds} rounds of {len(variants)} commands")
        samples = ctx.alternate(
            {f"{k} [{gen.name}]": v for k, v in variants.items()}, rounds=ctx.rounds
        )
        cat, *others = samples.items()
        rows += [
            Row(f"{gen.label}, jobwrap {label}", walls(got), walls(cat[1]), "GEN | cat",
                note=f"{_rate(log, got)}; {_cpu_note('CPU', got)}")
            for label, got in others
        ]
    return rows


@section("floor", "diagnosis: the least any Python wrapper costs (minipump.py)", default=False)
def floor(ctx: Context) -> list[Row]:
    log = log_file(ctx)
    pump = (ctx.python, "-I", "-S", str(BENCH_DIR / "minipump.py"))
    literals = ("--lit=ERROR", "--lit=Traceback", "--lit=FATAL")
    metas = [arg for pair in METAS for arg in pair]
    metas_count = [arg for pair in METAS_COUNT for arg in pair]
    rows: list[Row] = []
    for gen in generators(ctx):
        variants = {
            f"GEN | cat [{gen.name}]": (gen.argv, ("cat",)),
            f"minipump: copy + count lines [{gen.name}]": ((*pump, *gen.argv),),
            f"minipump: + decode + 3 literal counts [{gen.name}]": (
                (*pump, *literals, *gen.argv),
            ),
            f"jobwrap run -- GEN [{gen.name}]": ((*ctx.jobwrap, "run", "--", *gen.argv),),
            f"jobwrap run (3 metas) -- GEN [{gen.name}]": (
                (*ctx.jobwrap, "run", *metas, "--", *gen.argv),
            ),
            f"jobwrap run (3 metas, b as --count) -- GEN [{gen.name}]": (
                (*ctx.jobwrap, "run", *metas_count, "--", *gen.argv),
            ),
        }
        ctx.say(f"floor, {gen.label}: {ctx.rounds} rounds of {len(variants)} commands")
        samples = ctx.alternate(variants, rounds=ctx.rounds)
        (_, cat), *others = samples.items()
        rows += [
            Row(f"{gen.label}, {label.rsplit(' [', 1)[0]}", walls(got), walls(cat), "GEN | cat",
                note=f"{_rate(log, got)}; {_cpu_note('CPU', got)}; "
                f"peak RSS {peak_rss(got).median:.1f} MiB")
            for label, got in others
        ]
    return rows
