"""Line counts and regex metas, fed from the same raw chunks that are copied to the terminal.

Pure code: no I/O.  The runner hands every chunk to :meth:`OutputAnalyzer.feed`; the analyzer
never changes the bytes, it decodes copies for itself (UTF-8, ``errors="replace"``) so invalid
UTF-8 or binary output cannot break it.

Matching semantics (documented in the README):

* patterns are applied per line, with ``^``/``$`` anchoring at line boundaries;
* a ``--meta`` takes the first capture group (or the whole match) of the *last* matching line;
* a ``--count`` counts matching lines (a line matching twice counts once);
* patterns see at least the first :data:`LINE_CAP` bytes of every line; the rest of a longer
  line may be ignored by patterns (it is still passed through and counted).

Speed matters here (gigabytes of logs pass through): whole blocks of lines are scanned with one
regex call rather than one call per line, a meta searches backwards from the end of a block,
and a top-level alternation of literals (``ERROR|Traceback|FATAL``), which Python's ``re``
scans slowly, is prefiltered with ``str.find`` on its literals.
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
        "systemd_unit", "ci", "ci_job_url", "commit",
    }
)

Kind = Literal["meta", "count"]


@dataclass(frozen=True)
class PatternSpec:
    """A user's ``--meta NAME=REGEX`` or ``--count NAME=REGEX``."""

    name: str
    pattern: str
    kind: Kind


def parse_pattern_spec(text: str, kind: Kind) -> PatternSpec:
    """Parse ``NAME=REGEX`` and validate both halves; raise UsageError with one clear line."""
    name, sep, pattern = text.partition("=")
    if not sep or not pattern:
        raise UsageError(f"--{kind} expects NAME=REGEX, got {text!r}")
    if not NAME_RE.match(name):
        raise UsageError(
            f"--{kind} {name!r}: a name is a letter or _ then up to 63 letters, digits, _ . -"
        )
    if name in RESERVED_NAMES:
        raise UsageError(f"--{kind} {name!r}: that name is reserved for jobwrap's own metas")
    compile_pattern(name, pattern, kind)
    return PatternSpec(name, pattern, kind)


def check_unique(specs: list[PatternSpec]) -> None:
    """Two metas with one name would overwrite each other in the report: refuse them."""
    seen: set[str] = set()
    for spec in specs:
        if spec.name in seen:
            raise UsageError(f"the meta name {spec.name!r} is given twice")
        seen.add(spec.name)


def compile_pattern(name: str, pattern: str, kind: Kind = "meta") -> re.Pattern[str]:
    try:
        return re.compile(pattern, re.MULTILINE)
    except re.error as exc:
        raise UsageError(f"--{kind} {name}: invalid regex {pattern!r}: {exc}") from None
    except (OverflowError, RecursionError, ValueError) as exc:
        raise UsageError(f"--{kind} {name}: unusable regex {pattern!r}: {exc}") from None


def required_literals(rx: re.Pattern[str]) -> tuple[str, ...] | None:
    """Literals one of which every match must contain, for a top-level alternation.

    Only alternations get a prefilter: for other patterns ``re`` already scans fast for a
    literal prefix.  Returns None when no safe prefilter exists (a branch without a literal,
    case-insensitive matching, or a parser layout this code does not know).
    """
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
        literals = []
        for branch in tree[0][1][1]:
            best = _longest_literal_run(list(branch), c.LITERAL)
            if not best or "\n" in best:
                return None
            literals.append(best)
        return tuple(dict.fromkeys(literals))
    except Exception:  # a private parser changed shape: matching stays exact without prefilter
        return None


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


def _line_bounds(text: str, i: int) -> tuple[int, int]:
    """Start and end (the newline's index) of the line holding index i; text ends in \\n."""
    return text.rfind("\n", 0, i) + 1, text.find("\n", i)


