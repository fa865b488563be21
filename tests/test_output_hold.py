"""`--output on-failure` (chronic): output held on disk, written out unchanged only on failure."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.helpers import JOBWRAP, jobwrap, py

# 100,000 lines in 100 bursts that alternate between stdout and stderr, invalid UTF-8 and a
# last line without newline included.  After each burst the child waits until its reader has
# taken every byte (FIONREAD on the fd: 0 on a regular file, so the bare command never waits):
# the order of the bursts is then the same for jobwrap and for the bare command on one fd.
BURSTS = r"""
import fcntl, os, sys, termios, time, array
def drained(fd):
    buf = array.array('i', [0])
    try:
        fcntl.ioctl(fd, termios.FIONREAD, buf)
    except OSError:
        return True
    return buf[0] == 0
for burst in range(100):
    fd = 1 if burst % 2 == 0 else 2
    data = b''.join(b'%d line %d \xff\xc3 of burst %d\n' % (fd, i, burst) for i in range(1000))
    if burst == 99:
        data += b'no newline at the end'
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
    while not drained(fd):
        time.sleep(0.0005)
sys.exit(int(sys.argv[1]))
"""


def _run_to_files(argv: list[str], out: Path, err: Path | None, env: dict) -> int:
    with open(out, "wb") as fout, open(err or os.devnull, "wb") as ferr:
        return subprocess.run(
            argv, stdout=fout, stderr=ferr if err else subprocess.STDOUT,
            stdin=subprocess.DEVNULL, env=env, timeout=120,
        ).returncode


def test_a_failing_run_writes_its_held_output_exactly_as_the_bare_command(tmp_path):
    env = dict(os.environ)
    bare = [sys.executable, "-c", BURSTS, "3"]
    wrapped = [*JOBWRAP, "run", "--output", "on-failure", "--", *bare]
    files = {name: tmp_path / name for name in
             ("bare.out", "bare.err", "wrapped.out", "wrapped.err", "bare.both", "wrapped.both")}
    assert _run_to_files(bare, files["bare.out"], files["bare.err"], env) == 3
    assert _run_to_files(wrapped, files["wrapped.out"], files["wrapped.err"], env) == 3
    assert _run_to_files(bare, files["bare.both"], None, env) == 3
    assert _run_to_files(wrapped, files["wrapped.both"], None, env) == 3
    bare_out = files["bare.out"].read_bytes()
    assert bare_out.count(b"\n") == 50_000
    assert files["wrapped.out"].read_bytes() == bare_out
    assert files["wrapped.err"].read_bytes() == files["bare.err"].read_bytes()
    both = files["bare.both"].read_bytes()
    assert both.count(b"\n") == 100_000 and both.endswith(b"no newline at the end")
    assert files["wrapped.both"].read_bytes() == both  # the streams' order, kept on one fd


def test_a_successful_run_prints_nothing_and_is_recorded_as_usual(tmp_path):
    code = "import sys\nfor i in range(5000): print('row', i)\nprint('oops', file=sys.stderr)"
    summary = tmp_path / "s.json"
    result = jobwrap("run", "--output", "on-failure", "--summary-json", str(summary),
                     "--count", "rows=row", "--", *py(code))
    assert result.returncode == 0
    assert result.stdout == b""
    assert result.stderr == b""
    record = json.loads(summary.read_text())
    assert record["stdout_lines"] == 5000 and record["stderr_lines"] == 1
    assert {"name": "rows", "value": "5000"} in record["metas"]
    shown = jobwrap("show", "--json")
    assert "oops" in json.loads(shown.stdout)["output_tail"]


def test_output_live_stays_the_default_and_can_be_set_in_the_config(tmp_path):
    config = tmp_path / "config" / "jobwrap" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text('[monitors.quiet]\noutput = "on-failure"\n')
    code = "print('hello')"
    assert jobwrap("run", "--report", "never", "--", *py(code)).stdout == b"hello\n"
    quiet = jobwrap("run", "-m", "quiet", "--report", "never", "--", *py(code))
    assert quiet.returncode == 0 and quiet.stdout == b""
    live = jobwrap("run", "-m", "quiet", "--report", "never", "--output", "live", "--", *py(code))
    assert live.stdout == b"hello\n"


def test_a_bad_output_mode_is_one_line_and_exit_2(tmp_path):
    config = tmp_path / "config" / "jobwrap" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text('[run]\noutput = "sometimes"\n')
    result = jobwrap("run", "--", "true")
    assert result.returncode == 2
    assert result.stderr.decode().count("\n") == 1
    assert "output" in result.stderr.decode()


def test_a_timed_out_run_shows_its_held_output():
    code = "import time; print('started', flush=True); time.sleep(60)"
    result = jobwrap("run", "--output", "on-failure", "--timeout", "0.5", "--", *py(code))
    assert result.returncode == 124
    assert result.stdout == b"started\n"


def _wait_for(path: Path, deadline_s: float = 20) -> str:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if path.exists() and path.read_text().endswith("\n"):
            return path.read_text()
        time.sleep(0.01)
    raise AssertionError(f"{path} never appeared")


def _leftovers(state: Path) -> list[str]:
    return sorted(p.name for p in state.iterdir() if p.name.startswith(".jobwrap-held"))


def test_a_run_killed_while_holding_output_leaves_no_temp_file(tmp_path, state_dir):
    ready = tmp_path / "ready"
    code = ("import os, sys; print('held line', flush=True);"
            f"open({str(ready)!r}, 'w').write(str(os.getpid()) + '\\n'); sys.stdin.read()")
    proc = subprocess.Popen([*JOBWRAP, "run", "--output", "on-failure", "--", *py(code)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        child = int(_wait_for(ready))
        # The output is held on disk, in a file of the state dir that has no name.
        fds = Path(f"/proc/{proc.pid}/fd")
        held = [os.readlink(fds / fd) for fd in os.listdir(fds)]
        assert any(link.startswith(str(state_dir)) and link.endswith("(deleted)")
                   for link in held), held
        assert _leftovers(state_dir) == []
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        proc.kill()
        proc.communicate()
    os.killpg(child, signal.SIGKILL)
    assert _leftovers(state_dir) == []
    # A name left by an older jobwrap killed at the wrong instant is cleaned up by the next run.
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = state_dir / f".jobwrap-held-{dead.pid}-x1y2z3"
    stale.write_bytes(b"old output")
    mine = state_dir / f".jobwrap-held-{os.getpid()}-a1b2c3"  # its owner still lives: kept
    mine.write_bytes(b"")
    result = jobwrap("run", "--output", "on-failure", "--", "true")
    assert result.returncode == 0
    assert _leftovers(state_dir) == [mine.name]


def test_a_full_disk_while_holding_passes_the_output_through_in_order(tmp_path):
    # RLIMIT_FSIZE makes the held file "full" after 1,000 bytes (EFBIG, SIGXFSZ ignored).
    code = f"""
import os, resource, signal, sys
from pathlib import Path
from jobwrap.process.hold import hold_output
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (1000, resource.RLIM_INFINITY))
warnings = []
held = hold_output(Path({str(tmp_path)!r}), warnings.append)
for i in range(10):
    held.write(1 + i % 2, b'chunk %d ' % i + b'x' * 290 + b'\\n')
held.finish(failed=False)
os.write(2, repr(warnings).encode())
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60,
                            env=dict(os.environ, PYTHONPATH=str(Path(__file__).parent.parent)))
    assert result.returncode == 0, result.stderr
    chunks = [b"chunk %d " % i + b"x" * 290 + b"\n" for i in range(10)]
    assert result.stdout == b"".join(chunks[0::2])
    assert result.stderr.startswith(b"".join(chunks[1::2]))
    assert b"cannot hold the output" in result.stderr
