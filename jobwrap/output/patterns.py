"""Pattern parsing, compilation and line matching: chunks of output in, metas out.

Pure code: no I/O.  :class:`PatternScan` is fed raw chunks of stdout (stream 0) and stderr
(stream 1); it never changes the bytes, it decodes copies for itself (UTF-8,
``errors="replace"``) so invalid UTF-8 or binary output cannot break it.  jobwrap runs it in a
process of its own (``jobwrap.output.sidecar``) so that no pattern can hold the job back.

Matching semantics (documented in the README):

* each pattern is applied to each line as a string of its own, without its newline: ``^`` and
  ``\\A`` anchor at the line's start, ``$`` and ``\\Z`` at its end, a lookbehind or lookahead
  sees nothing of the lines around it and a match never spans two lines;
* a ``--meta`` takes the first capture group (or the whole match) of the *last* matching line;
* a ``--count`` counts matching lines (a line matching twice counts once);
* patterns see at least the first :data:`LINE_CAP` bytes of every line; the rest of a longer
  line may be ignored by patterns (it is still passed through and counted).

Speed matters here (gigabytes of logs pass through): whole blocks of lines are scanned with one
regex call rather than one call per line, a meta searches backwards from the end of a block,
and a top-level alternation of literals (``ERROR|Traceback|FATAL``), which Python's ``re``
scans slowly, is prefiltered with ``str.find`` on its literals.  A block-wide match is always
confirmed on its line alone; patterns whose meaning depends on what surrounds a line
(``\\A``, ``\\Z``, lookarounds) are confirmed, and found, on each line as a string of its own.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from jobwrap.errors import UsageError

LINE_CAP = 64 * 1024
VALUE_CAP = 200  # a meta value longer than this is cut: Idlemon shows short values
NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}\Z")

# Names jobwrap fills in itself, now or in later features; a user meta may not take them.
RESERVED_NAMES = frozenset(
    {
        "exit_code", "stdout_lines", "stderr_lines", "duration_ms", "run_id", "host",
        "signal", "timed_out", "skipped", "ran_at", "delayed_s", "schedule",
        "promonitor_status", "promonitor_response_ms", "promonitor_down_since",
        "systemd_unit", "ci", "ci_job_url", "commit", "analysis_incomplete",
        "hook", "hook_status", "hook_duration_ms",
    }
)

Kind = Literal["meta", "count"]


@dataclass(frozen=True)
class PatternSpec:
    """A user's ``--meta NAME=REGEX`` or ``--count NAME=REGEX``."""

    name: str
    pattern: str
    kind: Kind


def parse_pattern_spec(text: str, kind: Kind, where: str | None = None) -> PatternSpec:
    """Parse ``NAME=REGEX`` and validate both halves; raise UsageError with one clear line.

    ``where``: the place the pattern was written, when not a ``--meta``/``--count`` flag
    (``FILE [monitors.backup.meta]``): errors name it and the key."""
    name, sep, pattern = text.partition("=")
    if not sep or not pattern:
        raise UsageError(f"{where or '--' + kind} expects NAME=REGEX, got {text!r}")
    place = f"{where} {name}" if where else f"--{kind} {name!r}"
    if not NAME_RE.match(name):
        raise UsageError(
            f"{place}: a name is a letter or _ then up to 63 letters, digits, _ . -"
        )
    if name in RESERVED_NAMES:
        raise UsageError(f"{place}: that name is reserved for jobwrap's own metas")
    compile_pattern(name, pattern, kind, where)
    return PatternSpec(name, pattern, kind)


def check_unique(specs: list[PatternSpec]) -> None:
    """Two metas with one name would overwrite each other in the report: refuse them."""
    seen: set[str] = set()
    for spec in specs:
        if spec.name in seen:
            raise UsageError(f"the meta name {spec.name!r} is given twice")
        seen.add(spec.name)


def compile_pattern(name: str, pattern: str, kind: Kind = "meta",
                    where: str | None = None) -> re.Pattern[str]:
    place = f"{where} {name}" if where else f"--{kind} {name}"
    shown = _as_written(pattern)
    try:
        return re.compile(pattern, re.MULTILINE)
    except re.error as exc:
        raise UsageError(f"{place}: invalid regex {shown}: {exc}") from None
    except (OverflowError, RecursionError, ValueError) as exc:
        raise UsageError(f"{place}: unusable regex {shown}: {exc}") from None


