"""python -m workflows status | reset | crontab | luigid | publish: inspect the
markers, remove them so the next run redoes a step, print the crontab, start
luigid, write a snapshot from the SOT ClickHouse."""
import argparse
import datetime as dt
import json
import logging
import os
import sys

import luigi.cmdline
import luigi.configuration
import redis
from clickhouse_driver.errors import Error as ClickHouseError

from targets import RedisMarkerTarget

from . import clickhouse, scheduler
from .config import ConfigError, Settings, check_network, known_network
from .errors import one_line
from .meta import TABLES
from .migrate import MigrationFailed, migrate
from .publish import publish
from .resources import clickhouse_client, failed_server, replica_clients
from .sources import NotPublished, SourceUnavailable
from .status import loaded_days
from .tasks import (
    STEPS,
    Cleanup,
    day_tasks,
    describe_failure,
    last_failure_key,
    republished_labels_key,
    step_tasks,
    yesterday,
)

CRON_HOURS = (1, 3)
CRON_SPACING_MINUTES = 15


STATUS_LEGEND = """\
done      the step's marker is set (download: the copy is on disk, until cleanup removes it)
-         not done: not run yet, not published yet, or reset
1,234     rows loaded for the day (its marker set, the table holding that many)
state     done: all four tables loaded and cleaned up; failed: the day's last failure, its step,
          attempt and reason (kept until the day is done); -: nothing done or failed yet; "labels
          republished since the export": the producer's labels file changed after the day's export
          (its META.json sha256), and the day loaded the current one"""


def day_range(first, last):
    if last < first:
        raise ConfigError(f"--to {last} is before --from {first}")
    return [first + dt.timedelta(days=n) for n in range((last - first).days + 1)]


def status(dates, networks, window_days, out=None, settings=None):
    """A table of network x day: each step done or not, rows loaded per
    table, and the day's state with its last failure. Reads only: creates
    no database or table."""
    out = out or sys.stdout
    header = ["network", "date", "download", "validate", "checksums", *TABLES, "cleanup", "state"]
    rows = []
    held_disabled = disabled_days(networks, dates, window_days)
    for network in networks:
        cleanups = [Cleanup(network, date, window_days) for date in dates]
        states = Cleanup.day_states(cleanups, read_only=True)
        failures = cleanups[0].redis.mget([last_failure_key(network, date, window_days) for date in dates])
        republished = cleanups[0].redis.mget([republished_labels_key(network, date, window_days) for date in dates])
        # the download on disk; each validation marker in one Redis round trip per step for all the days
        downloaded = [step_tasks("download", network, date, window_days)[0].complete() for date in dates]
        validated, checked = (RedisMarkerTarget.exist_all([step_tasks(step, network, date, window_days)[0].output()
                                                           for date in dates]) for step in ("validate", "checksums"))
        for date, failure, labels, *steps in zip(dates, failures, republished, downloaded, validated, checked):
            loaded, marked = states[date]
            cells = [network, date.isoformat(), *("done" if done else "-" for done in steps)]
            cells += [f"{loaded[t]:,}" if t in loaded else "-" for t in TABLES]
            done = Cleanup.is_done(loaded, marked)
            cells.append("done" if marked else "-")
            state = "done" if done else describe_failure(json.loads(failure)) if failure else "-"
            if (network, date) in held_disabled:
                state += "; disabled in luigid (reset re-enables)"
            cells.append(state + ("; labels republished since the export" if labels else ""))
            rows.append(cells)
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header) - 1)]
    for row in [header] + rows:
        out.write("  ".join(str(c).ljust(w) for c, w in zip(row, widths + [0])).rstrip() + "\n")
    settings = settings or Settings.from_env()
    if len(settings.clickhouse_replicas) > 1:
        out.write("\nper replica of CLICKHOUSE_HOST (arrived: every table holds the rows its marker counted)\n")
        for line in replica_states(settings, dates, networks, window_days):
            out.write(line + "\n")
    out.write("\n" + STATUS_LEGEND + "\n")


def disabled_days(networks, dates, window_days):
    """(network, date) of the days of which luigid holds a task disabled, as
    luigid says it, so status agrees with it; none when luigid does not answer."""
    try:
        return scheduler.disabled_days(networks, dates, window_days)
    except OSError:
        return set()


