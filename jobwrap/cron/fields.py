"""The cron field grammar: five fields (six with seconds first) read as cronie reads them.

Pure text in, text out; :mod:`jobwrap.schedule` hands the result to croniter.  Each field is a
list (``a,b``) of numbers, ``*`` and ranges ``a-b``, optionally stepped (``*/5``, ``1-30/2``);
month and weekday names (``jan``, ``mon``) in those two fields; day of week 0 and 7 are both
Sunday.  Each item is read as cronie's ``get_range`` reads it (jobwrap reads the values itself
and hands croniter the result): ``N-N`` is the value N; a day-of-week range ending on 0 ends on
7 (``sat-sun``, ``5-0``); a step larger than its range gives the range's first value (``*/60``
is minute 0).  jobwrap is stricter than cronie on backwards ranges (``5-1``, which cronie reads
as no value, or as ``5-7`` when it ends on 0) and more permissive on ``N/step`` (``5/15`` =
``5-59/15``, as croniter and robfig/cron read it; cronie refuses it; refused in day of week,
where it is unclear whether 7 counts).  Where cronie would read a schedule differently or warn,
:func:`analyse` returns a note (``jobwrap cron --check`` prints it).

Rejected on purpose, with one clear line: croniter's extensions ``L W # ? H R`` (cronie would
not run them, and ``R`` would pick a new time at every evaluation) and backwards ranges.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache

from jobwrap.errors import UsageError

_ITEM = re.compile(r"(\*|[0-9A-Za-z]+)(?:-([0-9A-Za-z]+))?(?:/([0-9]+))?", re.ASCII)
_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_WEEKDAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


@dataclass(frozen=True)
class _Field:
    name: str
    low: int
    high: int
    names: tuple[str, ...] = ()
    first_named: int = 0  # the value of names[0]

    def value(self, token: str) -> int:
        """The number a token stands for; ValueError naming the problem otherwise."""
        if token.isdigit():
            number = int(token)
        elif token.lower() in self.names:
            return self.first_named + self.names.index(token.lower())
        elif self.names:
            raise ValueError(f"{self.name} {token!r} is neither a number nor a name")
        else:
            raise ValueError(f"{self.name} {token!r} is not a number")
        if not self.low <= number <= self.high:
            raise ValueError(f"{self.name} {number} is out of range {self.low}-{self.high}")
        return number


_SECOND = _Field("second", 0, 59)
_UNIX_FIELDS = (
    _Field("minute", 0, 59),
    _Field("hour", 0, 23),
    _Field("day-of-month", 1, 31),
    _Field("month", 1, 12, _MONTHS, 1),
    _Field("day-of-week", 0, 7, _WEEKDAYS, 0),
)
_DAY_OF_WEEK = _UNIX_FIELDS[-1]


def field_count_problem(fields: list[str], allow_seconds: bool = True) -> str:
    expected = "5 (minute hour day-of-month month day-of-week)"
    if allow_seconds:
        return f"{len(fields)} fields, expected {expected}, or 6 with seconds first"
    problem = f"{len(fields)} fields, expected {expected}"
    if len(fields) in (6, 7):
        problem += "; second and year fields are not supported"
    return problem


def check_fields(expr: str, fields: list[str]) -> None:
    """Raise UsageError unless every field is cron syntax jobwrap runs (see :func:`analyse`)."""
    if len(fields) not in (5, 6):
        raise UsageError(f"invalid cron expression {expr!r}: {field_count_problem(fields)}")
    try:
        analyse(tuple(fields))
    except ValueError as exc:
        raise UsageError(f"invalid cron expression {expr!r}: {exc}") from None


@cache
def analyse(fields: tuple[str, ...]) -> tuple[str, tuple[str, ...]]:
    """Validate the fields: the text to hand croniter, and where cronie reads them differently.

    jobwrap reads every item itself, as cronie's ``get_range`` does, and hands croniter the
    values it found, so croniter's own readings never apply: ``N-N`` is the value N (croniter
    takes it as the whole cycle), an upper bound 0 of a day-of-week range is 7 (``sat-sun``),
    and 7 is Sunday.  Items starting with ``*`` are handed over as ``*`` or ``*/N``, because
    the day-field rule depends on that first character.  ValueError names a bad item.
    """
    specs = (_SECOND, *_UNIX_FIELDS) if len(fields) == 6 else _UNIX_FIELDS
    notes: list[str] = []
    texts = []
    for spec, field in zip(specs, fields, strict=True):
        first, *rest = field.split(",")
        items = [_normalise_item(spec, first, notes, keep_star=True)]
        items += [_normalise_item(spec, item, notes, keep_star=False) for item in rest]
        texts.append("*" if items[0] == "*" else ",".join(items))
    return " ".join(texts), tuple(notes)


def _normalise_item(spec: _Field, item: str, notes: list[str], *, keep_star: bool) -> str:
    """One list item (``*``, ``n``, ``a-b``, each optionally ``/step``) as croniter text.

    ``keep_star``: a ``*`` item stays ``*`` or ``*/N`` (the field's first item, whose first
    character decides the day rule); otherwise it too becomes its values.
    """
    match = _ITEM.fullmatch(item)
    if match is None:
        raise ValueError(
            f"{spec.name} {item!r} is not supported (use numbers, names, *, a-b, /step, a,b)"
        )
    start, end, step_text = match.groups()
    step = 1 if step_text is None else int(step_text)
    if step == 0:
        raise ValueError(f"{spec.name} step in {item!r} must be at least 1")
    if start == "*":
        if end is not None:
            raise ValueError(f"{spec.name} {item!r}: '*' cannot start a range")
        _note_large_step(spec, item, spec.low, spec.high, step, notes)
        if keep_star:
            # croniter loops on steps beyond the field; a cycle's length gives the same values.
            cycle = 7 if spec is _DAY_OF_WEEK else spec.high - spec.low + 1
            return "*" if step == 1 else f"*/{min(step, cycle)}"
        return _listed(spec, spec.low, spec.high, step)
    low = spec.value(start)
    if end is None and step_text is None:
        return str(_croniter_value(spec, low))
    if end is None:
        if spec is _DAY_OF_WEEK:  # is 7 in "1/2"?  cronie refuses the form; so do we here
            raise ValueError(
                f"day-of-week {item!r}: cronie refuses N/step, and whether it reaches 7 "
                f"(Sunday) is unclear; write a range such as {low}-6/{step}"
            )
        high = spec.high
        notes.append(
            f"{spec.name} {item!r}: cronie refuses N/step; jobwrap reads {low}-{high}/{step}"
        )
    else:
        high = spec.value(end)
        if high < low and high == 0 and spec is _DAY_OF_WEEK:
            high = 7  # cronie: a range ending on Sunday (sat-sun, 5-0)
        if high < low:
            raise ValueError(f"{spec.name} range {item!r} runs backwards")
    _note_large_step(spec, item, low, high, step, notes)
    return _listed(spec, low, high, step)


def _listed(spec: _Field, low: int, high: int, step: int) -> str:
    values = dict.fromkeys(_croniter_value(spec, v) for v in range(low, high + 1, step))
    return ",".join(map(str, values))


def _note_large_step(
    spec: _Field, item: str, low: int, high: int, step: int, notes: list[str]
) -> None:
    if step > 1 and step > high - low:
        notes.append(
            f"{spec.name} step {step} in {item!r} is larger than the range {low}-{high}: "
            f"it fires at {low} only (cronie warns; supercronic refuses it)"
        )


def _croniter_value(spec: _Field, value: int) -> int:
    return 0 if spec is _DAY_OF_WEEK and value == 7 else value