def _as_written(pattern: str) -> str:
    """The pattern as the user wrote it (``\\d`` stays one backslash), quoted; repr only
    when it holds what a terminal line cannot show."""
    if pattern.isprintable() and "'" not in pattern:
        return f"'{pattern}'"
    return repr(pattern)


def required_literals(rx: re.Pattern[str]) -> tuple[str, ...] | None:
    """Literals one of which every match must contain, for a top-level alternation.

    Only alternations get a prefilter: for other patterns ``re`` already scans fast for a
    literal prefix.  Returns None when no safe prefilter exists (a branch without a literal,
    case-insensitive matching, or a parser layout this code does not know).
    """
    branches = _top_level_branches(rx)
    if branches is None:
        return None
    literals = []
    for ops, literal_op in branches:
        best = _longest_literal_run(ops, literal_op)
        if not best or "\n" in best:
            return None
        literals.append(best)
    return tuple(dict.fromkeys(literals))


def is_literal_alternation(rx: re.Pattern[str]) -> bool:
    """True for ``ERROR|Traceback|FATAL``: a line matches exactly when it holds a literal."""
    branches = _top_level_branches(rx)
    return branches is not None and all(
        ops and all(op is literal_op for op, _ in ops) for ops, literal_op in branches
    )


def _top_level_branches(rx: re.Pattern[str]) -> list[tuple[list, object]] | None:
    """The branches of a top-level alternation as (ops, LITERAL opcode), or None."""
    if rx.flags & re.IGNORECASE:
        return None
    try:
        from re import _constants as c  # type: ignore[attr-defined]
        from re import _parser  # type: ignore[attr-defined]

        tree = list(_parser.parse(rx.pattern, rx.flags))
        while len(tree) == 1 and tree[0][0] is c.SUBPATTERN:
            tree = list(tree[0][1][-1])
        if len(tree) != 1 or tree[0][0] is not c.BRANCH:
            return None
        return [(list(branch), c.LITERAL) for branch in tree[0][1][1]]
    except Exception:  # a private parser changed shape: matching stays exact without prefilter
        return None


def needs_lines_alone(rx: re.Pattern[str]) -> bool:
    """True when a match inside a block could differ from one on the line alone.

    ``\\A`` and ``\\Z`` mean the block's ends there, a lookaround sees the neighbouring
    lines, and ``\\B`` matches an empty line in a block (Python's never matches an empty
    string); for everything else a block-wide match re-checked within its line's bounds is
    exactly a match on the line alone.  When in doubt (the private parser changed), say True:
    matching each line alone is always right, only slower.
    """
    try:
        from re import _constants as c  # type: ignore[attr-defined]
        from re import _parser  # type: ignore[attr-defined]

        tree = _parser.parse(rx.pattern, rx.flags)
        # \B never matches an empty line alone, but does between two newlines in a block
        edges = (c.AT_BEGINNING_STRING, c.AT_END_STRING, c.AT_NON_BOUNDARY)
        todo: list = [tree]
        while todo:
            item = todo.pop()
            if isinstance(item, _parser.SubPattern):
                for op, av in item.data:
                    if op in (c.ASSERT, c.ASSERT_NOT) or (op is c.AT and av in edges):
                        return True
                    todo.append(av)
            elif isinstance(item, (list, tuple)):
                todo.extend(item)
        return False
    except Exception:  # a private parser changed shape: take the always-correct path
        return True


def _longest_literal_run(items: list, literal_op: object) -> str:
    best, run = "", []
    for op, arg in items + [(None, None)]:
        if op is literal_op:
            run.append(chr(arg))
            continue
        if len(run) > len(best):
            best = "".join(run)
        run = []
    return best


