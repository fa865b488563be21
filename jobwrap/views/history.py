"""Every rendering of the commands' data as text or JSON.  Pure functions: cores return data,
only these turn it into what the CLI prints."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from jobwrap.idlemon.report import why_not_sent
from jobwrap.store.history import RunRecord

if TYPE_CHECKING:
    from jobwrap.config.settings import ConfigView
    from jobwrap.doctor import Finding
    from jobwrap.idlemon.flush import FlushSummary
    from jobwrap.status import MonitorRow, StatusReport
    from jobwrap.store.fleet import Probe


def history_json(records: list[RunRecord]) -> str:
    return json.dumps([r.to_json() for r in records], indent=2) + "\n"


def run_json(record: RunRecord) -> str:
    return json.dumps(record.to_json(with_output=True), indent=2) + "\n"


def local_time(iso: str) -> str:
    """In the local zone, with the zone: ``2024-06-01 02:00:03 CEST`` (``+0530`` where the
    zone has no abbreviation)."""
    try:
        moment = datetime.fromisoformat(iso).astimezone()
    except ValueError:
        return iso
    zone = moment.strftime("%Z")
    if not zone.isalpha():
        zone = moment.strftime("%z")
    return moment.strftime("%Y-%m-%d %H:%M:%S ") + zone


def human_duration(ms: int) -> str:
    if ms < 1000:
        return f"{ms}ms"
    seconds = ms / 1000
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, sec = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{sec:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def outcome(record: RunRecord) -> str:
    """One word or two: 'ok', 'exit 3', 'SIGKILL', 'timeout', 'skipped', 'running',
    'abandoned' (jobwrap was killed or the machine went down while the command ran)."""
    if record.state in ("running", "abandoned"):
        return record.state
    if record.skipped:
        return "skipped"
    if record.timed_out:
        return "timeout"
    if record.signal:
        return record.signal
    return "ok" if record.exit_code == 0 else f"exit {record.exit_code}"


def duration(record: RunRecord, now: datetime | None = None) -> str:
    """How long it took; for a running run, how long it has been running; '-' if unknown."""
    if record.state == "abandoned":
        return "-"
    if record.state == "running":
        try:
            began = datetime.fromisoformat(record.started_at)
        except ValueError:
            return "-"
        elapsed = (now or datetime.now(UTC)) - began
        return human_duration(max(0, int(elapsed.total_seconds() * 1000)))
    return human_duration(record.duration_ms)


def report_state(record: RunRecord) -> str:
    """The REPORT column: sent, pending, refused, discarded, or ``not sent: WHY``."""
    if record.report_status == "none":
        return f"not sent: {record.report_error}" if record.report_error else "-"
    return record.report_status


def _report_notes(records: list[RunRecord]) -> list[str]:
    """Below the table: why each pending or refused report is stuck, and the way out."""
    notes = []
    for r in records:
        if r.report_status == "refused":
            notes.append(f"{r.run_id[:8]}: refused: {r.report_error or 'no reason kept'} — fix "
                         f"it, then `jobwrap flush`; or drop it: `jobwrap flush --discard "
                         f"{r.run_id[:8]}`")
        elif r.report_status == "pending" and r.report_error:
            notes.append(f"{r.run_id[:8]}: pending: {r.report_error}")
    return notes


def table(headers: list[str], rows: list[list[str]]) -> str:
    """Left-aligned columns two spaces apart, a header line first; no trailing blanks."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    for row in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return "\n".join(lines) + "\n"


def history_table(records: list[RunRecord], command_width: int = 48,
                  now: datetime | None = None, spark: bool | None = None) -> str:
    """``spark``: with one monitor's runs on a terminal, a line of their recent durations
    above the table (True: in colour, False: plain); None: none."""
    if not records:
        return "no runs recorded yet\n"
    head = ""
    if spark is not None:
        done = [(r.duration_ms, r.exit_code == 0 and not r.timed_out)
                for r in reversed(records) if r.state == "finished" and not r.skipped]
        head = f"recent durations, oldest first: {sparkline(done, spark)}\n\n"
    rows = []
    for r in records:
        command = r.command
        if len(command) > command_width:
            command = command[: command_width - 1] + "…"
        rows.append(
            [
                local_time(r.started_at),
                r.monitor or "-",
                outcome(r),
                duration(r, now),
                report_state(r),
                r.run_id[:8],
                command,
            ]
        )
    headers = ["STARTED", "MONITOR", "RESULT", "DURATION", "REPORT", "RUN", "COMMAND"]
    notes = _report_notes(records)
    return head + table(headers, rows) + ("\n" + "".join(f"{n}\n" for n in notes) if notes else "")


