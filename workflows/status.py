"""`python -m workflows status` and `check`: what the operator sees of many
days at once (a table, a grid of symbols, the freshness of each network),
read through workflows.state (never a task built per day), creating nothing."""
import datetime as dt
import sys
from collections.abc import Iterator
from typing import TextIO

from clickhouse_driver.errors import Error as ClickHouseError

from . import clickhouse, grid, scheduler, sql, state
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
    client, ch = redis_client(settings), clickhouse_client(settings)
    states: dict[Slice, state.DayState] = {}
    for network, same_network in by_network(days).items():
        there = clickhouse.database_exists(ch, settings.database_for(network))
        states.update(zip(same_network, state.day_states(settings, client, ch if there else None, same_network)))
    return states


def disabled_days(days: list[Slice]) -> set[Slice]:
    """The days of which luigid holds a task disabled, as luigid says it, so
    status agrees with it; none when luigid does not answer."""
    try:
        return scheduler.disabled_days(days)
    except OSError:
        return set()


def state_text(day: Slice, day_state: state.DayState, held_disabled: set[Slice]) -> str:
    """The day's state in words: done, its last failure, or -; and whether luigid holds it disabled."""
    s = day_state
    text = "done" if s.finished else state.describe_failure(s.failure) if s.failure else "-"
    if day in held_disabled:
        text += "; disabled in luigid (reset re-enables)"
    return text + ("; labels republished since the export" if s.labels_republished else "")


def aligned(rows: list[list[str]]) -> list[str]:
    """Rows as lines of left-aligned columns, the last one as long as it is."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths + [0])).rstrip() for row in rows]


def print_status(settings: Settings, days: list[Slice], out: TextIO | None = None) -> None:
    """A table of network x day: each step done or not, rows loaded per
    table, and the day's state with its last failure. Reads only: creates
    no database or table."""
    out = out or sys.stdout
    rows = [["network", "date", "download", "validate", "checksums", *TABLES, "cleanup", "state"]]
    states, held_disabled = read_states(settings, days), disabled_days(days)
    for day in days:
        s = states[day]
        rows.append([day.network, day.date.isoformat(),
                     *("done" if done else "-" for done in (s.downloaded, s.validated, s.checked)),
                     *(f"{s.loaded[t]:,}" if t in s.loaded else "-" for t in TABLES),
                     "done" if s.cleaned else "-", state_text(day, s, held_disabled)])
    for line in aligned(rows):
        out.write(line + "\n")
    if len(settings.clickhouse_replicas) > 1:
        out.write("\nper replica of CLICKHOUSE_HOST (arrived: every table holds the rows its marker counted)\n")
        for line in replica_states(settings, days):
            out.write(line + "\n")
    out.write("\n" + STATUS_LEGEND + "\n")


def loaded_table(settings: Settings, days: list[Slice]) -> list[str]:
    """What a run leaves, one line per day: rows loaded per table and the state."""
    states = read_states(settings, days)
    rows = [["network", "date", *TABLES, "state"]]
    for day in days:
        s = states[day]
        rows.append([day.network, day.date.isoformat(), *(f"{s.loaded[t]:,}" if t in s.loaded else "-"
                                                          for t in TABLES), state_text(day, s, set())])
    return aligned(rows)


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


def grid_cell(day: Slice, day_state: state.DayState, held_disabled: set[Slice]) -> grid.Cell:
    """The day's one symbol: done, not published yet, gave up (luigid
    disabled it, or its last attempt failed), failed with attempts left,
    partly done, or nothing."""
    failure = day_state.failure
    if day_state.finished:
        shown = grid.DONE
    elif failure and failure.get("kind") == state.NOT_PUBLISHED:
        shown = grid.UNPUBLISHED
    elif day in held_disabled or (failure and state.gave_up(failure)):
        shown = grid.GAVE_UP
    elif failure:
        shown = grid.FAILED
    elif day_state.started:
        shown = grid.PARTIAL
    else:
        shown = grid.NOTHING
    described = None
    if failure and not day_state.finished:  # the reason without the day, which the grid says
        described = state.describe_failure({**failure, "reason": day.unprefixed(failure["reason"])}
                                           ).removeprefix("failed: ")
    return grid.Cell(shown, dict(day_state.loaded), described)


def day_grid(settings: Settings, days: list[Slice]) -> dict[tuple[str, dt.date], grid.Cell]:
    """{(network, date): Cell} of these days."""
    states, held_disabled = read_states(settings, days), disabled_days(days)
    return {(day.network, day.date): grid_cell(day, states[day], held_disabled) for day in days}


def last_complete_days(settings: Settings, networks: tuple[str, ...], window_days: int) -> dict[str, dt.date | None]:
    """Each network's newest day whose four tables are loaded (None: none, or no database yet)."""
    ch = clickhouse_client(settings)
    last: dict[str, dt.date | None] = {}
    for network in networks:
        database = settings.database_for(network)
        rows = ch.execute(*sql.last_complete_day(database, network, window_days)) \
            if clickhouse.database_exists(ch, database) else []
        last[network] = rows[0][0] if rows else None
    return last
