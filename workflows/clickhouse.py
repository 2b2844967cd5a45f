"""ClickHouse access: schema, staging tables and the atomic swap of one
(processing_date, window_days) slice. The statements are in workflows.sql,
the clients in workflows.clients, the streaming insert in workflows.insert."""
import hashlib
import socket
import uuid
from collections.abc import Callable, Container, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from clickhouse_driver.errors import ErrorCodes, ServerException

from targets.clickhouse_marker import MARKER_COLUMNS_ADDED, MARKER_TABLE

from . import leases, sql
from .layout import ServedTable, layout_differences
from .schema import COMPLETE_DAYS_VIEW, SCHEMAS, STAGING_PREFIX, TABLES, Table
from .slices import Slice

# A staging table older than this belongs to a load that died (a load of a
# 5M-row file takes about a minute); the next load in the database drops it.
# One whose owner's lease has lapsed (workflows.leases) is dropped at once.
STAGING_MAX_AGE_SECONDS = 2 * 3600
# Scopes only the copies staged ahead of their loads (drop_staged, claim_staged):
# ownership of a live table is its owner's lease, whatever the host name.
HOST_TAG = hashlib.sha1(socket.gethostname().encode()).hexdigest()[:8]


@dataclass(frozen=True)
class Destination:
    """A table of the network's database, through one client: where a day's rows go."""

    client: Any  # a clickhouse_driver Client, or anything with its execute()
    database: str
    table: Table


class DayCountMismatch(RuntimeError):
    """After the swap the day does not hold the rows that were loaded."""


class LayoutMismatch(RuntimeError):
    """A table of the database cannot take a day swap (made by the system
    this pipeline replaces: month partitions, another order); the message
    names the table and what differs."""


def ensure_schema(ch: Any, database: str, cluster: str | None = None) -> None:
    """Creates the database, the four tables, the marker table and the
    complete_days view, on every replica of `cluster`, when any is missing
    on the server `ch` talks to. Checked first, since DDL ON CLUSTER waits
    for every replica: with one down, a run would wait out
    distributed_ddl_task_timeout (180 s) and fail. Raises LayoutMismatch,
    before any load, for a table that is there but cannot take a day swap."""
    wanted = {*TABLES, MARKER_TABLE, COMPLETE_DAYS_VIEW}
    present = {name for (name,) in query_tables_retrying(ch, sql.table_names(database))}
    check_layouts(ch, database)
    if MARKER_TABLE in present:
        add_marker_columns(ch, database, cluster)
    if wanted <= present:
        return
    ch.execute(*sql.create_database(database, cluster))
    for table in SCHEMAS.values():
        ch.execute(*sql.create_table(database, table, cluster=cluster))
    ch.execute(*sql.create_marker_table(database, cluster))
    ch.execute(*sql.create_complete_days_view(database, list(TABLES), cluster))


def add_marker_columns(ch: Any, database: str, cluster: str | None = None) -> None:
    """The marker columns added since a marker table was made."""
    held = {name for _, name, _ in ch.execute(*sql.served_columns(database, [MARKER_TABLE]))}
    for name, type_ in MARKER_COLUMNS_ADDED:
        if name not in held:
            ch.execute(*sql.add_column(database, MARKER_TABLE, name, type_, cluster))


def served_tables(ch: Any, database: str) -> dict[str, ServedTable]:
    """{name: layout.ServedTable} of the four tables the database holds."""
    names = list(TABLES)
    described = query_tables_retrying(ch, sql.served_tables(database, names))
    if not described:
        return {}
    columns: dict[str, list[tuple[str, str]]] = {}
    indexes: dict[str, list[str]] = {}
    for table, name, type_ in ch.execute(*sql.served_columns(database, names)):
        columns.setdefault(table, []).append((name, type_))
    if ch.execute(*sql.has_skip_indexes())[0][0]:
        for table, clause in ch.execute(*sql.skip_indexes(database, names)):
            indexes.setdefault(table, []).append(clause)
    return {name: ServedTable(engine, partition, sorting, tuple(columns.get(name, ())), tuple(indexes.get(name, ())))
            for name, engine, partition, sorting in described}