def replica_states(settings, dates, networks, window_days):
    """One line per replica, network and day: whether the day has arrived
    on that replica, read from it alone."""
    for address, client in replica_clients(settings).items():
        for network in networks:
            database = settings.database_for(network)
            try:
                loaded = loaded_days(client, database, network, dates, window_days) \
                    if clickhouse.database_exists(client, database) else {}
            except (ClickHouseError, OSError) as exc:
                yield f"{address}  {network}  down: {one_line(exc)}"
                continue
            for date in dates:
                missing = [t for t in TABLES if t not in loaded.get(date, {})]
                yield f"{address}  {network}  {date}  " + ("arrived" if not missing else
                                                          "not yet: " + ", ".join(missing))


def reset(network, date, window_days, step, table=None):
    """Removes the targets of `step` and of every step after it (for `load`
    with a table: that table's marker and the cleanup marker). Returns the
    tasks whose target was there; creates nothing."""
    removed = []
    for later in STEPS[STEPS.index(step):]:
        for task in step_tasks(later, network, date, window_days, table if later == "load" else None):
            task.attempts().clear()  # the next failure is attempt 1 again
            if later == "load" and not task.database_exists():
                continue  # nothing was ever loaded, and a typo must not create a database
            if task.remove_output():
                removed.append(task)
    if removed:  # the day's last failure is of the attempts before; status shows the new ones
        removed[0].redis.delete(last_failure_key(network, date, window_days))
    return removed


# the day before today in UTC, whatever the host's time zone (% is special in crontab lines)
UTC_YESTERDAY = "$(date -u -d yesterday +\\%F)"


def crontab(networks, workdir="/app", luigi="/usr/local/bin/luigi", log_dir="/var/log/sot-ingestion"):
    """RunDaily at 1:00 and 3:00 UTC, the networks 15 minutes apart, each for
    yesterday in UTC. flock -n skips a run while the previous one for the
    network is still going."""
    lines = [
        "# SOT ingestion: RunDaily for yesterday (UTC), at 1:00 and again at 3:00 UTC, networks 15 minutes apart.",
        "# Generated by `python -m workflows crontab`. CRON_TZ=UTC sets the times where cron supports it"
        " (cronie);",
        "# elsewhere they are the host's time, and the date is UTC's yesterday all the same. The jobs read",
        "# .env in their working directory.",
        "CRON_TZ=UTC",
        "SHELL=/bin/sh",
        "PATH=/usr/local/bin:/usr/bin:/bin",
    ]
    for hour in CRON_HOURS:
        for i, network in enumerate(networks):
            minute = i * CRON_SPACING_MINUTES
            lines.append(
                f"{minute % 60} {hour + minute // 60} * * * cd {workdir} && flock -n /tmp/sot-ingestion-{network}.lock"
                f" {luigi} --module workflows RunDaily --date {UTC_YESTERDAY} --networks {network}"
                f" >> {log_dir}/{network}.log 2>&1")
    return "\n".join(lines) + "\n"


def publish_day(settings, network, date, window_days, to_url):
    try:
        snapshot, labels = publish(settings, network, date, window_days, to_url)
    except NotPublished as exc:
        print(f"{network} {date}: nothing to publish: {exc}", file=sys.stderr)
        return 1
    except SourceUnavailable as exc:
        print(f"{network} {date}: {exc}", file=sys.stderr)
        return 1
    print(f"published {network} {date} (window {window_days} days) to {snapshot}, its labels to {labels}")
    return 0


def _date(text):
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD)") from None


def _days(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of days") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is outside 1..65535")
    return value


def network_of_command(name, settings, force):
    """A configured network, or with --force any well-formed name."""
    return check_network(name) if force else known_network(name, settings, "; --force to use it anyway")


