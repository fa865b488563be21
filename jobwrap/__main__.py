"""``python -m jobwrap``: the same entry point as the console script."""

from jobwrap.cli import main

main()
