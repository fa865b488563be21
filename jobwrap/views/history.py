"""``history`` and ``show``: recent runs as a table or JSON, one run in full."""

from __future__ import annotations

import json
import re
from datetime import datetime

from jobwrap.idlemon.report import why_not_sent
from jobwrap.store.history import RunRecord
from jobwrap.views.status import sparkline
from jobwrap.views.table import duration, local_time, outcome, table


def history_json(records: list[RunRecord]) -> str:
    return json.dumps([r.to_json() for r in records], indent=2) + "\n"


def run_json(record: RunRecord) -> str:
    return json.dumps(record.to_json(with_output=True), indent=2) + "\n"


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
