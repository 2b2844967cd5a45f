"""`python -m workflows status`: what the operator sees of many days at
once, read through workflows.state (never a task built per day), creating
nothing."""
import sys
from collections.abc import Iterator
from typing import TextIO

from clickhouse_driver.errors import Error as ClickHouseError

from . import clickhouse, scheduler, state
from .clients import clickhouse_client, redis_client, replica_clients
from .config import Settings
from .errors import one_line
from .schema import TABLES
from .slices import Slice

STATUS_LEGEND = """\
done      the step's marker is set (download: the copy is on disk, until cleanup removes it)
-         not done: not run yet, not published yet, or reset
1,234     rows loaded for the day (its marker set, the table holding that many)
state     done: all four tables loaded and cleaned up; failed: the day's last failure, its step,
          attempt and reason (kept until the day is done); -: nothing done or failed yet; "labels
          republished since the export": the producer's labels file changed after the day's export
          (its META.json sha256), and the day loaded the current one"""


def by_network(days: list[Slice]) -> dict[str, list[Slice]]:
    grouped: dict[str, list[Slice]] = {}
    for day in days:
        grouped.setdefault(day.network, []).append(day)
    return grouped


def read_states(settings: Settings, days: list[Slice]) -> dict[Slice, state.DayState]:
    """The state of each day; a network whose database is not there has loaded nothing."""
    client = redis_client(settings)
    states = {}
    for network, same_network in by_network(days).items():
        ch = clickhouse_client(settings)
        if not clickhouse.database_exists(ch, settings.database_for(network)):
            ch = None
        states.update(zip(same_network, state.day_states(settings, client, ch, same_network)))
    return states


def disabled_days(days: list[Slice]) -> set[Slice]:
    """The days of which luigid holds a task disabled, as luigid says it, so
    status agrees with it; none when luigid does not answer."""
    try:
        return scheduler.disabled_days(days)
    except OSError:
        return set()


def print_status(settings: Settings, days: list[Slice], out: TextIO | None = None) -> None:
    """A table of network x day: each step done or not, rows loaded per
    table, and the day's state with its last failure. Reads only: creates
    no database or table."""
    out = out or sys.stdout
    header = ["network", "date", "download", "validate", "checksums", *TABLES, "cleanup", "state"]
    states, held_disabled = read_states(settings, days), disabled_days(days)
    rows = []
    for day in days:
        s = states[day]
        cells = [day.network, day.date.isoformat(),
                 *("done" if done else "-" for done in (s.downloaded, s.validated, s.checked))]
        cells += [f"{s.loaded[t]:,}" if t in s.loaded else "-" for t in TABLES]
        cells.append("done" if s.cleaned else "-")
        text = "done" if s.finished else state.describe_failure(s.failure) if s.failure else "-"
        if day in held_disabled:
            text += "; disabled in luigid (reset re-enables)"
        cells.append(text + ("; labels republished since the export" if s.labels_republished else ""))
        rows.append(cells)
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header) - 1)]
    for row in [header] + rows:
        out.write("  ".join(str(c).ljust(w) for c, w in zip(row, widths + [0])).rstrip() + "\n")
    if len(settings.clickhouse_replicas) > 1:
        out.write("\nper replica of CLICKHOUSE_HOST (arrived: every table holds the rows its marker counted)\n")
        for line in replica_states(settings, days):
            out.write(line + "\n")
    out.write("\n" + STATUS_LEGEND + "\n")


def replica_states(settings: Settings, days: list[Slice]) -> Iterator[str]:
    """One line per replica, network and day: whether the day has arrived
    on that replica, read from it alone."""
    for address, client in replica_clients(settings).items():
        for network, same_network in by_network(days).items():
            database = settings.database_for(network)
            try:
                loaded = state.loaded_days(client, database, network, [d.date for d in same_network],
                                           same_network[0].window_days) \
                    if clickhouse.database_exists(client, database) else {}
            except (ClickHouseError, OSError) as exc:
                yield f"{address}  {network}  down: {one_line(exc)}"
                continue
            for day in same_network:
                missing = [t for t in TABLES if t not in loaded.get(day.date, {})]
                yield f"{address}  {network}  {day.date}  " + ("arrived" if not missing else
                                                              "not yet: " + ", ".join(missing))