class _Scanner:
    """One compiled form of a pattern (``str`` or ``bytes``) applied to blocks of lines.

    A block holds complete lines, each ending in a newline.  Everything here works for both
    forms; ``nl`` is the newline in the block's type.  With ``alone`` every candidate line is
    matched as a string of its own (a slice) rather than within the block's bounds.
    """

    def __init__(self, rx: re.Pattern, literals: tuple | None, exact: bool, nl,
                 alone: bool) -> None:
        self.rx = rx
        self.literals = literals
        self.exact = exact  # finding a literal proves the line matches: no regex needed
        self.nl = nl
        self.alone = alone

    def _line_match(self, text, ls: int, le: int):
        """The first match on the line ``text[ls:le]`` (newline excluded), or None."""
        return self.rx.search(text[ls:le]) if self.alone else self.rx.search(text, ls, le)

    def _match_in_line(self, m: re.Match, text):
        """A block-wide match confined to its line, or the line re-checked on its own."""
        ls, le = text.rfind(self.nl, 0, m.start()) + 1, text.find(self.nl, m.start())
        return m if m.end() <= le else self.rx.search(text, ls, le)

    def count_lines(self, text, lo: int, hi: int) -> int:
        """How many lines of ``text[lo:hi]`` match (``lo`` starts a line, ``hi`` follows a
        newline); bounds rather than slices, so a chunk is scanned where it lies."""
        if self.literals is not None:
            return self._count_with_literals(text, lo, hi)
        if self.alone:
            return self._count_each_line(text, lo, hi)
        count, pos, end, nl = 0, lo, hi, self.nl
        search = self.rx.search
        while pos < end:
            m = search(text, pos, end)
            if m is None or m.start() >= end:
                break
            if self._match_in_line(m, text):
                count += 1
            pos = text.find(nl, m.start()) + 1
        return count

    def _count_each_line(self, text, lo: int, hi: int) -> int:
        count, pos, find, search, nl = 0, lo, text.find, self.rx.search, self.nl
        while pos < hi:
            le = find(nl, pos)
            if search(text[pos:le]) is not None:
                count += 1
            pos = le + 1
        return count

    def _count_with_literals(self, text, lo: int, hi: int) -> int:
        matched: set[int] = set()
        exact, find, rfind, nl = self.exact, text.find, text.rfind, self.nl
        for lit in self.literals or ():
            i = find(lit, lo, hi)
            while i != -1:
                ls, le = rfind(nl, 0, i) + 1, find(nl, i)
                if ls not in matched and (exact or self._line_match(text, ls, le)):
                    matched.add(ls)
                i = find(lit, le + 1, hi)
        return len(matched)

    def last_match(self, text, lo: int, hi: int) -> re.Match | None:
        """The first match on the last matching line of ``text[lo:hi]``, or None.

        Searches backwards in growing windows: the last lines usually decide it.
        """
        if self.literals is not None:
            return self._last_with_literals(text, lo, hi)
        if self.alone:
            return self._last_each_line(text, lo, hi)
        window = 256
        while hi > lo:
            start = max(lo, text.rfind(self.nl, lo, max(lo, hi - window - 1)) + 1)
            found = self._last_in_range(text, start, hi)
            if found is not None:
                return found
            hi, window = start, window * 4
        return None

    def _last_each_line(self, text, lo: int, hi: int) -> re.Match | None:
        le = hi - 1  # the newline ending the last line
        while le >= lo:
            prev = text.rfind(self.nl, lo, le)
            ls = lo if prev == -1 else prev + 1
            m = self.rx.search(text[ls:le])
            if m is not None:
                return m
            le = ls - 1
        return None

    def _last_in_range(self, text, lo: int, hi: int) -> re.Match | None:
        found, pos = None, lo
        while pos < hi:
            m = self.rx.search(text, pos, hi)
            if m is None or m.start() >= hi:
                break
            found = self._match_in_line(m, text) or found
            pos = text.find(self.nl, m.start()) + 1
        return found

    def _last_with_literals(self, text, lo: int, hi: int) -> re.Match | None:
        best, best_start = None, -1
        for lit in self.literals or ():
            end = hi
            while (i := text.rfind(lit, lo, end)) != -1:
                ls, le = text.rfind(self.nl, 0, i) + 1, text.find(self.nl, i)
                if ls <= best_start:
                    break
                m = self._line_match(text, ls, le)
                if m is not None:
                    best, best_start = m, ls
                    break
                end = ls
        return best


class LineMatcher:
    """One user pattern, compiled for text and, when it is ASCII, for bytes too.

    On a block of pure ASCII output an ASCII pattern means the same as bytes or as text, so
    the bytes form spares decoding the block (a good share of the cost of matching).
    """

    def __init__(self, spec: PatternSpec) -> None:
        self.spec = spec
        rx = compile_pattern(spec.name, spec.pattern, spec.kind)
        literals = required_literals(rx)
        exact = literals is not None and is_literal_alternation(rx)
        alone = needs_lines_alone(rx)
        self.text = _Scanner(rx, literals, exact, "\n", alone)
        brx = _bytes_twin(rx)
        self.bytes = None
        if brx is not None:
            blits = tuple(lit.encode("ascii") for lit in literals) if literals else None
            self.bytes = _Scanner(brx, blits, exact, b"\n", alone)


