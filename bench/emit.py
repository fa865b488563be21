"""GEN for the benchmark: SIZE bytes of BLOCKFILE (repeated, cut at SIZE) in PIECE-byte writes.

Usage: ``python -I -S emit.py BLOCKFILE SIZE PIECE``

This is how a program that prints its log through a buffered stdout feeds a pipe: many small
``write(2)`` calls (8 KiB is the ``io`` default buffer).  The bytes are exactly those of the
log file written by loggen.write_log, so the analysis check holds for either generator.
"""

import os
import sys


def main() -> None:
    path, size, piece = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    with open(path, "rb") as f:
        block = memoryview(f.read())
    write, left = os.write, size
    while left > 0:
        for start in range(0, min(len(block), left), piece):
            view = block[start : min(start + piece, left)]
            while view:
                view = view[write(1, view) :]
        left -= min(len(block), left)


if __name__ == "__main__":
    main()
