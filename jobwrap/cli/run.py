"""``jobwrap run``: its options, its help (with the exit-status table), and the check
``jobwrap cron`` makes of each crontab line that calls it."""

from __future__ import annotations

from pathlib import Path

import click

from jobwrap.cli.params import Duration, resolve_flags
from jobwrap.errors import JobwrapError

EXIT_STATUS_HELP = """\b
Exit status of `jobwrap run`:
  N      the command's own exit code
  128+N  the command was killed by signal N (143 = SIGTERM)
  124    the command hit --timeout
  127    the command was not found
  126    the command could not be executed
  1      the command succeeded but its output could not be written (full disk...)
  75     the run was skipped (--lock held, --require-up found the dependency down)
  2      jobwrap's own usage or configuration error (the command did not start)"""

RUN_HELP = f"""Run COMMAND, pass its output through unchanged, and record the run.

The command runs directly (no shell: write `-- sh -c '...'` for one), with stdin and the
environment inherited.  Its stdout and stderr are copied byte for byte; lines are counted and
--meta/--count patterns are matched as the output streams by.

\b
Examples:
  jobwrap run -- echo hello
  jobwrap run --monitor backup --timeout 30m \\
      --meta rows='processed (\\d+) rows' --count errors='ERROR|FATAL' \\
      -- /usr/local/bin/backup.sh

--meta NAME=REGEX takes the first capture group (or the whole match) of the last output line
that matches; --count NAME=REGEX counts matching lines.  Patterns apply per line (^ and $
anchor at line boundaries) and see at least the first 64 KiB of each line.

{EXIT_STATUS_HELP}
"""


# Options whose value is optional take it only attached (`--lock=NAME`): a bare `--lock` never
# swallows the command's first word (`jobwrap run --lock backup.sh` runs backup.sh).
ATTACHED_ONLY = {"--lock": "", "--require-up": "on"}


class RunCommand(click.Command):
    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, attach_optional_values(args, self.params))


def attach_optional_values(args: list[str], params: list[click.Parameter]) -> list[str]:
    """``args`` with each bare ATTACHED_ONLY option given its value, up to the command."""
    takes_value = {opt for p in params if isinstance(p, click.Option)
                   and not p.is_flag and not p.count and p.opts[0] not in ATTACHED_ONLY
                   for opt in p.opts}
    out: list[str] = []
    rest = iter(args)
    for arg in rest:
        if arg == "--" or arg == "-" or not arg.startswith("-"):
            return [*out, arg, *rest]  # the command and its own arguments, untouched
        if arg in ATTACHED_ONLY:
            arg = f"{arg}={ATTACHED_ONLY[arg]}"
        out.append(arg)
        if arg in takes_value:  # its value is the next word (not `--opt=value`, not `-mX`)
            value = next(rest, None)
            if value is not None:
                out.append(value)
    return out


@click.command(
    cls=RunCommand,
    help=RUN_HELP,
    context_settings={"allow_interspersed_args": False},
    short_help="Run a command under supervision and record the run.",
)
@click.option("-m", "--monitor", metavar="SLUG", help="Idlemon monitor slug [env JOBWRAP_MONITOR].")
@click.option("--timeout", type=Duration(off=True),
              help="Stop the whole process tree after this long (0: no timeout, even if "
                   "configured).")
@click.option(
    "--kill-after", type=Duration(),
    help="After a SIGTERM (timeout or a stop signal), SIGKILL after this (10s).",
)
@click.option("--meta", "metas", multiple=True, metavar="NAME=REGEX", help="Extract a meta value.")
@click.option("--count", "counts", multiple=True, metavar="NAME=REGEX", help="Count lines.")
@click.option(
    "--capture/--no-capture",
    default=None,
    help="Keep the output's head and tail in the history (default) or not (secret output).",
)
@click.option("--schedule", metavar="CRON",
              help="The job's cron schedule: validated, stored with the run, checked by doctor.")
@click.option("--lock", is_flag=False, flag_value="", default=None, metavar="[=NAME]",
              help="Skip this run while a previous run of the job (or NAME) still runs.")
@click.option("--lock-wait", type=Duration(),
              help="With --lock: wait this long for the previous run before skipping.")
