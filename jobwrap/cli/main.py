"""The command line: options → settings → one core call → exit status.

The group and the commands that read (history, show, config, status, flush, doctor, next, cron);
``run`` has its own module.  Only ``jobwrap.cli`` imports click and only :func:`main` exits.
Heavier modules are imported inside the commands that need them, so ``jobwrap run`` starts fast.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from jobwrap import __version__
from jobwrap.cli.params import Duration, Since, resolve_flags
from jobwrap.cli.run import run, run_line_problem
from jobwrap.errors import ExitStatus, JobwrapError


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


cli.add_command(run)


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
    from jobwrap.config.view import describe_all
    from jobwrap.views.config import config_json, config_table

    view = describe_all(resolve_flags({"monitor": monitor}))
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

    settings = resolve_flags({"idlemon_project": project})
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
        summary = discard(resolve_flags({}), run_id=discard_id, monitor=monitor)
        click.echo(flush_text(summary), nl=False)
        return ExitStatus.OK
    summary = flush_backlog(resolve_flags({}), monitor=monitor, budget_s=budget, force=force)
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

    findings = diagnose(resolve_flags({"idlemon_project": project}))
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
                    validate_run=run_line_problem)


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