def _bytes_twin(rx: re.Pattern[str]) -> re.Pattern[bytes] | None:
    if not rx.pattern.isascii():
        return None
    try:
        return re.compile(rx.pattern.encode("ascii"), rx.flags & ~re.UNICODE)
    except (re.error, ValueError):
        return None  # e.g. an inline (?u) flag: text only


def match_value(m: re.Match) -> str:
    value = m.group(1) if m.re.groups else m.group(0)
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return (value or "")[:VALUE_CAP]


# Flags of a chunk that follows skipped output (see PatternScan.feed).
GAP = 1  # output of this stream was skipped just before: the line in progress is lost
MID_LINE = 2  # ... and the skipped output ended inside a line: skip to the next newline


class _StreamState:
    __slots__ = ("carry", "skip_to_newline")

    def __init__(self) -> None:
        self.carry = bytearray()  # the current incomplete line, up to LINE_CAP bytes
        self.skip_to_newline = False


class PatternScan:
    """The user's metas and counts over raw chunks of stdout (stream 0) and stderr (stream 1)."""

    def __init__(self, specs: list[PatternSpec] | tuple[PatternSpec, ...] = ()) -> None:
        self.matchers = [LineMatcher(s) for s in specs]
        self.bytes_ok = all(m.bytes is not None for m in self.matchers)
        self.streams = (_StreamState(), _StreamState())
        self.values: dict[str, str] = {}
        self.counts: dict[str, int] = {m.spec.name: 0 for m in self.matchers if _is_count(m)}

    def feed(self, stream: int, data: bytes, gap: int = 0) -> None:
        """Match the complete lines of one chunk; keep its last, incomplete line for later.

        ``gap`` (GAP, MID_LINE) says output was skipped before this chunk: the partial line
        around the gap is never matched, so every line matched is a line the job wrote.
        """
        st = self.streams[stream]
        if gap & GAP:
            st.carry.clear()
            st.skip_to_newline = bool(gap & MID_LINE)
        if st.skip_to_newline:
            nl = data.find(b"\n")
            if nl == -1:
                return
            st.skip_to_newline = False
            data = data[nl + 1 :]
        if data:
            self._scan(st, data)

    def _scan(self, st: _StreamState, data: bytes) -> None:
        first_nl = data.find(b"\n")
        if first_nl == -1:
            room = LINE_CAP - len(st.carry)
            if room > 0:
                st.carry += data[:room]
            return
        if st.carry:
            # finish the line begun in an earlier chunk on its own, to avoid copying the chunk
            room = max(0, LINE_CAP - len(st.carry))
            st.carry += data[: min(first_nl, room)]
            st.carry += b"\n"
            self._scan_block(bytes(st.carry))
            st.carry.clear()
            start = first_nl + 1
        else:
            start = 0
        last_nl = data.rfind(b"\n")
        if last_nl >= start:
            self._scan_block(data, start, last_nl + 1)
        if last_nl + 1 < len(data):
            st.carry += data[last_nl + 1 : last_nl + 1 + LINE_CAP]

    def _scan_block(self, raw: bytes, lo: int = 0, hi: int | None = None) -> None:
        """Match every pattern against the complete lines ``raw[lo:hi]``."""
        hi = len(raw) if hi is None else hi
        as_bytes = self.bytes_ok and raw.isascii()
        block: bytes | str = raw
        if not as_bytes:
            block = str(memoryview(raw)[lo:hi], "utf-8", "replace")
            lo, hi = 0, len(block)
        for matcher in self.matchers:
            scanner = (matcher.bytes if as_bytes else None) or matcher.text
            if _is_count(matcher):
                self.counts[matcher.spec.name] += scanner.count_lines(block, lo, hi)
            else:
                m = scanner.last_match(block, lo, hi)
                if m is not None:
                    self.values[matcher.spec.name] = match_value(m)

    def finish(self) -> list[tuple[str, str]]:
        """Match the incomplete final lines (a line without newline is a line) and return
        :meth:`results`."""
        for st in self.streams:
            if st.carry and not st.skip_to_newline:
                st.carry += b"\n"
                self._scan_block(bytes(st.carry))
            st.carry.clear()
        return self.results()

    def results(self) -> list[tuple[str, str]]:
        """The metas found so far, in spec order: a meta when it matched, a count always."""
        metas = []
        for matcher in self.matchers:
            name = matcher.spec.name
            if _is_count(matcher):
                metas.append((name, str(self.counts[name])))
            elif name in self.values:
                metas.append((name, self.values[name]))
        return metas


def _is_count(matcher: LineMatcher) -> bool:
    return matcher.spec.kind == "count"
