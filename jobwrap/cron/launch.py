"""How ``jobwrap cron`` runs one job line: its argv, environment and stdin, in a session of its own.

Every job line runs through ``jobwrap run`` (the supervisor's own jobwrap, whatever ``PATH``
says), so metas, history and reporting apply exactly as on a crontab line prefixed with
``jobwrap run``:

* ``jobwrap run OPTIONS -- CMD ...`` (first word ``jobwrap`` or a path ending in
  ``/jobwrap``), written as plain words: run as ``jobwrap run OPTIONS -- CMD ...``;
* any other command: ``jobwrap run -- SHELL -c 'COMMAND'``;
* a ``jobwrap run`` line that uses shell syntax (redirections, pipes, ``$VAR``, globs,
  ``;``...): ``SHELL -c 'COMMAND'`` as written, so the shell does what cron's would and the
  ``jobwrap`` on ``PATH`` records it (wrapping it again would record every run twice).

``SHELL`` is the crontab's ``SHELL=`` assignment above the line, else ``/bin/sh``, as in cron
(the supervisor's own ``$SHELL`` does not count, as cron ignores the login shell).

Across a fleet: an ``overlap=skip`` line's ``jobwrap run`` (the first two forms) also gets
``--cron-slot FIRE_TIME/SECONDS``, the slot it was fired for.  With a lock URL set (config,
environment, or the crontab's assignments) that run takes the fleet lock -- its own ``--lock``
name, else the job's -- and claims exactly that slot, so hosts running the same crontab run
each slot once, and not while another host's run of the line still runs.  Without a URL the
option does nothing: ``skip`` stays the supervisor's own, per host.

Each job gets the supervisor's environment without ``NOTIFY_SOCKET``/``WATCHDOG_*`` (and,
for a plain line, without ``JOBWRAP_MONITOR``), with the crontab's assignments above its line
laid over it; its stdin is the line's ``%`` text, or /dev/null.  Its stdout and stderr are the
supervisor's, unchanged.

Each job leads a session of its own (``setsid``): its tree is the processes of that session
among the supervisor's descendants (the supervisor is a subreaper), and Ctrl-C in a terminal
reaches the supervisor only.
"""

from __future__ import annotations

import os
import shlex
import signal
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from jobwrap.config.values import Overlap
from jobwrap.cron import sdnotify
from jobwrap.cron.due import Due
from jobwrap.cron.table import CronJob
from jobwrap.errors import exit_status_of
from jobwrap.process import tree as proctree
from jobwrap.store.fleet import Slot

DEFAULT_SHELL = "/bin/sh"
MONITOR_VARIABLE = "JOBWRAP_MONITOR"
_SHELL_CHARS = frozenset("|&;<>()$`*?[]{}~#")
_SMALL_STDIN = 4096  # a pipe always holds this much: the write cannot block


def job_argv(command: str, jobwrap_argv: Sequence[str], shell: str = DEFAULT_SHELL,
             run_options: Sequence[str] = ()) -> list[str]:
    """The argv that runs a crontab command under ``jobwrap run`` (see the module doc).

    ``shell`` is the crontab's ``SHELL`` for this line (cron's default, ``/bin/sh``);
    ``run_options`` go right after ``run`` (a line's own options come later and win).
    """
    arguments = run_arguments(command)
    if arguments is not None:
        return [*jobwrap_argv, "run", *run_options, *arguments]
    if is_jobwrap_run(command):
        return [shell, "-c", command]
    return [*jobwrap_argv, "run", *run_options, "--", shell, "-c", command]


def slot_options(job: CronJob, due: Due | None) -> list[str]:
    """``--cron-slot`` for a fired ``overlap=skip`` line (the fleet lock, see the module doc)."""
    if due is None or job.overlap != Overlap.SKIP:
        return []  # @reboot is each host's own; allow and replace are per host
    fire, keep = job.schedule.slot_at(due.fire_time)
    return [f"--cron-slot={Slot(fire, keep.total_seconds()).argument()}"]


def run_arguments(command: str) -> list[str] | None:
    """The arguments after ``jobwrap run`` of a plain-words ``jobwrap run`` line, else None."""
    if _uses_shell_syntax(command) or not is_jobwrap_run(command):
        return None
    return shlex.split(command)[2:]


def is_jobwrap_run(command: str) -> bool:
    """Whether the line's first words are ``jobwrap run`` (or ``/path/to/jobwrap run``)."""
    words = command.split(None, 2)
    return len(words) >= 2 and Path(words[0]).name == "jobwrap" and words[1] == "run"


