"""The analyzer alone: line counts, metas and counts, fed chunk by chunk."""

from __future__ import annotations

import random
import re

import pytest

from jobwrap.errors import UsageError
from jobwrap.output.analysis import OutputAnalyzer
from jobwrap.output.matcher import required_literals
from jobwrap.output.patterns import check_unique, parse_pattern_spec
from jobwrap.output.scan import LINE_CAP


def analyze(chunks, metas=(), counts=(), stream=0):
    specs = [parse_pattern_spec(m, "meta") for m in metas]
    specs += [parse_pattern_spec(c, "count") for c in counts]
    analyzer = OutputAnalyzer(specs)
    for chunk in chunks:
        if isinstance(chunk, tuple):
            analyzer.feed(*chunk)
        elif chunk:
            analyzer.feed(stream, chunk)
    return analyzer.finish()


def test_counts_lines_per_stream_including_a_final_line_without_newline():
    result = analyze([(0, b"a\nb\n"), (1, b"x\ny"), (0, b"c")])
    assert (result.stdout_lines, result.stderr_lines) == (3, 2)


def test_empty_output_has_no_lines():
    assert analyze([]).stdout_lines == 0


def test_meta_takes_first_group_of_the_last_matching_line():
    out = b"processed 1 rows\nnoise\nprocessed 22 rows\nprocessed x rows\n"
    result = analyze([out], metas=[r"rows=processed (\d+) rows"])
    assert result.metas == (("rows", "22"),)


def test_meta_without_group_is_the_whole_match_and_absent_when_nothing_matches():
    result = analyze([b"2026-01-02 ok\n"], metas=[r"day=\d{4}-\d\d-\d\d", "none=zzz"])
    assert result.metas == (("day", "2026-01-02"),)


def test_count_counts_lines_once_and_reports_zero():
    out = b"ERROR a FATAL\nok\nFATAL\nTraceback (most recent call last)\n"
    result = analyze([out], counts=["errors=ERROR|Traceback|FATAL", "warn=WARN"])
    assert result.metas == (("errors", "3"), ("warn", "0"))


def test_lines_split_across_chunks_are_matched_whole():
    data = b"processed 41 rows\npro" + b"cessed 42 ro" + b"ws\n"
    chunks = [data[i : i + 1] for i in range(len(data))]
    result = analyze(chunks, metas=[r"rows=processed (\d+) rows"], counts=["p=processed"])
    assert result.metas == (("rows", "42"), ("p", "2"))
    assert result.stdout_lines == 2


def test_final_line_without_newline_is_matched():
    result = analyze([b"a\ndone 7"], metas=[r"n=done (\d+)$"])
    assert result.metas == (("n", "7"),)


def test_stdout_and_stderr_lines_do_not_mix():
    chunks = [(0, b"proc"), (1, b"essed 5\n"), (0, b"essed 6\n")]
    result = analyze(chunks, metas=[r"n=processed (\d)"])
    assert result.metas == (("n", "6"),)


def test_invalid_utf8_and_binary_do_not_break_matching():
    out = b"\xff\xfe bad \xc3\x28 processed 9 rows\n\x00\x01\x02\n"
    result = analyze([out], metas=[r"rows=processed (\d+) rows"], counts=["bin=\x00"])
    assert result.metas == (("rows", "9"), ("bin", "1"))


def test_patterns_see_the_first_line_cap_bytes_of_a_long_line():
    head = b"x" * (LINE_CAP - 10) + b"MARK"
    chunks = [head[:1000], head[1000:], b"y" * 100_000 + b"LATE\n"]
    result = analyze(chunks, counts=["mark=MARK", "late=LATE"])
    assert result.metas == (("mark", "1"), ("late", "0"))
    assert result.stdout_lines == 1


def test_match_spanning_lines_is_not_a_line_match():
    # \s can cross a newline when a whole block is scanned; per line it must not.
    result = analyze([b"total\n42\n"], metas=[r"n=total\s+(\d+)"], counts=[r"c=total\s+\d"])
    assert result.metas == (("c", "0"),)


def test_anchors_work_per_line():
    result = analyze([b"a ok\nok b\nok\n"], counts=["only=^ok$", "starts=^ok"])
    assert result.metas == (("only", "1"), ("starts", "2"))


@pytest.mark.parametrize(
    "text, message",
    [
        ("rows", "NAME=REGEX"),
        ("=x", "name"),
        ("rows=", "NAME=REGEX"),
        ("rows=(", "invalid regex"),
        ("exit_code=x", "reserved"),
        ("9lives=x", "name"),
    ],
)
def test_bad_specs_are_one_line_usage_errors(text, message):
    with pytest.raises(UsageError, match=re.escape(message)) as err:
        parse_pattern_spec(text, "meta")
    assert "\n" not in str(err.value)


