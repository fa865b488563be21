"""Run one pipeline and print its wall time, exit statuses and the last stage's peak RSS.

Usage: ``python -I -S probe.py CMD [ARG]... [::|:: CMD [ARG]...]...``

Why a separate tiny process: ``ru_maxrss`` of an exec'd process starts at the peak RSS of the
process that spawned it (Linux keeps the old address space's high-water mark across exec, and
with vfork/posix_spawn that is the parent's).  Spawned from the benchmark itself, jobwrap would
be charged with the benchmark's own memory.  This script imports only builtin modules and runs
with ``-I -S``, so that floor is a few MiB; ``run.py`` measures and prints it.

The first stage reads /dev/null, each stage writes into the next through a pipe, the last
writes to /dev/null; stderr is inherited.  The clock runs from just before the first spawn to
the last reap, so this script's own start-up is not counted.

Prints one line: ``WALL_S MAXRSS_KIB CPU_S STATUS [STATUS]...``: the last stage's peak RSS, the
CPU time (user + system) of the whole pipeline, children each stage waited for included, then
every stage's exit code.

The probe is a child subreaper, so a process a stage detaches (jobwrap's pattern sidecar, which
is forked twice to leave jobwrap's process tree) is re-parented to it and reaped here: its CPU
time is counted, and its peak RSS competes with the last stage's for MAXRSS_KIB.  The clock
stops at the last stage's exit, not at a detached process's.
"""

import os
import sys
import time

SEP = "::|::"


def split_stages(argv: list[str]) -> list[list[str]]:
    stages, current = [], []
    for arg in argv:
        if arg == SEP:
            stages.append(current)
            current = []
        else:
            current.append(arg)
    stages.append(current)
    if not all(stages):
        raise SystemExit("probe: empty pipeline stage")
    return stages


def adopt_orphans() -> None:
    try:
        import ctypes

        ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    except (ImportError, OSError, AttributeError):
        pass  # not Linux: detached processes go uncounted


def main() -> None:
    stages = split_stages(sys.argv[1:])
    adopt_orphans()
    null_in = os.open(os.devnull, os.O_RDONLY)
    null_out = os.open(os.devnull, os.O_WRONLY)
    t0 = time.perf_counter()
    pids, stdin_fd = [], null_in
    for i, argv in enumerate(stages):
        last = i == len(stages) - 1
        read_end, write_end = (None, null_out) if last else os.pipe()
        actions = [(os.POSIX_SPAWN_DUP2, stdin_fd, 0), (os.POSIX_SPAWN_DUP2, write_end, 1)]
        pids.append(os.posix_spawnp(argv[0], argv, os.environ, file_actions=actions))
        if stdin_fd != null_in:
            os.close(stdin_fd)
        if not last:
            os.close(write_end)
            stdin_fd = read_end
    statuses, maxrss, cpu = {}, 0, 0.0
    while len(statuses) < len(pids):
        pid, status, usage = os.wait4(-1, 0)
        if pid in pids:
            statuses[pid] = os.waitstatus_to_exitcode(status)
            cpu += usage.ru_utime + usage.ru_stime
            if pid == pids[-1]:
                maxrss = max(maxrss, usage.ru_maxrss)
        else:  # a detached descendant
            cpu += usage.ru_utime + usage.ru_stime
            maxrss = max(maxrss, usage.ru_maxrss)
    wall = time.perf_counter() - t0
    while True:  # detached descendants still running (a sidecar answers just before it exits)
        try:
            _pid, _status, usage = os.wait4(-1, 0)
        except ChildProcessError:
            break
        cpu += usage.ru_utime + usage.ru_stime
        maxrss = max(maxrss, usage.ru_maxrss)
    codes = " ".join(str(statuses[p]) for p in pids)
    sys.stdout.write(f"{wall:.6f} {maxrss} {cpu:.6f} {codes}\n")


if __name__ == "__main__":
    main()
