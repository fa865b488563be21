"""Text and JSON renderings of history records for ``history`` and ``show``.  Pure functions."""

from __future__ import annotations

import json
from datetime import datetime

from jobwrap.store.history import RunRecord


def history_json(records: list[RunRecord]) -> str:
    return json.dumps([r.to_json() for r in records], indent=2) + "\n"


def run_json(record: RunRecord) -> str:
    return json.dumps(record.to_json(with_output=True), indent=2) + "\n"


def local_time(iso: str) -> str:
    try:
        return datetime.fromisoformat(iso).astimezone().strftime("%Y-%m-%d %H:%M:%S")
    except ValueError:
        return iso


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
    """One word or two: 'ok', 'exit 3', 'SIGKILL', 'timeout', 'skipped'."""
    if record.skipped:
        return "skipped"
    if record.timed_out:
        return "timeout"
    if record.signal:
        return record.signal
    return "ok" if record.exit_code == 0 else f"exit {record.exit_code}"


def report_state(record: RunRecord) -> str:
    if record.report_status == "none":
        return "-"
    return record.report_status


def table(headers: list[str], rows: list[list[str]]) -> str:
    """Left-aligned columns two spaces apart, a header line first; no trailing blanks."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    for row in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return "\n".join(lines) + "\n"


def history_table(records: list[RunRecord], command_width: int = 48) -> str:
    if not records:
        return "no runs recorded yet\n"
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
                human_duration(r.duration_ms),
                report_state(r),
                r.run_id[:8],
                command,
            ]
        )
    headers = ["STARTED", "MONITOR", "RESULT", "DURATION", "REPORT", "RUN", "COMMAND"]
    return table(headers, rows)


def run_details(r: RunRecord) -> str:
    lines = [
        f"run        {r.run_id}",
        f"command    {r.command}",
        f"monitor    {r.monitor or '-'}",
        f"host       {r.host}",
        f"started    {local_time(r.started_at)}",
        f"duration   {human_duration(r.duration_ms)}",
        f"result     {outcome(r)} (exit status {r.exit_code})",
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
    if r.report_error:
        report += f" ({r.report_error})"
    lines.append(f"report     {report}")
    lines.append("metas")
    lines.extend(f"  {name} = {value}" for name, value in r.metas)
    lines.append(_output_section(r))
    return "\n".join(lines) + "\n"


def _output_section(r: RunRecord) -> str:
    if r.output_head is None:
        return "output     (not kept: --no-capture, or an older run)"
    parts = ["output", _text(r.output_head)]
    if r.output_omitted_lines:
        parts.append(f"… {r.output_omitted_lines} lines left out …")
    if r.output_tail:
        parts.append(_text(r.output_tail))
    return "\n".join(p.rstrip("\n") for p in parts if p)


def _text(data: bytes) -> str:
    return data.decode("utf-8", "replace")


def config_json(rows: list) -> str:
    """``jobwrap config --json``: one object per setting (``problem`` only when unusable)."""
    data = []
    for row in rows:
        item = {"name": row.name, "value": row.value, "source": row.source}
        if row.problem:
            item["problem"] = row.problem
        data.append(item)
    return json.dumps(data, indent=2) + "\n"


def config_table(rows: list) -> str:
    """``jobwrap config``: name, value (secrets masked), where it came from or what is wrong."""
    if not rows:
        return ""
    width = max(len(r.name) for r in rows)
    vwidth = min(48, max(len(r.value) for r in rows))
    return "".join(
        f"{r.name.ljust(width)}  {r.value.ljust(vwidth)}  "
        f"{r.problem + ' (ignored)' if r.problem else r.source}\n"
        for r in rows
    )