def run_details(r: RunRecord, escape: bool = False) -> str:
    """``escape``: for a terminal, control characters of the output shown as ``\\xNN``."""
    lines = [
        f"run        {r.run_id}",
        f"command    {r.command}",
        f"monitor    {r.monitor or '-'}",
        f"host       {r.host}",
        f"started    {local_time(r.started_at)}",
        f"duration   {duration(r)}",
        f"result     {_result(r)}",
    ]
    if r.skipped:
        lines.append(f"skipped    {r.skipped}")
    if r.error:
        lines.append(f"error      {r.error}")
    if r.schedule:
        lines.append(f"schedule   {r.schedule}")
    lines.append(f"lines      {r.stdout_lines} stdout, {r.stderr_lines} stderr")
    if r.cpu_user_s is not None:
        lines.append(
            f"resources  cpu {r.cpu_user_s:.2f}s user, {r.cpu_sys_s or 0:.2f}s sys; "
            f"peak rss {(r.max_rss_kb or 0) / 1024:.1f} MiB"
        )
    report = r.report_status
    if why_not_sent(r):
        report = f"not sent: {why_not_sent(r)}"
    elif r.report_error:
        report += f" ({r.report_error})"
    lines.append(f"report     {report}")
    lines.append("metas")
    lines.extend(f"  {name} = {value}" for name, value in r.metas)
    lines.append(_output_section(r, escape))
    return "\n".join(lines) + "\n"


def _result(r: RunRecord) -> str:
    if r.state == "running":
        return f"running (jobwrap pid {r.pid})"
    if r.state == "abandoned":
        return (f"abandoned: jobwrap (pid {r.pid}) was killed or the machine went down while "
                "the command ran; its outcome is unknown")
    return f"{outcome(r)} (exit status {r.exit_code})"


def _output_section(r: RunRecord, escape: bool = False) -> str:
    if r.output_head is None:
        return "output     (not kept: --no-capture, or an older run)"
    parts = ["output", _text(r.output_head, escape)]
    if r.output_tail:  # a tail is kept apart only when something between them is left out
        lines = r.output_omitted_lines or 0
        if not r.output_head.endswith(b"\n"):  # cut inside a line
            gap = (f"the rest of a long line and {lines} lines" if lines
                   else "the middle of a long line")
        else:
            gap = f"{lines} lines" if lines else "part of the output"
        parts.append(f"… {gap} left out …")
        parts.append(_text(r.output_tail, escape))
    elif r.output_omitted_lines:
        parts.append(f"… {r.output_omitted_lines} lines left out …")
    return "\n".join(p.rstrip("\n") for p in parts if p)


# What a terminal would act on (escape sequences, carriage returns, backspaces, C1 codes):
# shown as \xNN so a job's output cannot move the cursor, retitle the window or hide text.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def _text(data: bytes, escape: bool = False) -> str:
    text = data.decode("utf-8", "replace")
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text) if escape else text


def config_json(view: ConfigView) -> str:
    """``jobwrap config --json``: the files read, and one object per setting, its ``value``
    typed (a number of seconds for a duration, a boolean, null) and ``shown`` as ``config``
    prints it (``problem`` only when unusable); each monitor section's likewise."""
    def rows_json(rows: list) -> list[dict]:
        data = []
        for row in rows:
            item = {"name": row.name, "value": row.typed, "shown": row.value,
                    "source": row.source}
            if row.problem:
                item["problem"] = row.problem
            data.append(item)
        return data

    data = {"files_read": [str(p) for p in view.files],
            "files_not_found": [str(p) for p in view.looked],
            "settings": rows_json(view.rows),
            "monitors": {slug: rows_json(rows) for slug, rows in view.monitors.items()}}
    return json.dumps(data, indent=2) + "\n"


