"""python -m workflows status | reset | crontab | luigid | publish | migrate:
inspect the days, remove targets so the next run redoes a step, print the
crontab, start luigid, write a snapshot from the SOT ClickHouse, rebuild the
replaced system's tables."""
import argparse
import datetime as dt
import logging
import os
import select
import signal
import sys
from collections.abc import Callable
from typing import Any

import luigi.cmdline
import luigi.configuration
import redis
from clickhouse_driver.errors import Error as ClickHouseError

from . import clickhouse, grid, metrics, migrate, scheduler
from .clients import clickhouse_client, failed_server
from .config import ConfigError, Settings, check_network, known_network
from .crontab import crontab
from .errors import one_line
from .pipeline import failures
from .pipeline.base import IngestionTask
from .pipeline.daily import STEPS, day_tasks, step_tasks
from .pipeline.params import yesterday
from .publish import publish
from .schema import TABLES
from .slices import Slice
from .sources import NotPublished, SourceUnavailable
from .state import last_failure_key, republished_labels_key
from .status import STATUS_LEGEND, day_grid, last_complete_days, print_status


def day_range(first: dt.date, last: dt.date) -> list[dt.date]:
    if last < first:
        raise ConfigError(f"--to {last} is before --from {first}")
    return [first + dt.timedelta(days=n) for n in range((last - first).days + 1)]


def reset(settings: Settings, day: Slice, step: str, table: str | None = None) -> list[IngestionTask]:
    """Removes the targets of `step` and of every step after it (for `load`
    with a table: that table's marker and the cleanup marker). Returns the
    tasks whose target was there; creates nothing."""
    steps = STEPS[STEPS.index(step):]
    # nothing was ever loaded where the database is not there, and a typo must not create one
    loads_to_reset = "load" in steps and clickhouse.database_exists(clickhouse_client(settings),
                                                                    settings.database_for(day.network))
    removed = []
    for later in steps:
        for task in step_tasks(later, day, table if later == "load" else None):
            failures.attempts(task).clear()  # the next failure is attempt 1 again
            if later == "load" and not loads_to_reset:
                continue
            if task.remove_output():
                removed.append(task)
    if removed:  # the day's last failure and labels note are of the runs before; status shows the new ones
        removed[0].redis.delete(last_failure_key(day), republished_labels_key(day))
    return removed


def publish_day(settings: Settings, day: Slice, to_url: str) -> int:
    try:
        snapshot, labels = publish(settings, day, to_url)
    except NotPublished as exc:
        print(f"{day}: nothing to publish: {exc}", file=sys.stderr)
        return 1
    except SourceUnavailable as exc:
        print(f"{day}: {exc}", file=sys.stderr)
        return 1
    print(f"published {day} (window {day.window_days} days) to {snapshot}, its labels to {labels}")
    return 0


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD)") from None


def _days(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of days") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is outside 1..65535")
    return value


def network_of_command(name: str, settings: Settings, args: argparse.Namespace) -> str:
    """A configured network, or with the command's --force any well-formed name."""
    return check_network(name) if args.force else known_network(name, settings, "; --force to use it anyway")


