"""The scan of a run's output: chunks of output in, metas out.

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

This module cuts the chunks into blocks of complete lines; :mod:`jobwrap.output.matcher`
matches each pattern against a block.
"""

from __future__ import annotations

from jobwrap.output.matcher import LineMatcher, match_value
from jobwrap.output.patterns import PatternSpec

LINE_CAP = 64 * 1024


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
