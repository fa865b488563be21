"""What the output said: line counts per stream, and the user's metas from the pattern sidecar.

The runner hands every chunk it has written out to :meth:`OutputAnalyzer.feed`.  Line counts
are exact and cheap, so they are kept here; pattern matching, which a pattern can make
arbitrarily slow, runs in a sidecar process (``jobwrap.output.sidecar``, started only when
there are patterns) that may fall behind but never holds the output back.  When it could not
see everything, the metas say so: ``analysis_incomplete=true``.
"""

from __future__ import annotations

from dataclasses import dataclass

from jobwrap.output.patterns import PatternSpec

INCOMPLETE_META = ("analysis_incomplete", "true")


@dataclass(frozen=True)
class Analysis:
    """Line counts per stream and the user's metas, in spec order."""

    stdout_lines: int
    stderr_lines: int
    metas: tuple[tuple[str, str], ...]


class _LineCount:
    __slots__ = ("lines", "last_byte_is_newline", "seen_any")

    def __init__(self) -> None:
        self.lines = 0
        self.last_byte_is_newline = True
        self.seen_any = False


class OutputAnalyzer:
    """Consumes raw chunks of stdout (stream 0) and stderr (stream 1)."""

    def __init__(self, specs: list[PatternSpec] | tuple[PatternSpec, ...] = ()) -> None:
        self.streams = (_LineCount(), _LineCount())
        self.sidecar = None
        if specs:
            from jobwrap.output.sidecar import Sidecar

            self.sidecar = Sidecar(specs)

    def feed(self, stream: int, data: bytes) -> None:
        """Account for one chunk; ``data`` is not empty.  Returns without waiting for long."""
        st = self.streams[stream]
        st.lines += data.count(b"\n")
        st.seen_any = True
        st.last_byte_is_newline = data[-1] == 10
        if self.sidecar is not None:
            self.sidecar.feed(stream, data)

    def finish(self) -> Analysis:
        """Count incomplete final lines (they are lines) and collect the metas.

        Takes at most the sidecar's grace period (see ``jobwrap.output.sidecar``).
        """
        for st in self.streams:
            if st.seen_any and not st.last_byte_is_newline:
                st.lines += 1
                st.last_byte_is_newline = True
        metas: list[tuple[str, str]] = []
        if self.sidecar is not None:
            metas, complete = self.sidecar.finish()
            self.sidecar = None
            if not complete:
                metas.append(INCOMPLETE_META)
        out, err = self.streams
        return Analysis(out.lines, err.lines, tuple(metas))
