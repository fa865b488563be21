"""The command line: options → settings → one core call → exit status.

Only this module imports click and only :func:`main` exits.  Heavier modules are imported
inside the commands that need them, so ``jobwrap run`` starts fast.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from jobwrap import __version__
from jobwrap.errors import ExitStatus, JobwrapError

if TYPE_CHECKING:
    from jobwrap.config.settings import Settings

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


class Duration(click.ParamType):
    name = "DURATION"

    def convert(self, value, param, ctx):
        from jobwrap.config.values import parse_duration

        try:
            return parse_duration(value, f"--{param.name.replace('_', '-')}" if param else "")
        except JobwrapError as exc:
            self.fail(str(exc), param, ctx)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-V", "--version", prog_name="jobwrap")
def cli() -> None:
    """Supervise cron jobs faithfully, remember every run, report it to Idlemon.

    \b
    Examples:
      jobwrap run -- echo hello
      jobwrap run --monitor backup --timeout 30m -- /usr/local/bin/backup.sh
      jobwrap history
      jobwrap show
    """


@cli.command(
    help=RUN_HELP,
    context_settings={"allow_interspersed_args": False},
    short_help="Run a command under supervision and record the run.",
)
@click.option("-m", "--monitor", metavar="SLUG", help="Idlemon monitor slug [env JOBWRAP_MONITOR].")
@click.option("--timeout", type=Duration(), help="Stop the whole process tree after this long.")
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
    help="Which runs send an Idlemon log: success (default), always, never.",
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
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def run(command, metas, counts, summary_json, dry_run, cron_slot, **flags) -> int:
    from jobwrap.run.job import build_run_settings, run_job

    settings = _resolve(flags)
    run_settings = build_run_settings(settings, tuple(command), metas, counts, summary_json,
                                      dry_run, cron_slot)
    return run_job(run_settings)


def _resolve(flags: dict) -> Settings:
    """Settings with flags applied; config warnings (e.g. a readable token file) on stderr."""
    from jobwrap.config.settings import resolve

    settings = resolve({k: v for k, v in flags.items() if v is not None})
    for warning in settings.warnings:
        click.echo(f"jobwrap: warning: {warning}", err=True)
    return settings


class Since(click.ParamType):
    """``--since``: a duration back from now (``2h``, ``1d``) or a date/time (local zone)."""

    name = "DURATION|DATE"

    def convert(self, value, param, ctx):
        from jobwrap.config.values import parse_since

        try:
            return parse_since(value)
        except JobwrapError as exc:
            self.fail(str(exc), param, ctx)


@cli.command()
@click.option("-m", "--monitor", metavar="SLUG", help="Only this monitor's runs.")
@click.option("-n", "--limit", type=click.IntRange(min=1, max=10**9, clamp=True), default=20,
              show_default=True, help="Show at most this many runs.")
@click.option("--failed", is_flag=True,
              help="Only runs that failed (exit status, timeout, signal) or were abandoned.")
@click.option("--since", type=Since(), metavar="DURATION|DATE",
              help="Only runs started since then: 36h, 7d, 2024-06-01 or 2024-06-01T02:00.")
@click.option("--json", "as_json", is_flag=True, help="A JSON array, for scripts.")
def history(monitor, limit, failed, since, as_json) -> int:
    """Show recent runs, newest first."""
    from jobwrap.views.history import history_json, history_table

    with _history() as store:
        records = store.recent(monitor=monitor, limit=limit, failed=failed, since=since)
    spark = _color() if monitor and sys.stdout.isatty() else None
    click.echo(history_json(records) if as_json else history_table(records, spark=spark),
               nl=False)
    return ExitStatus.OK


@cli.command()
@click.argument("run_id", required=False)
@click.option("-m", "--monitor", metavar="SLUG", help="This monitor's last run.")
@click.option("--json", "as_json", is_flag=True, help="The record as JSON, output included.")
def show(run_id, monitor, as_json) -> int:
    """Everything about one run (default: the last), with its output's head and tail.

    RUN_ID may be any unambiguous prefix of the id (the 8 characters `history` shows).
    """
    from jobwrap.errors import StateError
    from jobwrap.views.history import run_details, run_json

    if run_id and monitor:
        raise click.UsageError("give a RUN_ID or --monitor SLUG, not both")
    with _history() as store:
        record = store.get(run_id, monitor=monitor)
    if record is None:
        if monitor:
            raise StateError(f"no run of monitor {monitor!r} in the history")
        raise StateError(f"no run {run_id!r} in the history" if run_id else "no runs recorded yet")
    click.echo(run_json(record) if as_json else run_details(record, escape=sys.stdout.isatty()),
               nl=False)
    return ExitStatus.OK


@cli.command("config")
@click.option("-m", "--monitor", metavar="SLUG", help="Show the settings this monitor's runs get.")
@click.option("--json", "as_json", is_flag=True, help="As JSON, for scripts.")
def config_cmd(monitor, as_json) -> int:
    """Show the effective settings and where each came from (tokens masked).

    \b
    Precedence: flag > environment > user file > system file > default;
    in the files, [monitors.SLUG] beats the general sections.
    """
    from jobwrap.config.settings import describe_all
    from jobwrap.views.config import config_json, config_table

    view = describe_all(_resolve({"monitor": monitor}))
    click.echo(config_json(view) if as_json else config_table(view), nl=False)
    return ExitStatus.OK


@cli.command()
@click.option("--project", metavar="ID", help="Idlemon project id [env JOBWRAP_IDLEMON_PROJECT].")
@click.option("--json", "as_json", is_flag=True, help="As JSON, for scripts.")
@click.option("--watch", is_flag=True, help="Refresh the view in place until Ctrl-C.")
@click.option("--every", type=Duration(), default="5s", show_default=True,
              help="With --watch: how often to refresh.")
@click.option("--watch-count", type=click.IntRange(min=1), hidden=True)  # tests: N refreshes
def status(project, as_json, watch, every, watch_count) -> int:
    """The project's monitors at a glance: idle or not, last runs, pending reports.

    \b
    Example:
      jobwrap status --project 9934826a-adb5-11ea-a64d-0242ac130004
      jobwrap status --watch     # refreshed every 5 s until Ctrl-C
    """
    from jobwrap.status import gather
    from jobwrap.views.status import status_json, status_text

    settings = _resolve({"idlemon_project": project})
    if watch:
        if as_json:
            raise click.UsageError("--watch shows the view for people: not with --json")
        return _watch(lambda: status_text(gather(settings), color=_color()), every,
                      watch_count)
    report = gather(settings)
    click.echo(status_json(report) if as_json else status_text(report, color=_color()),
               nl=False)
    return ExitStatus.FAILURE if report.problems else ExitStatus.OK


def _color() -> bool | None:
    """Pictures for a terminal: True (colour), False (plain text: a pipe, a file, NO_COLOR)."""
    import os

    return sys.stdout.isatty() and not os.environ.get("NO_COLOR")


def _watch(frame, every: float, count: int | None) -> int:
    """Show ``frame()`` every ``every`` seconds, in place on a terminal, until Ctrl-C."""
    import time
    from datetime import datetime

    from jobwrap.views.status import watch_frame

    in_place = sys.stdout.isatty()
    shown = 0
    try:
        while True:
            text = frame()
            click.echo(watch_frame(text, every, datetime.now().astimezone(), in_place), nl=False)
            shown += 1
            if count is not None and shown >= count:
                return ExitStatus.OK
            time.sleep(every)
    except KeyboardInterrupt:
        click.echo("")
        return ExitStatus.OK


@cli.command()
@click.option("-m", "--monitor", metavar="SLUG", help="Only this monitor's reports.")
@click.option("--budget", type=Duration(), default="5m", help="Give up after this long (5m).")
@click.option("--force", is_flag=True,
              help="Also send reports held back because their monitor's latest run failed.")
@click.option("--discard-refused", is_flag=True,
              help="Send nothing; give up on the refused reports (of --monitor SLUG).")
@click.option("--discard", "discard_id", metavar="RUN_ID",
              help="Send nothing; give up on this run's pending or refused report.")
def flush(monitor, budget, force, discard_refused, discard_id) -> int:
    """Deliver reports an outage held back (and retry refused ones), oldest first.

    Exits 0 when nothing is left to deliver, 1 otherwise.  --discard-refused and
    --discard RUN_ID (a prefix will do) drop reports instead; their runs stay in the history.
    """
    from jobwrap.errors import UsageError
    from jobwrap.idlemon.flush import discard, flush_backlog
    from jobwrap.views.flush import flush_text

    if discard_refused or discard_id:
        if discard_refused and discard_id:
            raise UsageError("--discard-refused and --discard RUN_ID: choose one")
        summary = discard(_resolve({}), run_id=discard_id, monitor=monitor)
        click.echo(flush_text(summary), nl=False)
        return ExitStatus.OK
    summary = flush_backlog(_resolve({}), monitor=monitor, budget_s=budget, force=force)
    click.echo(flush_text(summary), nl=False)
    return ExitStatus.FAILURE if summary.left else ExitStatus.OK


@cli.command()
@click.option("--project", metavar="ID", help="Idlemon project id [env JOBWRAP_IDLEMON_PROJECT].")
def doctor(project) -> int:
    """Check config, token, project, monitors, state dir and pending reports.

    Prints one line per finding, what is wrong first, each with its fix; exits 1 if anything
    is wrong (a `note` is not).
    """
    from jobwrap.doctor import diagnose, worst
    from jobwrap.views.doctor import doctor_text

    findings = diagnose(_resolve({"idlemon_project": project}))
    click.echo(doctor_text(findings), nl=False)
    return worst(findings)


@cli.command("next")
@click.argument("expression", metavar="'CRON'")
@click.option("-n", "count", type=click.IntRange(1, 1000), default=5, show_default=True,
              help="How many fire times.")
@click.option("--tz", metavar="ZONE", help="Time zone (default: local; or CRON_TZ=… prefix).")
@click.option("--from", "start", metavar="ISO8601",
              help="Start from this time instead of now (e.g. 2024-03-31T01:00; "
                   "without an offset: in the schedule's zone).")
def next_cmd(expression, count, tz, start) -> int:
    """Print the next fire times of a cron expression (handy when writing crontabs).

    \b
    Examples:
      jobwrap next '*/15 9-17 * * 1-5'
      jobwrap next 'CRON_TZ=Europe/Paris 30 2 * * *' --from 2024-03-30T12:00 -n 3
    """
    from jobwrap.schedule import parse_schedule, parse_start

    schedule = parse_schedule(expression, tz)
    for moment in schedule.next_times(count, parse_start(start, schedule) if start else None):
        click.echo(f"{moment.isoformat(sep=' ')} {moment:%a}")
    return ExitStatus.OK


@cli.command("cron")
@click.argument("crontab", type=click.Path(dir_okay=False, allow_dash=True, path_type=Path))
@click.option("--check", "check_only", is_flag=True,
              help="Validate the file and print each job's next run; exit 0 or 1.")
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text",
              show_default=True, help="One line per event: logfmt text or JSON.")
@click.option("--grace", type=Duration(), help="On SIGTERM, wait this long for running jobs (30s).")
def cron(crontab, check_only, log_format, grace) -> int:
    """Run a crontab in the foreground (containers, systemd), every line through `jobwrap run`.

    CRONTAB `-` reads the crontab from stdin.

    \b
    Examples:
      jobwrap cron /etc/jobwrap/crontab
      jobwrap cron --check /etc/jobwrap/crontab
    """
    from jobwrap.cron.supervisor import DEFAULT_GRACE_S, run_cron

    return run_cron(crontab, check_only=check_only, log_format=log_format,
                    grace_s=DEFAULT_GRACE_S if grace is None else grace,
                    validate_run=_run_line_problem)


def _run_line_problem(arguments, env) -> str | None:
    """Why a crontab's `jobwrap run ARGUMENTS` line would fail at every fire, or None.

    The real `run` parser and settings, with the line's environment; nothing runs.
    """
    from jobwrap.config.settings import resolve
    from jobwrap.run.job import build_run_settings

    try:
        ctx = run.make_context("run", list(arguments), resilient_parsing=False)
        params = dict(ctx.params)
        command, metas, counts = params.pop("command"), params.pop("metas"), params.pop("counts")
        summary_json, dry_run = params.pop("summary_json"), params.pop("dry_run")
        cron_slot = params.pop("cron_slot")
        resolved = resolve({k: v for k, v in params.items() if v is not None}, env)
        build_run_settings(resolved, tuple(command), metas, counts, summary_json, dry_run,
                           cron_slot)
    except click.exceptions.Exit:
        return "--help or --version is not a job"
    except click.ClickException as exc:
        return exc.format_message()
    except JobwrapError as exc:
        return str(exc)
    return None


class _history:
    """Open the history for a read command (no settings needed beyond the state dir)."""

    def __enter__(self):
        from jobwrap.config.settings import resolve
        from jobwrap.store.history import open_history

        self.store = open_history(resolve({}).state_dir)
        return self.store

    def __exit__(self, *exc) -> None:
        for run_id, problem in self.store.bad_rows:  # skipped, never fatal: say which
            click.echo(f"jobwrap: warning: skipped malformed run {run_id[:8]}: {problem}",
                       err=True)
        self.store.close()


def main(argv: list[str] | None = None) -> None:
    """Entry point: map every outcome to one exit status and at most one line on stderr."""
    sys.exit(_main(argv))


def _main(argv: list[str] | None) -> int:
    try:
        status = cli.main(args=argv, prog_name="jobwrap", standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as exc:
        click.echo(exc.ctx.get_help() if exc.ctx else str(exc), err=True)
        return ExitStatus.USAGE
    except click.UsageError as exc:
        hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx else ""
        click.echo(f"jobwrap: {exc.format_message()}{hint}", err=True)
        return ExitStatus.USAGE
    except click.ClickException as exc:
        click.echo(f"jobwrap: {exc.format_message()}", err=True)
        return exc.exit_code
    except click.Abort:
        click.echo("jobwrap: aborted", err=True)
        return ExitStatus.SIGNAL_BASE + 2
    except JobwrapError as exc:
        click.echo(f"jobwrap: {exc}", err=True)
        return int(exc.exit_status)
    except BrokenPipeError:
        return ExitStatus.OK  # `jobwrap history | head`: the reader has all it wanted
    except Exception as exc:  # a bug: one line, no traceback, and never the exception's text,
        # which could quote a secret (run has already contained everything after its child)
        click.echo(f"jobwrap: internal error ({type(exc).__name__}); please report it", err=True)
        return ExitStatus.INTERNAL
    return int(status) if isinstance(status, int) else ExitStatus.OK