def config_table(view: ConfigView) -> str:
    """``jobwrap config``: the files read, then name, value (secrets masked), where it came
    from or what is wrong; then what each other [monitors.SLUG] section sets."""
    lines = [f"config files read: {', '.join(map(str, view.files)) or 'none'}"]
    if view.looked:
        lines.append(f"not found: {', '.join(map(str, view.looked))}")
    text = "\n".join(lines) + "\n\n" + _config_rows(view.rows)
    for slug, rows in view.monitors.items():
        text += f"\n[monitors.{slug}] (jobwrap config -m {slug} shows all its settings)\n"
        text += _config_rows(rows) if rows else "  (sets nothing jobwrap config shows)\n"
    return text


def _config_rows(rows: list) -> str:
    if not rows:
        return ""
    width = max(len(r.name) for r in rows)
    vwidth = min(48, max(len(r.value) for r in rows))
    return "".join(
        f"{r.name.ljust(width)}  {r.value.ljust(vwidth)}  "
        f"{r.problem + ' (ignored)' if r.problem else r.source}".rstrip() + "\n"
        for r in rows
    )


# -- status -----------------------------------------------------------------------------------

def status_text(report: StatusReport, color: bool | None = None) -> str:
    """``color``: True on a colour terminal, False on one without (NO_COLOR), None: no
    terminal (the pictures are plain text then)."""
    from jobwrap.status import pm_state

    text = f"project {report.project}\n" if report.project else ""
    text += status_table(report.rows, color=bool(color))
    text += "".join(f"{r.slug}: idle: {r.idle_reason}\n" for r in report.rows if r.idle_reason)
    if report.promonitor:
        rows = [[m.name, m.kind, pm_state(m), f"{m.interval_seconds}s", m.url, m.id]
                for m in report.promonitor]
        text += "\nProMonitor\n" + table(["NAME", "KIND", "STATUS", "EVERY", "URL", "ID"], rows)
    if report.lock is not None:
        text += lock_backend_text(report.lock)
    return text + "".join(f"jobwrap: {p}\n" for p in report.problems)


def status_json(report: StatusReport) -> str:
    data = {"project": report.project, "problems": report.problems,
            "monitors": [r.to_json() for r in report.rows],
            "promonitor": [m.to_json() for m in report.promonitor or ()]}
    lock = {"lock": lock_backend_json(report.lock)} if report.lock is not None else {}
    return json.dumps({**data, **lock}, indent=2) + "\n"


def lock_backend_text(found: Probe) -> str:
    """The fleet lock backend: whether it answers, then each configured lock's holder."""
    if found.error:
        return f"\nlock backend: {found.error}\n"
    lines = [f"\nlock backend {found.url}: answers (Redis {found.version})"]
    lines += [f"  {name}: " + (f"held by {holder.describe()}" if holder else "free")
              for name, holder in found.holders]
    return "\n".join(lines) + "\n"


def lock_backend_json(found: Probe) -> dict:
    return {"backend": found.url, "answers": found.error is None, "error": found.error,
            "version": found.version,
            "holders": [{"lock": name, "holder": holder and {
                "host": holder.host, "pid": holder.pid, "run_id": holder.run_id,
                "since": holder.since}} for name, holder in found.holders]}


def relative(moment: datetime | None, now: datetime | None = None) -> str:
    if moment is None:
        return "never"
    seconds = int(((now or datetime.now(UTC)) - moment).total_seconds())
    if seconds < 0:
        return "just now"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"


def _num(value: float | None, unit: str = "") -> str:
    if value is None:
        return "-"
    return f"{value:g}{unit}"


SPARK_BLOCKS = "▁▂▃▄▅▆▇█"
SPARK_PLAIN = "._-=+*#"  # the same picture in ASCII: a pipe, a file, NO_COLOR
FAILED_PLAIN = "x"
RED, RESET = "\x1b[31m", "\x1b[0m"