def test_duplicate_names_are_refused():
    specs = [parse_pattern_spec("a=x", "meta"), parse_pattern_spec("a=y", "count")]
    with pytest.raises(UsageError, match="given twice"):
        check_unique(specs)


def test_prefilter_literals_only_for_safe_alternations():
    def lits(p, flags=0):
        return required_literals(re.compile(p, flags | re.MULTILINE))

    assert lits("ERROR|Traceback|FATAL") == ("ERROR", "Traceback", "FATAL")
    assert lits(r"(?:warn: \d+|ERROR)") == ("warn: ", "ERROR")
    assert lits(r"\d+|ERROR") is None  # a branch without a literal
    assert lits("ERROR|FATAL", re.IGNORECASE) is None
    assert lits(r"processed (\d+)") is None  # re scans a literal prefix fast by itself


def naive(lines, metas, counts):
    """The reference: each pattern applied to each line on its own."""
    values = {}
    out = []
    for name, pattern in metas:
        rx = re.compile(pattern, re.MULTILINE)
        for line in lines:
            m = rx.search(line)
            if m:
                values[name] = m.group(1) if rx.groups else m.group(0)
        if name in values:
            out.append((name, values[name] or ""))
    for name, pattern in counts:
        rx = re.compile(pattern, re.MULTILINE)
        out.append((name, str(sum(1 for line in lines if rx.search(line)))))
    return tuple(out)


@pytest.mark.parametrize("seed", range(25))
def test_block_scanning_agrees_with_line_by_line_matching(seed):
    rnd = random.Random(seed)
    words = ["ERROR", "FATAL", "Traceback", "ok", "processed 12 rows", "2026-11-23", "x", ""]
    lines = [" ".join(rnd.choice(words) for _ in range(rnd.randint(0, 4))) for _ in range(300)]
    metas = [
        ("rows", r"processed (\d+) rows"),
        ("day", r"(\d{4}-\d\d-\d\d)"),
        ("alt", "ERROR|FATAL"),
    ]
    counts = [("errs", "ERROR|Traceback|FATAL"), ("oks", r"^ok\b"), ("emp", "^$")]
    data = "".join(line + "\n" for line in lines).encode()
    cuts = sorted(rnd.sample(range(1, len(data)), 30))
    chunks = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
    result = analyze(
        chunks,
        metas=[f"{n}={p}" for n, p in metas],
        counts=[f"{n}={p}" for n, p in counts],
    )
    meta_part = naive(lines, metas, [])
    count_part = naive(lines, [], counts)
    assert result.metas == meta_part + count_part


def test_unicode_semantics_hold_whether_or_not_a_block_is_ascii():
    # \d and \w are Unicode-aware on text; an ASCII block takes the bytes path, a non-ASCII
    # block the decoded one: the answers must be what text matching gives.
    ascii_block = [b"count 42\n"]
    mixed_block = [b"count 42\n", "count \u0663\u0664 caf\u00e9\n".encode()]
    metas = [r"n=count (\d+)", r"w=(\w+)$"]
    assert analyze(ascii_block, metas=metas).metas == (("n", "42"), ("w", "42"))
    assert analyze(mixed_block, metas=metas).metas == (("n", "\u0663\u0664"), ("w", "caf\u00e9"))


def test_a_non_ascii_pattern_still_matches_ascii_and_non_ascii_output():
    result = analyze(["température 21\nok\n".encode()], metas=["t=température (\\d+)"])
    assert result.metas == (("t", "21"),)


@pytest.mark.parametrize("seed", range(10))
def test_block_scanning_agrees_with_line_matching_on_mixed_unicode_output(seed):
    rnd = random.Random(1000 + seed)
    words = ["ERROR", "caf\u00e9", "\u0663\u0664", "ok", "n 12", "FATAL", "\u00c9t\u00e9", ""]
    lines = [" ".join(rnd.choice(words) for _ in range(rnd.randint(0, 4))) for _ in range(200)]
    metas = [("num", r"(\d+)"), ("word", r"(\w+)$"), ("alt", "ERROR|FATAL")]
    counts = [("errs", "ERROR|FATAL"), ("digits", r"\d"), ("wide", r"\w{4,}")]
    data = "".join(line + "\n" for line in lines).encode()
    cuts = sorted(rnd.sample(range(1, len(data)), 20))
    chunks = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
    result = analyze(chunks, metas=[f"{n}={p}" for n, p in metas],
                     counts=[f"{n}={p}" for n, p in counts])
    assert result.metas == naive(lines, metas, []) + naive(lines, [], counts)


def test_a_meta_value_is_cut_at_200_characters():
    result = analyze([b"v=" + b"x" * 500 + b"\n"], metas=["v=v=(x+)"])
    assert result.metas == (("v", "x" * 200),)
