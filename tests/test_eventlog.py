"""`jobwrap cron`'s event log: one logfmt or JSON line per event."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime

from jobwrap.cron.eventlog import EventLog

T0 = datetime(2024, 5, 1, 10, 0, 0, tzinfo=UTC)


def test_events_are_one_logfmt_or_json_line_each() -> None:
    text, as_json = io.StringIO(), io.StringIO()
    for stream, fmt in ((text, "text"), (as_json, "json")):
        log = EventLog(fmt, stream, clock=lambda: T0)
        log.emit("start", line=3, pid=12, command='echo "a b"', missing=None, catch_up=True)
    assert text.getvalue() == (
        'time=2024-05-01T10:00:00.000Z event=start line=3 pid=12 command="echo \\"a b\\""'
        " catch_up=true\n"
    )
    assert json.loads(as_json.getvalue()) == {
        "time": "2024-05-01T10:00:00.000Z", "event": "start", "line": 3, "pid": 12,
        "command": 'echo "a b"', "catch_up": True,
    }