def sparkline(recent: tuple[tuple[int, bool], ...] | list[tuple[int, bool]],
              color: bool = False) -> str:
    """One character per run (oldest first), its height the run's duration against the
    longest shown; a failure is red on a colour terminal, else an ``x``."""
    if not recent:
        return "-"
    levels = SPARK_BLOCKS if color else SPARK_PLAIN
    longest = max(d for d, _ in recent) or 1
    chars = []
    for d, ok in recent:
        mark = levels[min(len(levels) - 1, round(d / longest * (len(levels) - 1)))]
        if not ok:
            mark = f"{RED}{mark}{RESET}" if color else FAILED_PLAIN
        chars.append(mark)
    return "".join(chars)


def status_table(rows: list[MonitorRow], now: datetime | None = None,
                 color: bool = False) -> str:
    if not rows:
        return "nothing to show yet: no monitors read and no local runs\n"
    headers = ["MONITOR", "STATE", "EVERY", "AVG", "AVG DUR", "LAST CONTACT", "LAST RUN",
               "RESULT", "PENDING", "LOCAL MED/P95"]
    if any(r.dependency for r in rows):
        headers.append("DEPENDENCY")
    lines = []
    for r in rows:
        if r.in_project is None:
            state = "-"
        elif not r.in_project:
            state = "not in project"
        else:
            state = "IDLE" if r.is_idle else "active"
        med = "-" if r.median_s is None else f"{r.median_s:.1f}s/{r.p95_s:.1f}s"
        if r.unusual_duration:
            med += " (!)"
        line = [
            r.slug, state, _num(r.interval_min, "m"), _num(r.interval_avg_min, "m"),
            _num(r.duration_avg_s, "s"), relative(r.last_contact, now) if r.in_project else "-",
            local_time(r.last_run.started_at) if r.last_run else "-",
            _last_result(r, now), _pending(r), med,
        ]
        if "DEPENDENCY" in headers:
            line.append(r.dependency or "-")
        line.append(sparkline(r.recent, color))  # last: its colour codes need no padding
        lines.append(line)
    return table([*headers, "RECENT"], lines)


def _last_result(r: MonitorRow, now: datetime | None = None) -> str:
    """'ok 1.2s'; 'running for 3h12m (usually 40m)', flagged when far over its p95;
    'abandoned (!)' when its jobwrap is gone."""
    run = r.last_run
    if run is None:
        return "-"
    flag = r.flag(now)
    if run.state == "running":
        text = f"running for {duration(run, now)}"
        if r.median_s is not None:
            text += f" (usually {human_duration(int(r.median_s * 1000))})"
        return text + (" (!) hung?" if flag == "hung" else "")
    if flag == "abandoned":
        return "abandoned (!)"
    return f"{outcome(run)} {duration(run)}"


def _pending(r: MonitorRow) -> str:
    text = str(r.pending)
    if r.refused:
        text += f" (+{r.refused} refused)"
    return text


# -- flush and doctor -------------------------------------------------------------------------

def flush_text(summary: FlushSummary) -> str:
    if summary.discarded is not None:
        lines = [f"discarded {len(summary.discarded)} report(s); their runs stay in the history"]
        lines += [f"discarded {run_id[:8]}" for run_id in summary.discarded]
        return "\n".join(lines) + "\n"
    d, held = summary.outcome.delivery, summary.outcome.held
    lines = [f"delivered {len(d.sent)}, refused {len(d.refused)}, still pending "
             f"{len(d.pending)}, held back {len(held)}"]
    lines += [f"skipped malformed run {run_id[:8]}: {problem}"
              for run_id, problem in summary.bad_rows]
    lines += [f"refused {run_id[:8]}: {reason}" for run_id, reason in d.refused]
    if d.refused:
        lines.append("fix the cause and flush again, or give up on them: `jobwrap flush "
                     "--discard-refused [--monitor SLUG]` (or `--discard RUN_ID`)")
    if d.pending:
        lines.append(f"pending: {d.pending[-1][1]}")
    for rec in held:
        lines.append(f"held back {rec.run_id[:8]} ({rec.monitor}): its latest run failed; "
                     "sending an older report would make it look active (--force sends it)")
    if summary.elsewhere > 0:
        lines.append(f"{summary.elsewhere} more pending: being delivered by another jobwrap "
                     "process")
    return "\n".join(lines) + "\n"


def doctor_text(findings: list[Finding]) -> str:
    return "".join(f.line() + "\n" for f in findings)
