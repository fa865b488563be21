"""``--metrics-dir DIR``: a Prometheus textfile per job, for node_exporter's textfile collector.

``DIR/jobwrap_<job>.prom`` is written when a run starts (``jobwrap_running 1``) and again when
it has been recorded, each time whole: a temp file in DIR renamed over the old one, so the
collector never reads half a file.  The figures come from the history, so a file lost or
written by an older run is complete again after the next run.  Written by hand in the text
exposition format (prometheus_client would cost start-up time for no gain); a test parses it
with prometheus_client's parser.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

from jobwrap.errors import JobwrapError
from jobwrap.store.files import write_atomic
from jobwrap.store.history import RunRecord, open_history

Warn = Callable[[str], None]

_NUMBER_RE = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?\Z")
_NOT_META = frozenset({"exit_code", "duration_ms"})  # series of their own
RESULTS = ("success", "failure", "timeout", "skipped")
_warned: set[Path] = set()  # a directory that failed is said once per run, not at both ends


def escape_label(value: str) -> str:
    """A label value as the exposition format wants it: backslash, quote, newline escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def textfile_name(job: str) -> str:
    """``jobwrap_<job>.prom``; a job that is a command line gets a safe name and a digest."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", job)
    if safe != job or len(safe) > 100:
        safe = f"{safe[:80]}_{hashlib.sha256(job.encode()).hexdigest()[:12]}"
    return f"jobwrap_{safe}.prom"


def write_metrics(metrics_dir: Path, job: str, state_dir: Path, warn: Warn, *,
                  running: bool | None, fallback: RunRecord | None = None) -> None:
    """(Re)write the job's textfile from the history; a failure is a warning, never more.

    ``running`` None keeps the file's own ``jobwrap_running``: a run skipped because the
    previous one still holds the lock must not say that nothing runs.
    """
    path = metrics_dir / textfile_name(job)
    if running is None:
        running = _was_running(path)
    counts: dict[str, int] | None = None
    last = last_ok = None
    try:
        history = open_history(state_dir)
        try:
            counts = history.job_counts(job)
            last = history.last_run(job)
            last_ok = history.last_run(job, success=True)
        finally:
            history.close()
    except JobwrapError:
        pass  # the run already said so; the file still gets what this run knows
    if last is None and fallback is not None and not fallback.skipped:
        last = fallback
        last_ok = fallback if fallback.exit_code == 0 else None
    text = render(job, running=running, counts=counts, last=last, last_ok=last_ok)
    try:
        write_atomic(path, text.encode("utf-8"), mode=0o644)  # node_exporter reads it
    except OSError as exc:
        if metrics_dir not in _warned:
            _warned.add(metrics_dir)
            warn(f"warning: cannot write the metrics in {metrics_dir}: "
                 f"{(exc.strerror or str(exc)).lower()}")


def render(job: str, *, running: bool, counts: dict[str, int] | None,
           last: RunRecord | None, last_ok: RunRecord | None) -> str:
    """The textfile: one family after the other, HELP and TYPE first."""
    label = f'job="{escape_label(job)}"'
    out: list[str] = []

    def family(name: str, help_text: str, samples: list[tuple[str, float]]) -> None:
        out.append(f"# HELP {name} {help_text}\n# TYPE {name} gauge\n")
        out.extend(f"{name}{{{labels}}} {_number(value)}\n" for labels, value in samples)

    family("jobwrap_running", "1 while a run of the job is in progress.",
           [(label, 1 if running else 0)])
    family("jobwrap_last_success_timestamp_seconds",
           "When the job's last successful run ended (Unix time; 0: none in the history).",
           [(label, _ended(last_ok) if last_ok else 0)])
    if last is not None:
        family("jobwrap_last_run_timestamp_seconds",
               "When the job's last run ended (Unix time).", [(label, _ended(last))])
        family("jobwrap_last_duration_seconds", "How long the job's last run took.",
               [(label, last.duration_ms / 1000)])
        family("jobwrap_last_exit_code",
               "The exit status of the job's last run (128+N: signal N, 124: timeout).",
               [(label, last.exit_code)])
        metas = {name: value for name, value in last.metas
                 if name not in _NOT_META and _NUMBER_RE.match(value.strip())}
        if metas:
            family("jobwrap_meta", "The numeric metas of the job's last run.",
                   [(f'{label},name="{escape_label(n)}"', float(v)) for n, v in metas.items()])
    if counts is not None:
        family("jobwrap_runs_total",
               "The job's runs in the local history (kept 90 days), by result.",
               [(f'{label},result="{r}"', counts.get(r, 0)) for r in RESULTS])
    return "".join(out)


def _was_running(path: Path) -> bool:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return False
    return re.search(r"^jobwrap_running\{.*\} 1$", text, re.MULTILINE) is not None


def _ended(record: RunRecord) -> float:
    started = datetime.fromisoformat(record.started_at)
    return round((started + timedelta(milliseconds=record.duration_ms)).timestamp(), 3)


def _number(value: float) -> str:
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))
