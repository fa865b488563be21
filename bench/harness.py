"""The benchmark's plumbing: a registry of sections, alternating measurements, the result table.

A *section* is one function ``(ctx: Context) -> list[Row]`` registered with :func:`section`.
It builds the command lines it compares, measures them with :meth:`Context.alternate` (which
interleaves the variants round by round, so drift in machine load hits all of them alike) and
returns rows: a jobwrap figure, the baseline measured in the same run, and a target.
"""

from __future__ import annotations

import os
import shlex
import statistics
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
PROBE = BENCH_DIR / "probe.py"
SEP = "::|::"  # the probe's pipeline separator (see probe.py)

Pipeline = tuple[tuple[str, ...], ...]


class BenchError(Exception):
    """A measured command failed: the figures would be meaningless."""


# --- figures and rows ------------------------------------------------------------------------


@dataclass(frozen=True)
class Figure:
    """Repeated measurements of one quantity, summarised by their median."""

    samples: tuple[float, ...]
    unit: str  # "s", "ms", "MiB", or a count's unit ("reports/s", "connections", "%")
    digits: int | None = None  # decimals shown; None: by magnitude

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    def show(self) -> str:
        m = abs(self.median)
        digits = self.digits
        if digits is None:
            digits = 0 if m >= 100 else 1 if m >= 10 else 2 if m >= 1 else 3
        text = f"{self.median:.{digits}f} {self.unit}"
        if len(self.samples) > 1:
            lo, hi = min(self.samples), max(self.samples)
            text += f" [{lo:.{digits}f}–{hi:.{digits}f}]"
        return text


@dataclass(frozen=True)
class Row:
    """One line of the table: jobwrap's figure against a baseline from the same run."""

    measurement: str
    value: Figure
    baseline: Figure | None = None
    baseline_label: str = ""
    max_ratio: float | None = None  # target on value / baseline
    max_value: float | None = None  # absolute target on the *largest* sample, in the value's unit
    compare: bool = True  # False: the baseline is context (a floor), a ratio would mean nothing
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if not self.compare or self.baseline is None or self.baseline.median <= 0:
            return None
        return self.value.median / self.baseline.median

    @property
    def target(self) -> str:
        if self.max_ratio is not None:
            return f"≤ {self.max_ratio:g}×"
        if self.max_value is not None:
            return f"max ≤ {self.max_value:g} {self.value.unit}"
        return "—"

    @property
    def verdict(self) -> str:
        if self.max_ratio is not None and self.ratio is not None:
            return "PASS" if self.ratio <= self.max_ratio else "MISS"
        if self.max_value is not None:
            return "PASS" if max(self.value.samples) <= self.max_value else "MISS"
        return "info"

    def as_json(self) -> dict:
        return {
            "measurement": self.measurement,
            "unit": self.value.unit,
            "value_median": self.value.median,
            "value_samples": list(self.value.samples),
            "baseline_label": self.baseline_label,
            "baseline_median": self.baseline.median if self.baseline else None,
            "baseline_samples": list(self.baseline.samples) if self.baseline else None,
            "ratio": self.ratio,
            "target": self.target,
            "verdict": self.verdict,
            "note": self.note,
        }


# --- the registry ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Section:
    name: str
    title: str
    func: Callable[[Context], list[Row]]
    default: bool


SECTIONS: dict[str, Section] = {}


def section(name: str, title: str, default: bool = True):
    """Register a benchmark section; ``default=False`` runs it only when named in ``--only``."""

    def register(func: Callable[[Context], list[Row]]) -> Callable[[Context], list[Row]]:
        SECTIONS[name] = Section(name, title, func, default)
        return func

    return register


# --- measuring -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    wall_s: float
    maxrss_kib: int  # of the pipeline's last stage
    cpu_s: float  # user + system of the whole pipeline


