"""jobwrap's benchmark: one command, every figure against a baseline measured in the same run.

    python bench/run.py                  # the full run (512 MiB of logs): a minute or two
    python bench/run.py --quick          # 64 MiB, fewer rounds: well under 30 s
    python bench/run.py --only passthrough --size-mib 1024 --json out.json
    python bench/run.py --list           # the sections, including opt-in diagnostics

See bench/README.md for what each figure means and why the baselines are fair.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import sections  # noqa: F401  (registers the sections)
import sections_cron  # noqa: F401  (cron, only with --only)
import sections_fleet  # noqa: F401  (fleet: --lock with a lock URL)
import sections_net  # noqa: F401  (flush, report, promonitor)
from harness import SECTIONS, BenchError, Context, Row, find_jobwrap, isolated_env, render_table

DEFAULTS = {"size_mib": 512, "rounds": 5, "pairs": 20}
QUICK = {"size_mib": 64, "rounds": 3, "pairs": 10}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python bench/run.py",
        description="Measure jobwrap against baselines run side by side (alternating, medians).",
    )
    parser.add_argument("--quick", action="store_true", help="64 MiB, 3 rounds, 10 start-up pairs")
    parser.add_argument("--size-mib", type=int, help="log volume for passthrough (default 512)")
    parser.add_argument("--rounds", type=int, help="alternating rounds for passthrough (5)")
    parser.add_argument("--pairs", type=int, help="alternating start-up rounds (20)")
    parser.add_argument("--only", help="comma-separated sections to run (see --list)")
    parser.add_argument(
        "--gen",
        default="cat,writer",
        help="log generators for passthrough: cat (`cat FILE`), writer (8 KiB writes)",
    )
    parser.add_argument("--list", action="store_true", help="list the sections and exit")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the results here")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    args = parser.parse_args(argv)
    for name, value in (QUICK if args.quick else DEFAULTS).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if min(args.size_mib, args.rounds, args.pairs) < 1:
        parser.error("--size-mib, --rounds and --pairs must be at least 1")
    args.gen = tuple(g.strip() for g in args.gen.split(",") if g.strip())
    if not args.gen or set(args.gen) - {"cat", "writer"}:
        parser.error("--gen takes cat, writer or both (comma-separated)")
    return args


def chosen_sections(only: str | None) -> list[str]:
    if not only:
        return [name for name, s in SECTIONS.items() if s.default]
    names = [n.strip() for n in only.split(",") if n.strip()]
    unknown = [n for n in names if n not in SECTIONS]
    if unknown:
        raise SystemExit(f"unknown section {unknown[0]!r}; known: {', '.join(SECTIONS)}")
    return names


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"Python {platform.python_version()} ({sys.executable}), {platform.system()} "
        f"{platform.release()}, {os.cpu_count()} CPUs ({cpu})"
    )


def check_jobwrap(ctx: Context) -> None:
    for prefix in ctx.jobwrap_variants.values():
        done = subprocess.run([*prefix, "--version"], env=ctx.env, capture_output=True, text=True)
        if done.returncode != 0:
            raise BenchError(f"{shlex.join(prefix)} --version failed: {done.stderr.strip()}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.list:
        for name, s in SECTIONS.items():
            print(f"{name:12} {s.title}{'' if s.default else ' (only with --only)'}")
        return 0
    names = chosen_sections(args.only)
    command = shlex.join(["python", "bench/run.py", *(sys.argv[1:] if argv is None else argv)])
    started, load_before = time.monotonic(), os.getloadavg()[0]
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="jobwrap-bench-") as tmp:
        workdir = Path(tmp)
        ctx = Context(
            quick=args.quick,
            size_mib=args.size_mib,
            rounds=args.rounds,
            pairs=args.pairs,
            workdir=workdir,
            env=isolated_env(workdir),
            jobwrap_variants=find_jobwrap(),
            gens=args.gen,
            verbose=not args.quiet,
        )
        try:
            check_jobwrap(ctx)
            for name in names:
                rows += SECTIONS[name].func(ctx)
        except BenchError as exc:
            print(f"bench: {exc}", file=sys.stderr)
            return 1
    elapsed, load_after = time.monotonic() - started, os.getloadavg()[0]
    load = f"load average {load_before:.1f} before, {load_after:.1f} after"
    if max(load_before, load_after) > (os.cpu_count() or 1) * 0.75:
        load += " — a busy machine: ratios are noisier than usual, re-run when it is idle"
    print(f"command: {command}")
    print(f"machine: {machine()}")
    print(f"jobwrap: {shlex.join(ctx.jobwrap)} (start-up: {', '.join(ctx.jobwrap_variants)})")
    print(
        "environment: JOBWRAP_* cleared; state, config and Python bytecode cache in a scratch "
        "dir (bytecode cached as after `pip install`, even under PYTHONDONTWRITEBYTECODE)"
    )
    print(f"took {elapsed:.0f} s, {load}")
    print("figures are medians [min–max] of alternating rounds; ratios are of the medians\n")
    print(render_table(rows))
    print("\ncommands measured (each one's stdout goes to /dev/null, its stdin is /dev/null):")
    for label, cmd in ctx.commands.items():
        print(f"  {label}: {cmd}")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "command": command,
                    "machine": machine(),
                    "elapsed_s": elapsed,
                    "load_average": [load_before, load_after],
                    "settings": vars(args) | {"json": str(args.json)},
                    "rows": [row.as_json() for row in rows],
                    "commands": ctx.commands,
                },
                indent=2,
            )
            + "\n"
        )
    return 0 if all(row.verdict != "MISS" for row in rows) else 3


if __name__ == "__main__":
    sys.exit(main())
