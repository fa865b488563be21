"""``python -m jobwrap``: the same entry point as the console script."""

from jobwrap.cli.main import main

main()