@dataclass
class Context:
    """What every section gets: settings, a scratch dir, the environment and the probe."""

    quick: bool
    size_mib: int
    rounds: int
    pairs: int
    workdir: Path
    env: dict[str, str]
    jobwrap_variants: dict[str, tuple[str, ...]]  # label -> argv prefix, preferred first
    gens: tuple[str, ...] = ("cat", "writer")  # the log generators passthrough compares with
    commands: dict[str, str] = field(default_factory=dict)  # label -> shell-quoted pipeline
    cache: dict[str, object] = field(default_factory=dict)  # shared data (the log file)
    verbose: bool = True

    @property
    def python(self) -> str:
        return sys.executable

    @property
    def jobwrap(self) -> tuple[str, ...]:
        """The invocation users run: the console script when there is one."""
        return next(iter(self.jobwrap_variants.values()))

    def say(self, message: str) -> None:
        if self.verbose:
            print(f"  … {message}", file=sys.stderr, flush=True)

    def measure(self, pipeline: Pipeline, env: dict[str, str] | None = None) -> Sample:
        """Run ``pipeline`` under the probe: wall time, last stage's peak RSS, total CPU.

        ``env`` replaces the isolated environment for this run (a section's additions to it).
        """
        argv = [sys.executable, "-I", "-S", str(PROBE)]
        for i, stage in enumerate(pipeline):
            argv += ([SEP] if i else []) + list(stage)
        done = subprocess.run(
            argv, env=self.env if env is None else env, cwd=self.workdir,
            capture_output=True, text=True, check=False,
        )
        fields = done.stdout.split()
        if done.returncode != 0 or len(fields) < 4 or any(code != "0" for code in fields[3:]):
            raise BenchError(
                f"{show_pipeline(pipeline)} failed (probe status {done.returncode}, "
                f"output {done.stdout.strip()!r}): {done.stderr.strip()[-2000:]}"
            )
        if done.stderr.strip():
            self.say(f"stderr of {show_pipeline(pipeline)}: {done.stderr.strip()[-500:]}")
        return Sample(float(fields[0]), int(fields[1]), float(fields[2]))

    def alternate(
        self,
        variants: dict[str, Pipeline],
        rounds: int,
        warmup: int = 1,
        env: dict[str, str] | Callable[[str], dict[str, str]] | None = None,
        after: Callable[[str, Sample], None] | None = None,
    ) -> dict[str, list[Sample]]:
        """Measure every variant once per round, reversing the order every other round.

        ``env``: the environment of every run (default: the isolated one), or a function of
        the variant's name called before each run that returns it (e.g. with a fresh state dir
        each time).  ``after(name, sample)`` is called after each run, warm-up included (to
        check what the run did).
        """
        for label, pipeline in variants.items():
            self.commands[label] = show_pipeline(pipeline)
        names = list(variants)
        samples: dict[str, list[Sample]] = {name: [] for name in names}
        for r in range(warmup + rounds):
            for name in names if r % 2 == 0 else reversed(names):
                sample = self.measure(variants[name], env(name) if callable(env) else env)
                if after is not None:
                    after(name, sample)
                if r >= warmup:
                    samples[name].append(sample)
        return samples


def walls(samples: Sequence[Sample], unit: str = "s") -> Figure:
    scale = 1000.0 if unit == "ms" else 1.0
    return Figure(tuple(s.wall_s * scale for s in samples), unit)


def peak_rss(samples: Sequence[Sample]) -> Figure:
    return Figure(tuple(s.maxrss_kib / 1024 for s in samples), "MiB")


def cpu(samples: Sequence[Sample]) -> Figure:
    return Figure(tuple(s.cpu_s for s in samples), "s")


def show_pipeline(pipeline: Pipeline) -> str:
    return " | ".join(shlex.join(stage) for stage in pipeline)


# --- the environment every measured command gets ----------------------------------------------


def isolated_env(workdir: Path) -> dict[str, str]:
    """The caller's environment without jobwrap settings, with scratch state, config, bytecode.

    Nothing a developer has configured (a monitor, a token, a config file) may make a
    measured run send a report or read a different file than on any other machine.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBWRAP_")}
    # Measure Python as an installed jobwrap runs: ``pip install`` leaves compiled bytecode,
    # so cache it (in the scratch dir, not the source tree) even where development setups
    # turn that off; the warm-up rounds fill the cache for every command alike.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(workdir / "pycache")
    (workdir / "config").mkdir(exist_ok=True)
    env["JOBWRAP_STATE_DIR"] = str(workdir / "state")
    env["XDG_CONFIG_HOME"] = str(workdir / "config")
    env["JOBWRAP_SYSTEM_CONFIG"] = str(workdir / "no-system-config.toml")
    return env


def find_jobwrap() -> dict[str, tuple[str, ...]]:
    """The console script next to this interpreter (if installed), then ``python -m jobwrap``."""
    variants: dict[str, tuple[str, ...]] = {}
    script = Path(sys.executable).parent / "jobwrap"
    if script.is_file() and os.access(script, os.X_OK):
        variants["console script"] = (str(script),)
    variants["python -m jobwrap"] = (sys.executable, "-m", "jobwrap")
    return variants


# --- the table -------------------------------------------------------------------------------


def render_table(rows: Sequence[Row]) -> str:
    header = ("measurement", "baseline", "jobwrap", "ratio", "target", "result")
    lines = [header]
    for row in rows:
        base = row.baseline_label
        if row.baseline is not None:
            base += f": {row.baseline.show()}"
        ratio = f"{row.ratio:.2f}×" if row.ratio is not None else "—"
        lines.append((row.measurement, base, row.value.show(), ratio, row.target, row.verdict))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = []
    for n, line in enumerate(lines):
        out.append("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    notes = [f"  {row.measurement}: {row.note}" for row in rows if row.note]
    return "\n".join(out + (["", "notes:", *notes] if notes else []))
