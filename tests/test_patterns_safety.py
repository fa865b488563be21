"""Patterns can never hold the job back, and they match each line as a string of its own.

The end-to-end cases run the real CLI with a pattern whose matching takes exponential time
(``(a+)+$`` on ``aaa…a!``): output must keep flowing, ``--timeout`` must fire on time and the
run must say that its metas are incomplete.  The property tests compare the analyzer with a
line-by-line reference (``re.search`` on each line alone) over generated patterns and output.
"""

from __future__ import annotations

import json
import os
import re
import select
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jobwrap.output.patterns import parse_pattern_spec
from jobwrap.output.scan import GAP, MID_LINE, PatternScan
from tests.helpers import JOBWRAP, jobwrap, py

CATASTROPHIC = "m=(a+)+$"
EVIL_LINE = "a" * 30 + "!"


def _metas(summary) -> dict[str, str]:
    return {m["name"]: m["value"] for m in json.loads(summary.read_text())["metas"]}


def _read_until(stream, marker: bytes, deadline: float, seen: bytes = b"") -> bytes:
    """``seen`` plus what ``stream`` gives until ``marker`` is in it; fail at ``deadline``."""
    while marker not in seen:
        left = deadline - time.monotonic()
        ready, _, _ = select.select([stream], [], [], max(0.0, left))
        assert ready, f"output held back: only {seen!r} came through"
        chunk = stream.read1(65536)
        assert chunk, f"output ended before {marker!r}: {seen!r}"
        seen += chunk
    return seen


def test_a_catastrophic_meta_lets_output_flow_and_the_timeout_fire(tmp_path):
    summary = tmp_path / "s.json"
    code = (
        "import sys, time\n"
        f"print('before'); print({EVIL_LINE!r}); print('after', flush=True)\n"
        "time.sleep(1); print('later', flush=True); time.sleep(60)\n"
    )
    argv = [*JOBWRAP, "run", "--timeout", "2", "--summary-json", str(summary),
            "--meta", CATASTROPHIC, "--count", "n=a", "--", *py(code)]
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        try:
            # timed from the child's first line, so a slow start of jobwrap does not count
            seen = _read_until(proc.stdout, b"before\n", time.monotonic() + 30)
            first = time.monotonic()
            seen = _read_until(proc.stdout, b"after\n", first + 0.5, seen)
            seen = _read_until(proc.stdout, b"later\n", first + 1.7, seen)
            status = proc.wait(timeout=10)
        finally:
            proc.kill()
    elapsed = time.monotonic() - first
    assert status == 124
    assert elapsed < 3.0, f"--timeout 2 ended the run {elapsed:.1f} s after the child started"
    assert seen == f"before\n{EVIL_LINE}\nafter\nlater\n".encode()
    metas = _metas(summary)
    assert metas["analysis_incomplete"] == "true"
    assert metas["timed_out"] == "true"
    assert "n" in metas  # the interrupted matcher still reported its count (a lower bound)


def test_a_catastrophic_count_does_not_delay_a_quick_job(tmp_path):
    summary = tmp_path / "s.json"
    code = f"print('x'); print({EVIL_LINE!r}); print('done')"
    argv = [*JOBWRAP, "run", "--summary-json", str(summary), "--count", CATASTROPHIC,
            "--meta", "d=(d)one", "--", *py(code)]
    start = time.monotonic()
    out = subprocess.run(argv, capture_output=True, timeout=30)
    elapsed = time.monotonic() - start
    assert out.returncode == 0, out.stderr
    assert out.stdout == f"x\n{EVIL_LINE}\ndone\n".encode()
    assert elapsed < 5.0, f"a 0.1 s job took {elapsed:.1f} s"  # minutes before the sidecar
    metas = _metas(summary)
    assert metas["analysis_incomplete"] == "true"
    assert metas["stdout_lines"] == "3"  # line counts stay exact: they are not pattern work


