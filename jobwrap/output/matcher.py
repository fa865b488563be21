"""One user pattern applied to blocks of complete lines: the lines it matches, the last one.

Speed matters here (gigabytes of logs pass through): whole blocks of lines are scanned with one
regex call rather than one call per line, a meta searches backwards from the end of a block,
and a top-level alternation of literals (``ERROR|Traceback|FATAL``), which Python's ``re``
scans slowly, is prefiltered with ``str.find`` on its literals.  A block-wide match is always
confirmed on its line alone; patterns whose meaning depends on what surrounds a line
(``\\A``, ``\\Z``, lookarounds) are confirmed, and found, on each line as a string of its own.
The matching semantics are :mod:`jobwrap.output.scan`'s.
"""

from __future__ import annotations

import re

from jobwrap.output.patterns import PatternSpec, compile_pattern

VALUE_CAP = 200  # a meta value longer than this is cut: Idlemon shows short values


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
