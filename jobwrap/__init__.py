"""jobwrap: supervise a command faithfully, remember every run, report it to Idlemon."""

__version__ = "0.1.0"