def check_layouts(ch: Any, database: str) -> None:
    """LayoutMismatch naming the first table that cannot take a day swap, and the others."""
    served = served_tables(ch, database)
    mismatched = {name: differences for name, table in SCHEMAS.items()
                  if name in served and (differences := layout_differences(table, served[name]))}
    if mismatched:
        (first, differences), *others = mismatched.items()
        also = f" (and {', '.join(name for name, _ in others)})" if others else ""
        raise LayoutMismatch(f"{database}.{first}{also} cannot take a day swap: {'; '.join(differences)}")


def swap_tables(ch: Any, database: str, name: str, other: str) -> None:
    """Gives each table the other's name: atomic in an Atomic database
    (current servers); two renames in one statement in an Ordinary one
    (18.16), between which a reader may find `name` missing."""
    if ch.execute(*sql.database_engine(database))[0][0] == "Atomic":
        ch.execute(*sql.exchange_tables(database, name, other))
        return
    spare = f"{name}__exchanging"
    ch.execute(*sql.rename_tables(database, [(name, spare), (other, name), (spare, other)]))


def query_tables_retrying(ch: Any, statement: sql.Statement, attempts: int = 5) -> list[tuple]:
    """The rows of a query on system.tables. ClickHouse 18.16 fails one when a
    table it lists is dropped or renamed while it reads (a concurrent load's
    staging table): UNKNOWN_TABLE, or "File not found" for its metadata file.
    Reading again gets a consistent list."""
    for attempt in range(1, attempts + 1):
        try:
            return ch.execute(*statement)
        except ServerException as exc:
            gone = exc.code == ErrorCodes.UNKNOWN_TABLE or (
                exc.code == ErrorCodes.POCO_EXCEPTION and "File not found" in exc.message)
            if not gone or attempt == attempts:
                raise
    raise ValueError(f"attempts must be at least 1, not {attempts}")  # the last attempt returns or raises


def database_exists(ch: Any, database: str) -> bool:
    return ch.execute(*sql.database_exists(database))[0][0] > 0


def count_day_rows(into: Destination, day: Slice) -> int:
    return dict(into.client.execute(*sql.day_counts(into.database, into.table.name, [day.date], day.window_days))
                ).get(day.date, 0)


def staging_name(table_name: str, day: Slice, download_id: str | None = None) -> str:
    """A name of its own for each staging table, so concurrent loads of one
    day never share one. It carries the host, and the owner: the process
    that drops it when done (leases.owner(), whose lease says it lives), or,
    for a table staged ahead of its swap (keep_staged), `d` and the
    download it was staged from."""
    return f"{_owned_prefix(table_name, day, download_id)}{uuid.uuid4().hex[:6]}"


def _owned_prefix(table_name: str, day: Slice, download_id: str | None = None) -> str:
    owner = f"d{download_id[:12]}" if download_id else leases.owner()
    return f"{_day_prefix(table_name, day)}{owner}_"


def _day_prefix(table_name: str, day: Slice) -> str:
    """Of the staging tables of one table's day on this host, whatever their owner."""
    return f"{STAGING_PREFIX}{table_name}_{day.date:%Y%m%d}_{int(day.window_days)}_{HOST_TAG}_"


def staging_owner(name: str) -> str:
    """The owner a staging table's name carries."""
    return name.rsplit("_", 2)[1]


def abandoned(name: str, age_seconds: int, holders: Container[str],
              max_age_seconds: int = STAGING_MAX_AGE_SECONDS) -> bool:
    """Whether a staging table is no longer wanted: its owning process's
    lease has lapsed (it is not among `holders`), or, staged ahead of its
    swap, the table is older than max_age_seconds."""
    owner = staging_owner(name)
    return age_seconds >= max_age_seconds or (not owner.startswith("d") and owner not in holders)