def job_shell(entry_env: Mapping[str, str]) -> str:
    """The shell a line runs under: the crontab's ``SHELL`` above it, else ``/bin/sh`` (cron)."""
    return entry_env.get("SHELL") or DEFAULT_SHELL


def _uses_shell_syntax(text: str) -> bool:
    """True unless ``text`` is plain words that shlex splits exactly as sh would.

    Conservative: a false True only means the line runs through sh as written.
    """
    quote, escaped = None, False
    for char in text:
        if escaped:
            escaped = False
        elif quote == "'":
            quote = None if char == "'" else quote
        elif quote == '"':
            if char in "$`\\":
                return True  # expansions, and sh's own escape rules inside double quotes
            quote = None if char == '"' else quote
        elif char == "\\":
            escaped = True
        elif char in "'\"":
            quote = char
        elif char in _SHELL_CHARS:
            return True
    return quote is not None or escaped  # unbalanced: let the shell report it


def job_environment(
    entry_env: Mapping[str, str], base: Mapping[str, str], *, plain_line: bool = False
) -> dict[str, str]:
    """The supervisor's environment minus the notify variables, with the crontab's on top.

    A plain line (not ``jobwrap run``) does not inherit ``$JOBWRAP_MONITOR`` from the
    supervisor: it records history and reports to no monitor, unless the crontab itself
    assigns ``JOBWRAP_MONITOR`` above it.
    """
    dropped = {*sdnotify.NOTIFY_VARIABLES, *((MONITOR_VARIABLE,) if plain_line else ())}
    env = {k: v for k, v in base.items() if k not in dropped}
    env.update(entry_env)
    return env


class JobProcess:
    """One running instance of a job, leader of its own session (its whole tree is findable)."""

    def __init__(self, job: CronJob, pid: int, started: float) -> None:
        self.job = job
        self.pid = pid
        self.started = started  # monotonic
        self.kill_at: float | None = None  # when SIGTERM was sent: when to escalate
        self.run_id: str | None = None  # the id its jobwrap run records, when we chose it

    @classmethod
    def spawn(
        cls, job: CronJob, argv: Sequence[str], env: Mapping[str, str], started: float
    ) -> JobProcess:
        """Start ``argv`` in a new session; OSError when it cannot be started."""
        stdin = _stdin_fd(job.entry.stdin)
        try:
            pid = os.posix_spawnp(
                argv[0],
                list(argv),
                dict(env),
                file_actions=[(os.POSIX_SPAWN_DUP2, stdin, 0)],
                setsid=True,
                # Python ignores these two; jobs must get the defaults, as from cron.
                setsigdef=(signal.SIGPIPE, signal.SIGXFSZ),
            )
        finally:
            os.close(stdin)
        return cls(job, pid, started)

    def terminate(self, kill_at: float) -> None:
        """SIGTERM the job's whole session and remember when to escalate.

        Its ``jobwrap run`` records the run as killed by SIGTERM; its command's descendants
        get the signal too, as with ``jobwrap run --timeout``, so none is left running with
        the output pipe open (which would hold ``jobwrap run`` in its drain grace).
        """
        if self.kill_at is None:
            self.kill_at = kill_at
            proctree.signal_tree(self.pid, signal.SIGTERM, session=self.pid)

    def kill(self) -> None:
        """SIGKILL every process of the job's session (jobwrap, command, descendants)."""
        self.kill_at = None
        proctree.signal_tree(self.pid, signal.SIGKILL, session=self.pid)


def exit_fields(status: int) -> dict[str, object]:
    """``exit_status`` (128+N for signal N, as jobwrap run) and ``signal`` from a wait status."""
    code, signame = exit_status_of(status)
    return {"exit_status": code} if signame is None else {"exit_status": code, "signal": signame}


def _stdin_fd(text: str | None) -> int:
    """A descriptor to give the job as stdin: the ``%`` text, or /dev/null (as cron)."""
    if text is None:
        return os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    data = text.encode("utf-8", "surrogateescape")
    if len(data) <= _SMALL_STDIN:
        read_end, write_end = os.pipe()
        os.write(write_end, data)
        os.close(write_end)
        return read_end
    with tempfile.TemporaryFile() as spool:  # too big for a pipe we cannot keep feeding
        spool.write(data)
        spool.flush()
        os.lseek(spool.fileno(), 0, os.SEEK_SET)
        return os.dup(spool.fileno())