@click.option("--lock-url", metavar="URL",
              help="Share --lock across hosts in this Redis (redis://HOST[:PORT][/DB]) "
                   "[env JOBWRAP_LOCK_URL].")
@click.option("--lock-lease", type=Duration(),
              help="With --lock-url: the lease, renewed while the job runs (30s).")
@click.option("--lock-unavailable", type=click.Choice(["skip", "run"]),
              help="With --lock-url, when Redis cannot be asked: skip the run (default) or "
                   "run it unlocked.")
@click.option(
    "--report",
    type=click.Choice(["success", "always", "never"]),
    metavar="POLICY",
    help="Which runs send an Idlemon log: success (the default), always or never.",
)
@click.option(
    "--report-timeout", type=Duration(), help="Total time reporting may take after the run (30s)."
)
@click.option("--dry-run", is_flag=True, help="Print the Idlemon request instead of sending it.")
@click.option("--promonitor", metavar="ID",
              help="ProMonitor monitor of the service this job depends on (cross-check).")
@click.option("--require-up", is_flag=False, flag_value="on", default=None, metavar="[=strict]",
              help="Don't start the job while its --promonitor dependency is down "
                   "(strict: nor when ProMonitor cannot be asked).")
@click.option("--skipped-exit", type=click.IntRange(0, 255), metavar="N",
              help="Exit status of a run that was skipped (default 75, EX_TEMPFAIL).")
@click.option("--keep-secrets-env/--no-keep-secrets-env", default=None,
              help="Let the command see jobwrap's tokens in its environment (removed by "
                   "default; for a job that itself calls jobwrap).")
@click.option("--output", type=click.Choice(["live", "on-failure"]),
              help="live (default), or on-failure: hold the output, show it only if the run "
                   "fails (cron mails only failures).")
@click.option("--on-failure", metavar="CMD",
              help="After a failed run, run CMD with /bin/sh (the run's facts in JOBWRAP_*).")
@click.option("--on-success", metavar="CMD", help="After a successful run, run CMD likewise.")
@click.option("--hook-timeout", type=Duration(),
              help="Kill a hook and its processes after this long (60s).")
@click.option("--metrics-dir", type=click.Path(file_okay=False, path_type=Path), metavar="DIR",
              help="Write Prometheus textfile metrics there [env JOBWRAP_METRICS_DIR].")
@click.option(
    "--summary-json",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the run's record as JSON to this file.",
)
# Internal: the schedule slot `jobwrap cron` fired an overlap=skip line for (FIRE/SECONDS);
# with a lock URL the run takes the fleet lock and claims exactly that slot (cron/launch.py).
@click.option("--cron-slot", hidden=True)
# Internal: the run id `jobwrap cron` chose, so its start and exit events name the run.
@click.option("--run-id", hidden=True)
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def run(command, metas, counts, summary_json, dry_run, cron_slot, run_id, **flags) -> int:
    from jobwrap.run.job import run_job
    from jobwrap.run.options import build_run_settings

    settings = resolve_flags(flags)
    run_settings = build_run_settings(settings, tuple(command), metas, counts, summary_json,
                                      dry_run, cron_slot, run_id)
    return run_job(run_settings)


def run_line_problem(arguments, env) -> str | None:
    """Why a crontab's `jobwrap run ARGUMENTS` line would fail at every fire, or None.

    The real `run` parser and settings, with the line's environment; nothing runs.
    """
    from jobwrap.config.settings import resolve
    from jobwrap.run.options import build_run_settings

    try:
        ctx = run.make_context("run", list(arguments), resilient_parsing=False)
        params = dict(ctx.params)
        command, metas, counts = params.pop("command"), params.pop("metas"), params.pop("counts")
        summary_json, dry_run = params.pop("summary_json"), params.pop("dry_run")
        cron_slot, run_id = params.pop("cron_slot"), params.pop("run_id")
        resolved = resolve({k: v for k, v in params.items() if v is not None}, env)
        build_run_settings(resolved, tuple(command), metas, counts, summary_json, dry_run,
                           cron_slot, run_id)
    except click.exceptions.Exit:
        return "--help or --version is not a job"
    except click.ClickException as exc:
        return exc.format_message()
    except JobwrapError as exc:
        return str(exc)
    return None