def sweep_staging(ch: Any, database: str, holders: Callable[[set[str]], Container[str]] | None = None,
                  max_age_seconds: int = STAGING_MAX_AGE_SECONDS) -> list[str]:
    """Drops the staging tables that dead loads left; returns their names.
    `holders(owners)`: those whose lease is held (leases.holders); without
    it only age counts."""
    tables = query_tables_retrying(ch, sql.staging_tables(database))
    owners = {staging_owner(name) for name, _ in tables}
    alive = holders(owners) if holders else owners
    stale = [name for name, age in tables if abandoned(name, age, alive, max_age_seconds)]
    for name in stale:
        drop_table(ch, database, name)
    return stale


@contextmanager
def staging_table(into: Destination, day: Slice) -> Iterator[str]:
    """A new empty staging table of this process for the table's day,
    dropped afterwards unless keep_staged took it."""
    name = staging_name(into.table.name, day)
    into.client.execute(*sql.create_table(into.database, into.table, name))
    with dropped_after(into.client, into.database, name):
        yield name


@contextmanager
def dropped_after(ch: Any, database: str, name: str) -> Iterator[str]:
    try:
        yield name
    finally:
        drop_table(ch, database, name)


def keep_staged(into: Destination, staging: str, day: Slice, download_id: str) -> None:
    """Hands a filled staging table over to the load of `download_id` that
    will swap it in (claim_staged): it then outlives this process."""
    into.client.execute(*sql.rename_tables(into.database, [(staging, staging_name(into.table.name, day,
                                                                                     download_id))]))


def claim_staged(into: Destination, day: Slice, download_id: str | None, rows: int) -> str | None:
    """The table staged on this host from `download_id`, renamed to a staging
    table of this process, so that no other load takes it and it goes if
    this process dies; None when there is none holding `rows` rows (swept,
    staged through another replica, taken by a concurrent load). The caller
    drops it (dropped_after)."""
    if download_id is None:
        return None
    ch, database = into.client, into.database
    prefix = _owned_prefix(into.table.name, day, download_id)
    for name, _ in query_tables_retrying(ch, sql.staging_tables(database)):
        if not name.startswith(prefix):
            continue
        mine = staging_name(into.table.name, day)
        try:
            ch.execute(*sql.rename_tables(database, [(name, mine)]))
        except ServerException as exc:
            if exc.code == ErrorCodes.UNKNOWN_TABLE:  # a concurrent load took it first
                continue
            raise
        if count_all_rows(ch, database, mine) == rows:
            return mine
        drop_table(ch, database, mine)
    return None


def drop_staged(ch: Any, database: str, day: Slice) -> list[str]:
    """Drops what is left staged of the day from any download (a concurrent
    run's stage that no load needed, a stage whose run was killed before
    its loads); returns the names."""
    prefixes = tuple(_day_prefix(t, day) for t in TABLES)
    left = [name for name, _ in query_tables_retrying(ch, sql.staging_tables(database))
            if name.startswith(prefixes) and staging_owner(name).startswith("d")]
    for name in left:
        drop_table(ch, database, name)
    return left


def drop_table(ch: Any, database: str, name: str) -> None:
    ch.execute(*sql.drop_table(database, name))


def count_all_rows(ch: Any, database: str, name: str) -> int:
    return ch.execute(*sql.count_rows(database, name))[0][0]


def swap_day(into: Destination, staging: str, day: Slice, rows: int) -> None:
    """Makes the table's (date, window_days) slice the staging table's
    `rows` rows, atomically: a reader sees the old day or the new one. A day
    of zero rows is dropped, since current servers refuse to replace from an
    empty source. The day is counted afterwards, so a concurrent change
    cannot leave a day marked loaded with other rows than were loaded."""
    ch, database, table = into.client, into.database, into.table.name
    if rows:
        ch.execute(*sql.replace_partition(database, table, staging, day.date, day.window_days))
    else:
        ch.execute(*sql.drop_partition(database, table, day.date, day.window_days))
    found = count_day_rows(into, day)
    if found != rows:
        raise DayCountMismatch(f"{table}: after the swap the day holds {found:,} rows, not the {rows:,} loaded;"
                               " did another load of the same day run at the same time?")
