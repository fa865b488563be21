"""``flush``: what was delivered, refused, held back or discarded, and what to do next."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from jobwrap.idlemon.flush import FlushSummary


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
