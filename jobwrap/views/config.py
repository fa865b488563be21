"""``config``: the effective settings, where each came from, as a table or JSON."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from jobwrap.config.view import ConfigView


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