def test_a_run_that_keeps_up_is_not_marked_incomplete(tmp_path):
    summary = tmp_path / "s.json"
    code = "for i in range(200000): print(f'processed {i} rows')"
    argv = [*JOBWRAP, "run", "--summary-json", str(summary), "--meta", r"r=processed (\d+)",
            "--count", "c=7 rows$", "--", *py(code)]
    out = subprocess.run(argv, capture_output=True, timeout=60)
    assert out.returncode == 0
    metas = _metas(summary)
    assert "analysis_incomplete" not in metas
    assert (metas["r"], metas["c"]) == ("199999", "20000")


def test_analysis_incomplete_is_a_reserved_name():
    out = subprocess.run([*JOBWRAP, "run", "--meta", "analysis_incomplete=x", "--", "true"],
                         capture_output=True, timeout=30)
    assert out.returncode == 2
    assert out.stderr.decode().count("\n") == 1 and b"reserved" in out.stderr


def _matchers_tagged(tag: str) -> list[int]:
    """Pids of pattern sidecars whose environment holds ``tag``."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if (entry / "comm").read_text().strip() == "jobwrap-match" and \
                    tag.encode() in (entry / "environ").read_bytes():
                found.append(int(entry.name))
        except (OSError, ValueError):
            continue
    return found


def test_the_matcher_ends_with_jobwrap_even_when_jobwrap_is_killed(tmp_path):
    tag = f"JOBWRAP_TEST_TAG={uuid.uuid4()}"
    env = dict(os.environ, JOBWRAP_TEST_TAG=tag.partition("=")[2])
    code = f"print({EVIL_LINE!r}, flush=True); import time; time.sleep(60)"
    with subprocess.Popen([*JOBWRAP, "run", "--meta", CATASTROPHIC, "--", *py(code)], env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL) as proc:
        try:
            _read_until(proc.stdout, b"!\n", time.monotonic() + 10)
            matchers = _matchers_tagged(tag)
            assert len(matchers) == 1
            assert os.getpgid(matchers[0]) != os.getpgid(proc.pid)  # not in jobwrap's group
            os.kill(proc.pid, signal.SIGKILL)
        finally:
            proc.kill()
            proc.wait()
    deadline = time.monotonic() + 5
    while _matchers_tagged(tag) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _matchers_tagged(tag), "the matcher outlived jobwrap"


def test_no_matcher_is_left_after_a_run():
    tag = str(uuid.uuid4())
    out = jobwrap("run", "--meta", "x=(o)k", "--", "echo", "ok", env={"JOBWRAP_TEST_TAG": tag})
    assert out.returncode == 0
    assert not _matchers_tagged(tag)


def test_metas_work_when_jobwrap_starts_with_stdout_closed(tmp_path):
    summary = tmp_path / "s.json"
    out = subprocess.run(
        [*JOBWRAP, "run", "--summary-json", str(summary), "--meta", "x=(o)k", "--",
         "sh", "-c", "echo ok >&2; echo err >&2"], stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, timeout=30, preexec_fn=lambda: os.close(1),
    )
    # The command's stdout is closed too (as it was for jobwrap): its output goes to stderr.
    assert out.returncode == 0
    assert out.stderr == b"ok\nerr\n"
    assert _metas(summary)["x"] == "o"


def test_a_run_without_patterns_starts_no_matcher():
    code = ("import sys, jobwrap.process.spawn as s; s.run_command(s.RunSpec(argv=('true',)));"
            "print('jobwrap.output.sidecar' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True,
                          check=True).stdout == b"False\n"


def test_a_gap_drops_the_line_around_it_and_matching_resumes_at_the_next():
    scanner = PatternScan([parse_pattern_spec("n=x", "count")])
    scanner.feed(0, b"x1\nx-half")  # the rest of this line (and more) was skipped
    scanner.feed(0, b"-tail x\nx2\n", GAP | MID_LINE)
    scanner.feed(1, b"x3\nx-part")
    scanner.feed(1, b"x4\n", GAP)  # the skipped output ended its line: only the carry goes
    assert scanner.finish() == [("n", "4")]  # x1 x2 x3 x4, never the halves


# --- per-line semantics ---------------------------------------------------------------------

def scan(data: bytes, metas=(), counts=(), cuts=()) -> dict[str, str]:
    specs = [parse_pattern_spec(m, "meta") for m in metas]
    specs += [parse_pattern_spec(c, "count") for c in counts]
    scanner = PatternScan(specs)
    last = 0
    for cut in sorted(set(cuts)) + [len(data)]:
        if cut > last:
            scanner.feed(0, data[last:cut])
            last = cut
    return dict(scanner.finish())


def reference(data: bytes, metas=(), counts=()) -> dict[str, str]:
    """Each line alone (newline excluded), decoded as the README says."""
    lines = data.decode("utf-8", "replace").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    found: dict[str, str] = {}
    for text in metas:
        name, _, pattern = text.partition("=")
        rx = re.compile(pattern)
        for line in lines:
            m = rx.search(line)
            if m is not None:
                found[name] = ((m.group(1) if rx.groups else m.group(0)) or "")[:200]
    for text in counts:
        name, _, pattern = text.partition("=")
        rx = re.compile(pattern)
        found[name] = str(sum(1 for line in lines if rx.search(line)))
    return found


PER_LINE_CASES = [
    # (pattern, output, expected count): each would differ if lines were matched in blocks
    (r"\Afoo", b"foo\nfoo x\nx foo\n", 2),
    (r"foo\Z", b"foo\nx foo\nfoo x\n", 2),
    (r"\A\Z", b"\n\nx\n", 2),
    (r"(?<!\S)b", b"a\nb\nab\n", 1),
    (r"(?<=\n)b", b"a\nb\n", 0),
    (r"(?<![a-z])b", b"a\nb\n", 1),
    (r"a(?!\s)", b"a\nb\na b\n", 1),
    (r"a(?=\s)", b"a\nb\n", 0),
    (r"a\s*$", b"a\nb\n", 1),
    (r"\s", b"a\nb\n\n", 0),
    (r"a[^x]", b"a\nb\n", 0),
    (r"(?s)a.", b"a\nb\n", 0),
    (r"a\s+b", b"a\n b\n", 0),
    (r"^$", b"a\n\n\nb", 2),
    (r"(a)\1", b"a\na\naa\n", 1),
]


def test_patterns_match_each_line_alone():
    for pattern, data, expected in PER_LINE_CASES:
        for cuts in ((), (1,), (2, 3), tuple(range(len(data)))):
            got = scan(data, counts=[f"n={pattern}"], cuts=cuts)
            assert got == {"n": str(expected)}, (pattern, data, cuts)
            assert reference(data, counts=[f"n={pattern}"]) == got


def test_a_meta_takes_the_last_line_matched_alone():
    assert scan(b"x1\ny2\n", metas=[r"m=(?<!\S)(\w\d)"]) == {"m": "y2"}
    assert scan(b"a b\nab\n", metas=[r"m=\A(\w+)"]) == {"m": "ab"}
    assert scan(b"k=1\nk=2 \nk=3\n", metas=[r"m=(\d)\Z"]) == {"m": "3"}
    assert scan(b"a1\nb\n", metas=[r"m=(\w)(?=\s|$)"]) == {"m": "b"}


PIECES = [
    r"a", r"b", r"ab", r"\s", r"\S", r"\w", r"\W", r"\d", r".", r"[^a]", r"[ \t]", r"\b",
    r"\B", r"^", r"$", r"\A", r"\Z", r"(?<=a)", r"(?<!a)", r"(?<!\S)", r"(?=\s)", r"(?!\w)",
    r"(?=$)", r"a*", r"\s*", r"b+", r"(a|b)", r"(?:ab|\s)", r"[ab]?", r"\n",
]
LINE_TEXT = st.text(alphabet="ab \t1\n", max_size=40)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    pieces=st.lists(st.sampled_from(PIECES), min_size=1, max_size=4),
    text=LINE_TEXT,
    cuts=st.lists(st.integers(min_value=0, max_value=40), max_size=4),
    kind=st.sampled_from(["meta", "count"]),
)
def test_matching_agrees_with_a_line_by_line_reference(pieces, text, cuts, kind):
    pattern = "".join(pieces)
    try:
        re.compile(pattern)
    except re.error:
        return
    data = text.encode()
    spec = [f"p={pattern}"]
    args = {"metas": spec} if kind == "meta" else {"counts": spec}
    assert scan(data, cuts=[c for c in cuts if c <= len(data)], **args) == reference(data, **args)
