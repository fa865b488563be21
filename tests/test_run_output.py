"""`jobwrap run` passes output through byte for byte, promptly, and inherits stdin and env."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys

import pytest

from tests.helpers import JOBWRAP, jobwrap, py


def test_binary_output_passes_through_exactly_and_streams_stay_apart():
    out = bytes(range(256)) * 3 + b"\xff\xfe\xc3\x28 no newline at end"
    err = b"\x00err\r\n\x1b[31mred\x1b[0m \xe9"
    code = (
        "import sys;"
        f"sys.stdout.buffer.write({out!r}); sys.stdout.flush();"
        f"sys.stderr.buffer.write({err!r})"
    )
    result = jobwrap("run", "--", *py(code))
    assert result.returncode == 0
    assert result.stdout == out
    assert result.stderr == err


def test_large_output_with_long_lines_passes_through(tmp_path):
    # 40 MiB of lines plus one 8 MiB line without a newline, checked by size and digest.
    code = (
        "import sys; w = sys.stdout.buffer.write\n"
        "line = b'2026-11-23 INFO processed 42 rows in 3 ms\\n'\n"
        "for _ in range(40 * 1024 * 1024 // len(line)): w(line)\n"
        "w(b'z' * (8 << 20))\n"
    )
    summary = tmp_path / "s.json"
    result = jobwrap("run", "--summary-json", str(summary), "--count", "info=INFO", "--", *py(code))
    lines = 40 * 1024 * 1024 // 42
    assert len(result.stdout) == lines * 42 + (8 << 20)
    assert result.stdout.endswith(b"z" * 1000)
    metas = dict((m["name"], m["value"]) for m in json.loads(summary.read_text())["metas"])
    assert metas["stdout_lines"] == str(lines + 1)
    assert metas["info"] == str(lines)


def test_a_line_appears_before_the_child_writes_the_next():
    # The child prints one line, then waits for input that the test sends only after it has
    # read that line from jobwrap's stdout: if jobwrap held lines back, this would hang.
    code = "import sys; print('first', flush=True); sys.stdin.readline(); print('second')"
    with subprocess.Popen(
        [*JOBWRAP, "run", "--", *py(code)], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    ) as proc:
        try:
            ready, _, _ = select.select([proc.stdout], [], [], 30)
            assert ready, "the first line did not come through while the child was running"
            assert proc.stdout.readline() == b"first\n"
            proc.stdin.write(b"go\n")
            proc.stdin.close()
            assert proc.stdout.read() == b"second\n"
            assert proc.wait(timeout=30) == 0
        finally:
            proc.kill()


def test_stdin_is_inherited():
    result = jobwrap("run", "--", "cat", input=b"from stdin\x00\xff")
    assert result.stdout == b"from stdin\x00\xff"


def test_environment_is_inherited():
    result = jobwrap("run", "--", *py("import os; print(os.environ['JW_TEST'])"),
                     env={"JW_TEST": "value 1"})
    assert result.stdout == b"value 1\n"


def test_no_shell_is_involved():
    result = jobwrap("run", "--", "echo", "$HOME", "*", ";", "|")
    assert result.stdout == b"$HOME * ; |\n"


def test_options_after_the_command_belong_to_the_command():
    result = jobwrap("run", "echo", "-n", "--timeout", "x")
    assert result.returncode == 0
    assert result.stdout == b"--timeout x"


def test_closed_reader_gives_the_child_sigpipe_as_it_would_without_jobwrap():
    # `jobwrap run -- yes | head -1`: yes must die of SIGPIPE, not run forever.
    with subprocess.Popen([*JOBWRAP, "run", "--", "yes"], stdout=subprocess.PIPE) as proc:
        assert proc.stdout.readline() == b"y\n"
        proc.stdout.close()
        assert proc.wait(timeout=30) == 128 + 13


# Linux charges a freshly exec'd process with the RSS of the process that forked it, so the peak
# is measured from a tiny Python parent rather than from pytest (which may be large by now).
PEAK_RSS = (
    "import os, subprocess, sys\n"
    "p = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL)\n"
    "_, status, usage = os.wait4(p.pid, 0)\n"
    "print(os.waitstatus_to_exitcode(status), usage.ru_maxrss)\n"
)


def test_memory_stays_bounded_with_a_huge_line():
    # 256 MiB without a single newline, produced by a tiny generator; jobwrap must not buffer it.
    gen = "head -c 268435456 /dev/zero | tr '\\0' x"
    cmd = [*JOBWRAP, "run", "--meta", "x=(x{3})", "--count", "y=y", "--", "sh", "-c", gen]
    out = subprocess.run(py(PEAK_RSS) + cmd, capture_output=True, check=True, timeout=120)
    status, peak_kib = map(int, out.stdout.split())
    assert status == 0
    assert peak_kib < 40 * 1024, f"peak RSS {peak_kib} KiB"


LOG_BLOCK = (
    "import random, sys\n"
    "rnd = random.Random(7)\n"
    "levels = ['INFO'] * 20 + ['WARN', 'ERROR', 'FATAL', 'Traceback (most recent call)']\n"
    "def line():\n"
    "    return (f'2026-11-{rnd.randint(10, 28)}T10:00:00 {rnd.choice(levels)} worker-'\n"
    "            f'{rnd.randint(1, 99)} processed {rnd.randint(1, 10**6)} rows'\n"
    "            + ' x' * rnd.randint(0, 120) + '\\n')\n"
    "block = ''.join(line() for _ in range(40000)).encode()\n"
    "with open(sys.argv[1], 'wb') as f:\n"
    "    for _ in range(int(sys.argv[2]) * 2**20 // len(block)): f.write(block)\n"
)


@pytest.mark.slow
def test_memory_stays_bounded_with_metas_over_many_varied_lines(tmp_path):
    log = tmp_path / "log.txt"
    subprocess.run(py(LOG_BLOCK) + [str(log), "200"], check=True, timeout=120)
    metas = ["--meta", "a=processed (\\d+) rows", "--meta", "b=ERROR|Traceback|FATAL",
             "--meta", "c=(\\d{4}-\\d\\d-\\d\\d)", "--count", "d=FATAL|ERROR"]
    cmd = [*JOBWRAP, "run", *metas, "--", "cat", str(log)]
    out = subprocess.run(py(PEAK_RSS) + cmd, capture_output=True, check=True, timeout=300)
    status, peak_kib = map(int, out.stdout.split())
    assert status == 0
    assert peak_kib < 40 * 1024, f"peak RSS {peak_kib} KiB"


def test_run_works_when_jobwrap_stdout_is_closed():
    code = "import sys; sys.stderr.write('err ok')"
    result = subprocess.run(
        [*JOBWRAP, "run", "--", *py(code)], stdout=None, stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL, close_fds=True, timeout=60,
        preexec_fn=lambda: os.close(1),
    )
    assert result.returncode == 0
    assert result.stderr == b"err ok"


def test_python_child_sees_unbuffered_pipe_semantics_unchanged():
    # jobwrap must not turn the child's stdout into a terminal or change its buffering mode.
    result = jobwrap("run", "--", *py("import sys; print(sys.stdout.isatty())"))
    assert result.stdout == b"False\n"
    assert sys.executable  # the child ran with the same interpreter


NONBLOCKING_READER = """
import fcntl, os, subprocess, sys, time
r, w = os.pipe()
fcntl.fcntl(w, fcntl.F_SETFL, fcntl.fcntl(w, fcntl.F_GETFL) | os.O_NONBLOCK)
child = subprocess.Popen(sys.argv[1:], stdout=w)
os.close(w)
total = 0
while True:
    time.sleep(0.002)  # a slow reader, so the non-blocking pipe fills up
    chunk = os.read(r, 65536)
    if not chunk:
        break
    total += len(chunk)
print(child.wait(), total)
"""


def test_a_non_blocking_stdout_loses_no_output():
    # Regression: EAGAIN on a stdout someone else made non-blocking stopped the copying.
    cmd = [*JOBWRAP, "run", "--", "sh", "-c", "head -c 3000000 /dev/zero"]
    out = subprocess.run(py(NONBLOCKING_READER) + cmd, capture_output=True, timeout=120)
    assert out.stdout.split() == [b"0", b"3000000"]
    assert out.stderr == b""
