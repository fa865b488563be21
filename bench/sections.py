"""The benchmark sections: one registered function each (see harness.section).

To add one (the report flush, ProMonitor overhead, the cron supervisor's idle CPU …): write a
function that builds its variants, measures them with ``ctx.alternate`` against a baseline
from the same run and returns rows with targets, then decorate it with ``@section(...)``.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass

import loggen
from harness import BENCH_DIR, Context, Row, Sample, cpu, peak_rss, section, walls

# The three metas of the benchmark: a literal-led pattern, an alternation, a capture.
METAS = (
    ("--meta", r"a=processed (\d+) rows"),
    ("--count", "b=ERROR|Traceback|FATAL"),
    ("--meta", r"c=(\d{4}-\d\d-\d\d)"),
)
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
    rows: list[Row] = []
    plain_all: list[Sample] = []
    metas_all: list[Sample] = []
    cat_all: list[Sample] = []
    for gen in generators(ctx):
        variants = {
            f"GEN | cat [{gen.name}]": (gen.argv, ("cat",)),
            f"jobwrap run -- GEN [{gen.name}]": ((*ctx.jobwrap, "run", "--", *gen.argv),),
            f"jobwrap run (3 metas) -- GEN [{gen.name}]": (
                (*ctx.jobwrap, "run", *metas, "--", *gen.argv),
            ),
        }
        ctx.say(f"passthrough, {gen.label}: {ctx.rounds} alternating rounds of 3 commands")
        samples = ctx.alternate(variants, rounds=ctx.rounds)
        cat, plain, with_metas = samples.values()
        cat_all += cat
        plain_all += plain
        metas_all += with_metas
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
        ]
    check = check_analysis(ctx, log)
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
    ]
    return rows


def check_analysis(ctx: Context, log: loggen.LogFile) -> str:
    """Compare the last 3-metas run's recorded metas with a line-by-line ``re`` reference.

    A fast but wrong analyzer must not look like a win: the figures only count if it worked.
    """
    done = subprocess.run(
        [*ctx.jobwrap, "history", "--json", "--limit", "50"],
        env=ctx.env, cwd=ctx.workdir, capture_output=True, text=True, check=False,
    )
    try:
        records = json.loads(done.stdout)
    except ValueError:
        return f"ANALYSIS NOT CHECKED (jobwrap history failed: {done.stderr.strip()[-200:]})"
    for record in records:
        metas = {m["name"]: m["value"] for m in record.get("metas", [])}
        if "b" in metas:
            break
    else:
        return "ANALYSIS NOT CHECKED (no 3-metas run in the history)"
    expected = {
        "stdout_lines": str(log.lines),
        "a": log.expected_meta(r"processed (\d+) rows"),
        "b": str(log.expected_count("ERROR|Traceback|FATAL")),
        "c": log.expected_meta(r"(\d{4}-\d\d-\d\d)"),
    }
    wrong = {k: (metas.get(k), v) for k, v in expected.items() if metas.get(k) != v}
    if wrong:
        return f"WRONG ANALYSIS in the 3-metas run (got, expected): {wrong}"
    return "3-metas analysis verified: " + ", ".join(f"{k}={v}" for k, v in expected.items())


# --- diagnostics (run only when named in --only) ------------------------------------------------


@section("patterns", "diagnosis: each of the three metas alone", default=False)
def patterns(ctx: Context) -> list[Row]:
    log = log_file(ctx)
    rows: list[Row] = []
    for gen in generators(ctx):
        variants = {
            "GEN | cat": (gen.argv, ("cat",)),
            "plain": ((*ctx.jobwrap, "run", "--", *gen.argv),),
        }
        for flag, spec in METAS:
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
