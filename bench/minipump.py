"""The least any Python wrapper must do: a reference floor for the ``floor`` section.

Usage: ``python -I -S minipump.py [--lit=TEXT]... CMD [ARG]...``

Spawns CMD with its stdout on a 1 MiB pipe, copies every chunk to fd 1 and counts newlines;
with ``--lit`` it also decodes each chunk and counts each literal (what a literal prefilter
for ``--count 'A|B|C'`` costs at the very least).  No click, no history, no per-line work:
if this misses a target, no Python design of jobwrap's hot loop can meet it on this machine.
"""

import os
import sys

CHUNK = 1 << 20


def main() -> None:
    args = sys.argv[1:]
    literals = []
    while args and args[0].startswith("--lit="):
        literals.append(args.pop(0)[len("--lit=") :])
    r, w = os.pipe()
    try:
        import fcntl

        fcntl.fcntl(r, fcntl.F_SETPIPE_SZ, CHUNK)
    except (ImportError, AttributeError, OSError):
        pass
    pid = os.posix_spawnp(args[0], args, os.environ, file_actions=[(os.POSIX_SPAWN_DUP2, w, 1)])
    os.close(w)
    lines = hits = 0  # computed to pay their cost; not printed
    read, write = os.read, os.write
    while data := read(r, CHUNK):
        view = memoryview(data)
        while view:
            view = view[write(1, view) :]
        lines += data.count(b"\n")
        if literals:
            text = data.decode("utf-8", "replace")
            for literal in literals:
                hits += text.count(literal)
    _, status = os.waitpid(pid, 0)
    sys.exit(os.waitstatus_to_exitcode(status))


if __name__ == "__main__":
    main()