def command_line() -> argparse.ArgumentParser:
    """The parser of `python -m workflows`."""
    parser = argparse.ArgumentParser(prog="python -m workflows", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    network_help = "a network of INGESTION_NETWORKS (others need --force)"
    window_help = "the snapshot's window in days (default INGESTION_WINDOW_DAYS)"
    force_help = "accept a network that INGESTION_NETWORKS does not list"

    show = commands.add_parser("status", help="network x step, done or not, rows loaded per table, last failure",
                               description=print_status.__doc__, epilog=STATUS_LEGEND,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
    show.add_argument("--date", type=_date, action="append", metavar="YYYY-MM-DD",
                      help="a day to show (repeat for several; default yesterday, UTC)")
    show.add_argument("--from", dest="first", type=_date, metavar="YYYY-MM-DD",
                      help="first day of a range (with --to, default yesterday)")
    show.add_argument("--to", dest="last", type=_date, metavar="YYYY-MM-DD", help="last day of the range")
    show.add_argument("--network", action="append", help=network_help + "; repeat for several (default all)")
    show.add_argument("--window-days", type=_days, help=window_help)
    show.add_argument("--force", action="store_true", help=force_help)
    show.add_argument("--grid", action="store_true", help="networks x days, one symbol per day, and a legend"
                                                            " (default range: the 31 days up to yesterday)")
    show.add_argument("--html", metavar="FILE", help="the same grid as one self-contained HTML page")

    fresh = commands.add_parser("check", help="exit 1, one line per network, when a network's newest complete day"
                                              " is older than --max-age hours", description=check_command.__doc__)
    fresh.add_argument("--max-age", type=float, required=True, metavar="HOURS",
                       help="hours since the end of the newest complete day")
    fresh.add_argument("--window-days", type=_days, help=window_help)

    undo = commands.add_parser("reset", help="delete targets so the next run redoes that step and what follows",
                               description=reset.__doc__)
    undo.add_argument("--date", type=_date, required=True, metavar="YYYY-MM-DD", help="the day to reset")
    undo.add_argument("--network", required=True, help=network_help)
    undo.add_argument("--step", choices=STEPS, help="the first step to redo (default download, or load with --table)")
    undo.add_argument("--table", choices=TABLES, help="with --step load: only this table's load (and cleanup)")
    undo.add_argument("--window-days", type=_days, help=window_help)
    undo.add_argument("--force", action="store_true", help=force_help)

    cron = commands.add_parser("crontab", help="print the crontab for INGESTION_NETWORKS")
    cron.add_argument("--workdir", default="/app", help="the directory the jobs run in, with its .env (default /app)")
    cron.add_argument("--luigi", default="/usr/local/bin/luigi",
                      help="the luigi command (default /usr/local/bin/luigi)")
    cron.add_argument("--log-dir", default="/var/log/sot-ingestion",
                      help="one log file per network goes here (default /var/log/sot-ingestion)")
    commands.add_parser("luigid", help="start luigid (arguments after it go to luigid; --state-path and --logdir"
                                       " default to ~/.local/state/sot-ingestion)")
    out = commands.add_parser("publish", help="the SOT side: write a day of the SOT ClickHouse (SOT_HOST,"
                                              " SOT_DATABASE, ...) as a snapshot, files first, META.json last")
    out.add_argument("--date", type=_date, required=True, metavar="YYYY-MM-DD", help="the day to publish")
    out.add_argument("--network", required=True, help=network_help)
    out.add_argument("--to", required=True, metavar="URL", help="a folder, file:///folder or s3://bucket/prefix")
    out.add_argument("--window-days", type=_days, help=window_help)
    out.add_argument("--force", action="store_true", help=force_help)
    move = commands.add_parser("migrate", help="rebuild a network's tables made by the system this pipeline replaces"
                                               " in the pipeline's layout, every row kept",
                               description=migrate.migrate.__doc__)
    move.add_argument("--network", required=True, help=network_help)
    move.add_argument("--dry-run", action="store_true", help="say what it would do, change nothing")
    move.add_argument("--force", action="store_true", help=force_help)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["luigid"]:  # with the package's scheduler policy and INGESTION_RETRY_DELAY (workflows.pipeline)
        return luigid(argv[1:])
    parser = command_line()
    args = parser.parse_args(argv)
    # the command says in one line which server failed; the driver's own line per failed connect is noise here
    logging.getLogger("clickhouse_driver.connection").setLevel(logging.CRITICAL)
    settings = None
    try:
        settings = Settings.from_env()
        code = COMMANDS[args.command](args, settings, parser)
        sys.stdout.flush()  # a reader that has gone shows here, not in a complaint at exit
        return code
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    except (redis.RedisError, ClickHouseError, OSError) as exc:  # a server down, a table dropped by hand, ...
        if isinstance(exc, BrokenPipeError) and reader_gone(sys.stdout):
            # `status --grid | head`: the reader has what it wanted; quiet, as a tool that SIGPIPE ended
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nor a complaint at exit's flush
            return 128 + signal.SIGPIPE
        print(f"{args.command}: {failed_server(settings, exc) if settings else one_line(exc)}", file=sys.stderr)
        return 1


def reader_gone(stream: Any) -> bool:
    """The stream is a pipe whose reading end is closed (POLLERR)."""
    poller = select.poll()
    poller.register(stream.fileno(), select.POLLOUT)
    return any(events & select.POLLERR for _, events in poller.poll(0))


def status_command(args: argparse.Namespace, settings: Settings, parser: argparse.ArgumentParser) -> int:
    networks = [network_of_command(n, settings, args) for n in args.network] if args.network \
        else settings.networks
    if args.date and (args.first or args.last):
        parser.error("--date goes without --from/--to")
    last = args.last or yesterday()
    # the grid's default: the month up to yesterday; the table's: yesterday
    first = args.first or (last - dt.timedelta(days=GRID_DAYS - 1) if args.grid or args.html else last)
    dates = args.date or day_range(first, last)
    window_days = args.window_days or settings.window_days
    days = [Slice(network, date, window_days) for network in networks for date in dates]
    if not (args.grid or args.html):
        print_status(settings, days)
        return 0
    cells = day_grid(settings, days)
    if args.html:
        title = f"SOT ingestion: {dates[0]} to {dates[-1]} (window {window_days} days)"
        with open(args.html, "w") as page:
            page.write(grid.html_grid(list(networks), dates, cells, title))
    if args.grid:
        print(grid.text_grid(list(networks), dates, cells))
    return 0


def check_command(args: argparse.Namespace, settings: Settings, parser: argparse.ArgumentParser) -> int:
    """A freshness alert that fires even when cron stopped running: one line
    per network whose newest complete day is older than --max-age hours."""
    if args.max_age <= 0:
        parser.error("--max-age is a number of hours above 0")
    last = last_complete_days(settings, settings.networks, args.window_days or settings.window_days)
    stale = metrics.stale_networks(last, dt.datetime.now(dt.timezone.utc), args.max_age)
    for line in stale:
        print(line)
    if not stale:
        print("fresh: " + ", ".join(f"{network} {day}" for network, day in last.items()))
    return STALE if stale else 0


def reset_command(args: argparse.Namespace, settings: Settings, parser: argparse.ArgumentParser) -> int:
    if args.table and args.step not in (None, "load"):
        parser.error("--table goes with --step load")
    day = Slice(network_of_command(args.network, settings, args), args.date,
                args.window_days or settings.window_days)
    step = args.step or ("load" if args.table else "download")
    removed = reset(settings, day, step, args.table)
    for task in removed:
        print(f"removed {task.output()}")
    if not removed:
        print(f"nothing to remove: no target of {day} from step {step} on")
    try:
        for enabled in scheduler.re_enable(day_tasks(day)):
            print(f"re-enabled in luigid: {enabled}")
    except OSError as exc:
        print(f"luigid at {scheduler.shown_url()} did not answer ({exc}); nothing re-enabled there",
              file=sys.stderr)
    return 0


def crontab_command(args: argparse.Namespace, settings: Settings, parser: argparse.ArgumentParser) -> int:
    sys.stdout.write(crontab(settings.networks, args.workdir, args.luigi, args.log_dir))
    return 0


def publish_command(args: argparse.Namespace, settings: Settings, parser: argparse.ArgumentParser) -> int:
    day = Slice(network_of_command(args.network, settings, args), args.date,
                args.window_days or settings.window_days)
    return publish_day(settings, day, args.to)


def migrate_command(args: argparse.Namespace, settings: Settings, parser: argparse.ArgumentParser) -> int:
    network = network_of_command(args.network, settings, args)
    if args.dry_run:
        return migration(settings, network, migrate.dry_run, "would rebuild")
    return migration(settings, network, migrate.migrate, "rebuilt")


COMMANDS: dict[str, Callable[[argparse.Namespace, Settings, argparse.ArgumentParser], int]] = {
    "status": status_command, "check": check_command, "reset": reset_command, "crontab": crontab_command,
    "publish": publish_command, "migrate": migrate_command}
GRID_DAYS = 31
STALE = 1  # check's exit status when a network's data is older than --max-age


def migration(settings: Settings, network: str, run: Callable[[Any, str], list[str]], verb: str) -> int:
    """`run(client, database)` (migrate.migrate, or migrate.dry_run) on the network's database."""
    database = settings.database_for(network)
    if settings.clickhouse_cluster:
        print(f"migrate {database}: it rebuilds tables on one server, as the replaced system had; with"
              " CLICKHOUSE_CLUSTER set nothing is done", file=sys.stderr)
        return 2
    try:
        client = clickhouse_client(settings)
        if not clickhouse.database_exists(client, database):
            print(f"{database}: no such database; the first run creates it in the pipeline's layout")
            return 0
        rebuilt = run(client, database)
    except (ClickHouseError, OSError, migrate.MigrationFailed) as exc:
        print(f"migrate {database}: {one_line(exc)}", file=sys.stderr)
        return 1
    print(f"{database}: {verb} {len(rebuilt)} table(s)" + (f": {', '.join(rebuilt)}" if rebuilt else ""))
    return 0


def luigid(arguments: list[str]) -> int:
    """luigid with its state and logs in a writable place unless given:
    luigid's own defaults (/var/lib/luigi-server, ...) need root, and a
    state it cannot save is lost at stop."""
    state = os.path.join(os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state"), "sot-ingestion")
    defaults = []
    if not any(a.startswith("--state-path") for a in arguments):
        defaults += ["--state-path", os.path.join(state, "luigid-state.pickle")]
    if not any(a.startswith("--logdir") for a in arguments):
        defaults += ["--logdir", state]
    os.makedirs(state, exist_ok=True)
    state_path = option_value(defaults + arguments, "--state-path") or os.path.join(state, "luigid-state.pickle")
    record_task_history(os.path.dirname(os.path.abspath(state_path)))
    return luigi.cmdline.luigid(defaults + arguments)


def option_value(arguments: list[str], name: str) -> str | None:
    """The value of `name` in a command line, as `name value` or `name=value`."""
    for i, argument in enumerate(arguments):
        if argument == name and i + 1 < len(arguments):
            return arguments[i + 1]
        if argument.startswith(name + "="):
            return argument.split("=", 1)[1]
    return None


def record_task_history(folder: str) -> None:
    """luigid keeps every run of every task (its History page, /history): in
    SQLite beside its state, unless luigi.cfg names a database ([task_history]
    db_connection, a PostgreSQL URL in production) or turns it off."""
    config = luigi.configuration.get_config()
    for section, option, value in (("scheduler", "record_task_history", "true"),
                                   ("task_history", "db_connection",
                                    f"sqlite:///{os.path.join(folder, 'task-history.sqlite')}")):
        if not config.has_section(section):
            config.add_section(section)
        if not config.has_option(section, option):
            config.set(section, option, value)