class LineMatcher:
    """One compiled pattern applied line by line to blocks of complete lines."""

    def __init__(self, spec: PatternSpec) -> None:
        self.spec = spec
        self.rx = compile_pattern(spec.name, spec.pattern, spec.kind)
        self.literals = required_literals(self.rx)

    def _match_in_line(self, m: re.Match[str], text: str) -> re.Match[str] | None:
        """A block-wide match confined to its line, or the line re-checked on its own."""
        ls, le = _line_bounds(text, m.start())
        return m if m.end() <= le else self.rx.search(text, ls, le)

    def count_lines(self, text: str) -> int:
        """How many lines of ``text`` (complete lines, each ending in \\n) match."""
        if self.literals is not None:
            return self._count_with_literals(text)
        count, pos, end = 0, 0, len(text)
        search = self.rx.search
        while pos < end:
            m = search(text, pos)
            if m is None or m.start() >= end:
                break
            le = text.find("\n", m.start())
            if self._match_in_line(m, text):
                count += 1
            pos = le + 1
        return count

    def _count_with_literals(self, text: str) -> int:
        matched: set[int] = set()
        for lit in self.literals or ():
            i = text.find(lit)
            while i != -1:
                ls, le = _line_bounds(text, i)
                if ls not in matched and self.rx.search(text, ls, le):
                    matched.add(ls)
                i = text.find(lit, le + 1)
        return len(matched)

    def last_match(self, text: str) -> re.Match[str] | None:
        """The first match on the last matching line of ``text``, or None."""
        if self.literals is not None:
            return self._last_with_literals(text)
        hi, window = len(text), 4096
        while hi > 0:
            lo = text.rfind("\n", 0, max(0, hi - window - 1)) + 1
            found = self._last_in_range(text, lo, hi)
            if found is not None:
                return found
            hi, window = lo, window * 4
        return None

    def _last_in_range(self, text: str, lo: int, hi: int) -> re.Match[str] | None:
        found, pos = None, lo
        while pos < hi:
            m = self.rx.search(text, pos, hi)
            if m is None or m.start() >= hi:
                break
            le = text.find("\n", m.start())
            found = self._match_in_line(m, text) or found
            pos = le + 1
        return found

    def _last_with_literals(self, text: str) -> re.Match[str] | None:
        best: re.Match[str] | None = None
        best_start = -1
        for lit in self.literals or ():
            end = len(text)
            while (i := text.rfind(lit, 0, end)) != -1:
                ls, le = _line_bounds(text, i)
                if ls <= best_start:
                    break
                m = self.rx.search(text, ls, le)
                if m is not None:
                    best, best_start = m, ls
                    break
                end = ls
        return best


def match_value(m: re.Match[str]) -> str:
    value = m.group(1) if m.re.groups else m.group(0)
    return (value or "")[:VALUE_CAP]


@dataclass(frozen=True)
class Analysis:
    """What the output said: line counts per stream and the user's metas, in spec order."""

    stdout_lines: int
    stderr_lines: int
    metas: tuple[tuple[str, str], ...]


class _StreamState:
    __slots__ = ("lines", "last_byte_is_newline", "carry", "seen_any")

    def __init__(self) -> None:
        self.lines = 0
        self.last_byte_is_newline = True
        self.seen_any = False
        self.carry = bytearray()  # the current incomplete line, up to LINE_CAP bytes


class OutputAnalyzer:
    """Consumes raw chunks of stdout (stream 0) and stderr (stream 1)."""

    def __init__(self, specs: list[PatternSpec] | tuple[PatternSpec, ...] = ()) -> None:
        self.matchers = [LineMatcher(s) for s in specs]
        self.streams = (_StreamState(), _StreamState())
        self.values: dict[str, str] = {}
        self.counts: dict[str, int] = {m.spec.name: 0 for m in self.matchers if _is_count(m)}

    def feed(self, stream: int, data: bytes) -> None:
        """Account for one chunk; ``data`` is not empty."""
        st = self.streams[stream]
        st.lines += data.count(b"\n")
        st.seen_any = True
        st.last_byte_is_newline = data[-1] == 10
        if self.matchers:
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
            self._scan_block(st.carry.decode("utf-8", "replace"))
            st.carry.clear()
            start = first_nl + 1
        else:
            start = 0
        last_nl = data.rfind(b"\n")
        if last_nl >= start:
            self._scan_block(data[start : last_nl + 1].decode("utf-8", "replace"))
        if last_nl + 1 < len(data):
            st.carry += data[last_nl + 1 : last_nl + 1 + LINE_CAP]

    def _scan_block(self, text: str) -> None:
        for matcher in self.matchers:
            if _is_count(matcher):
                self.counts[matcher.spec.name] += matcher.count_lines(text)
            else:
                m = matcher.last_match(text)
                if m is not None:
                    self.values[matcher.spec.name] = match_value(m)

    def finish(self) -> Analysis:
        """Flush incomplete final lines (they count as lines) and return the analysis."""
        for st in self.streams:
            if st.seen_any and not st.last_byte_is_newline:
                st.lines += 1
                if self.matchers and st.carry:
                    st.carry += b"\n"
                    self._scan_block(st.carry.decode("utf-8", "replace"))
                st.last_byte_is_newline = True
            st.carry.clear()
        metas = []
        for matcher in self.matchers:
            name = matcher.spec.name
            if _is_count(matcher):
                metas.append((name, str(self.counts[name])))
            elif name in self.values:
                metas.append((name, self.values[name]))
        out, err = self.streams
        return Analysis(out.lines, err.lines, tuple(metas))


def _is_count(matcher: LineMatcher) -> bool:
    return matcher.spec.kind == "count"