def command_line():
    """The parser of `python -m workflows`."""
    parser = argparse.ArgumentParser(prog="python -m workflows", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    network_help = "a network of INGESTION_NETWORKS (others need --force)"
    window_help = "the snapshot's window in days (default INGESTION_WINDOW_DAYS)"
    force_help = "accept a network that INGESTION_NETWORKS does not list"

    show = commands.add_parser("status", help="network x step, done or not, rows loaded per table, last failure",
                               description=status.__doc__, epilog=STATUS_LEGEND,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
    show.add_argument("--date", type=_date, action="append", metavar="YYYY-MM-DD",
                      help="a day to show (repeat for several; default yesterday, UTC)")
    show.add_argument("--from", dest="first", type=_date, metavar="YYYY-MM-DD",
                      help="first day of a range (with --to, default yesterday)")
    show.add_argument("--to", dest="last", type=_date, metavar="YYYY-MM-DD", help="last day of the range")
    show.add_argument("--network", action="append", help=network_help + "; repeat for several (default all)")
    show.add_argument("--window-days", type=_days, help=window_help)
    show.add_argument("--force", action="store_true", help=force_help)

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
                                               " in the pipeline's layout, every row kept", description=migrate.__doc__)
    move.add_argument("--network", required=True, help=network_help)
    move.add_argument("--dry-run", action="store_true", help="say what it would do, change nothing")
    move.add_argument("--force", action="store_true", help=force_help)
    return parser


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["luigid"]:  # with the package's scheduler policy and INGESTION_RETRY_DELAY (import workflows)
        return luigid(argv[1:])
    parser = command_line()
    args = parser.parse_args(argv)
    # the command says in one line which server failed; the driver's own line per failed connect is noise here
    logging.getLogger("clickhouse_driver.connection").setLevel(logging.CRITICAL)

    try:
        settings = Settings.from_env(reads_snapshots=args.command not in ("crontab", "publish", "migrate"))
        if args.command == "crontab":
            sys.stdout.write(crontab(settings.networks, args.workdir, args.luigi, args.log_dir))
            return 0
        if args.command == "migrate":
            return migrate_network(settings, network_of_command(args.network, settings, args.force), args.dry_run)
        window_days = args.window_days or settings.window_days
        if args.command == "publish":
            return publish_day(settings, network_of_command(args.network, settings, args.force), args.date, window_days,
                               args.to)
        if args.command == "status":
            networks = [network_of_command(n, settings, args.force) for n in args.network] if args.network \
                else settings.networks
            if args.date and (args.first or args.last):
                parser.error("--date goes without --from/--to")
            dates = args.date or (day_range(args.first or args.last or yesterday(), args.last or yesterday())
                                  if args.first or args.last else [yesterday()])
            status(dates, networks, window_days, settings=settings)
            return 0
        if args.table and args.step not in (None, "load"):
            parser.error("--table goes with --step load")
        network = network_of_command(args.network, settings, args.force)
        step = args.step or ("load" if args.table else "download")
        removed = reset(network, args.date, window_days, step, args.table)
        for task in removed:
            print(f"removed {task.output()}")
        if not removed:
            print(f"nothing to remove: no target of {network} {args.date} from step {step} on")
        try:
            for task in scheduler.re_enable(day_tasks(network, args.date, window_days)):
                print(f"re-enabled in luigid: {task}")
        except OSError as exc:
            print(f"luigid at {scheduler.scheduler_url()} did not answer ({exc}); nothing re-enabled there",
                  file=sys.stderr)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    except (redis.RedisError, ClickHouseError, OSError) as exc:  # a server down, a table dropped by hand, ...
        print(f"{args.command}: {failed_server(settings, exc)}", file=sys.stderr)
        return 1
    return 0


def migrate_network(settings, network, dry_run):
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
        rebuilt = migrate(client, database, dry_run)
    except (ClickHouseError, OSError, MigrationFailed) as exc:
        print(f"migrate {database}: {one_line(exc)}", file=sys.stderr)
        return 1
    verb = "would rebuild" if dry_run else "rebuilt"
    print(f"{database}: {verb} {len(rebuilt)} table(s)" + (f": {', '.join(rebuilt)}" if rebuilt else ""))
    return 0


def luigid(arguments):
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
    record_task_history(os.path.dirname(os.path.abspath(option_value(defaults + arguments, "--state-path"))))
    return luigi.cmdline.luigid(defaults + arguments)


def option_value(arguments, name):
    """The value of `name` in a command line, as `name value` or `name=value`."""
    for i, argument in enumerate(arguments):
        if argument == name and i + 1 < len(arguments):
            return arguments[i + 1]
        if argument.startswith(name + "="):
            return argument.split("=", 1)[1]
    return None


def record_task_history(folder):
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
