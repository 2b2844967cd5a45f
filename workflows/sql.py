"""Every SQL statement the pipeline sends to ClickHouse, and nothing else.

Each function returns `(query, params)` for clickhouse-driver's
`Client.execute`. Keeping them in one module lets the conformance suite run
each one on ClickHouse 18.16 and on a current engine (tests/test_conformance.py
fails when a function here is not exercised). The SQL sticks to what both
generations understand: plain MergeTree, no LowCardinality, Bool, skip indexes
or Parquet on the server, no REPLACE PARTITION from an empty source."""
import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from targets.clickhouse_marker import MARKER_COLUMNS, MARKER_TABLE

from .schema import COMPLETE_DAYS_VIEW, STAGING_PREFIX, Table, quote_identifier

Statement = tuple[str, dict[str, Any] | None]  # (query, params) for Client.execute


def _name(database: str, table: str) -> str:
    return f"{quote_identifier(database)}.{quote_identifier(table)}"


def _partition(date: dt.date, window_days: int) -> str:
    return f"('{date.isoformat()}', {int(window_days)})"


def ping() -> Statement:
    """The first query on a new connection, which proves it answers."""
    return "SELECT 1", None


def database_exists(database: str) -> Statement:
    return "SELECT count() FROM system.databases WHERE name = %(database)s", {"database": database}


def _on_cluster(cluster: str | None) -> str:
    return f" ON CLUSTER {quote_identifier(cluster)}" if cluster else ""


def _engine(engine: str, database: str, table: str, cluster: str | None, *arguments: str) -> str:
    """`engine`, or on a cluster its Replicated form, kept in step through
    ZooKeeper under a path of the shard's, one replica per server (the
    servers' {shard} and {replica} macros)."""
    if cluster:
        engine = f"Replicated{engine}"
        arguments = (f"'/clickhouse/tables/{{shard}}/{database}/{table}'", "'{replica}'", *arguments)
    return f"{engine}({', '.join(arguments)})"


def table_names(database: str) -> Statement:
    """The tables and views of a database (none when it is missing)."""
    return "SELECT name FROM system.tables WHERE database = %(database)s", {"database": database}


def create_database(database: str, cluster: str | None = None) -> Statement:
    return f"CREATE DATABASE IF NOT EXISTS {quote_identifier(database)}{_on_cluster(cluster)}", None


def create_table(database: str, table: Table, name: str | None = None, cluster: str | None = None) -> Statement:
    """The table of contract section 5 (on every replica of `cluster`), or
    under `name` an empty table of the same structure for staging one load.
    The engine is spelled out, never copied with `CREATE TABLE ... AS`, so a
    staging table is always a local MergeTree whatever the engine of the
    table it feeds."""
    columns = ",\n    ".join(
        [f"{quote_identifier(c.name)} {c.type}" + (f" DEFAULT {c.default}" if c.default else "")
         for c in table.columns] + list(table.indexes))
    cluster = None if name else cluster
    return (
        f"CREATE TABLE IF NOT EXISTS {_name(database, name or table.name)}{_on_cluster(cluster)} (\n    {columns}\n)"
        f" ENGINE = {_engine('MergeTree', database, table.name, cluster)}"
        f" PARTITION BY (processing_date, window_days) ORDER BY ({', '.join(table.order_by)})"
    ), None


def create_marker_table(database: str, cluster: str | None = None) -> Statement:
    columns = ",\n    ".join(f"{name} {type_}" for name, type_ in MARKER_COLUMNS)
    return (
        f"CREATE TABLE IF NOT EXISTS {_name(database, MARKER_TABLE)}{_on_cluster(cluster)} (\n    {columns}\n)"
        f" ENGINE = {_engine('ReplacingMergeTree', database, MARKER_TABLE, cluster, 'version')}"
        f" ORDER BY (network, processing_date, window_days, table_name)"
    ), None


def create_complete_days_view(database: str, tables: Sequence[str], cluster: str | None = None) -> Statement:
    """`complete_days`: the (network, processing_date, window_days) whose
    tables are all loaded, for readers, since each table is swapped in on its own."""
    listed = ", ".join(f"'{name}'" for name in tables)
    return (
        f"CREATE VIEW IF NOT EXISTS {_name(database, COMPLETE_DAYS_VIEW)}{_on_cluster(cluster)} AS"
        " SELECT network, processing_date, window_days FROM ("
        " SELECT network, processing_date, window_days, table_name"
        f" FROM {_name(database, MARKER_TABLE)} WHERE table_name IN ({listed})"
        " GROUP BY network, processing_date, window_days, table_name HAVING argMax(loaded, version) = 1)"
        f" GROUP BY network, processing_date, window_days HAVING count() = {len(tables)}"
    ), None


def last_complete_day(database: str, network: str, window_days: int) -> Statement:
    """The network's newest processing_date whose tables are all loaded (complete_days)."""
    return (f"SELECT processing_date FROM {_name(database, COMPLETE_DAYS_VIEW)}"
            " WHERE network = %(network)s AND window_days = %(window_days)s"
            " ORDER BY processing_date DESC LIMIT 1", {"network": network, "window_days": int(window_days)})


def served_tables(database: str, names: Iterable[str]) -> Statement:
    """(name, engine, partition_key, sorting_key) of those of `names` the database holds."""
    return ("SELECT name, engine, partition_key, sorting_key FROM system.tables"
            " WHERE database = %(database)s AND name IN %(names)s", {"database": database, "names": tuple(names)})


def served_columns(database: str, names: Iterable[str]) -> Statement:
    """(table, column, type) of those tables, each table's columns in its order."""
    return ("SELECT table, name, type FROM system.columns WHERE database = %(database)s AND table IN %(names)s",
            {"database": database, "names": tuple(names)})


def has_skip_indexes() -> Statement:
    """Whether the server has skip indexes (ClickHouse 18.16 has not)."""
    return "SELECT count() FROM system.tables WHERE database = 'system' AND name = 'data_skipping_indices'", None


def skip_indexes(database: str, names: Iterable[str]) -> Statement:
    """(table, index clause) of the skip indexes of those tables."""
    return ("SELECT table, concat('INDEX ', name, ' ', expr, ' TYPE ', type_full, ' GRANULARITY ',"
            " toString(granularity)) FROM system.data_skipping_indices"
            " WHERE database = %(database)s AND table IN %(names)s", {"database": database, "names": tuple(names)})


def database_engine(database: str) -> Statement:
    return "SELECT engine FROM system.databases WHERE name = %(database)s", {"database": database}


def copy_rows(database: str, source: str, target: str, columns: Iterable[str]) -> Statement:
    """Every row of `source` into `target`, the listed columns by name."""
    listed = ", ".join(quote_identifier(c) for c in columns)
    return f"INSERT INTO {_name(database, target)} ({listed}) SELECT {listed} FROM {_name(database, source)}", None


def exchange_tables(database: str, name: str, other: str) -> Statement:
    """Atomic, in a database of the Atomic engine (current servers' default)."""
    return f"EXCHANGE TABLES {_name(database, name)} AND {_name(database, other)}", None


def rename_tables(database: str, renames: Iterable[tuple[str, str]]) -> Statement:
    """Several renames in one statement: [(name, new_name), ...]."""
    return "RENAME TABLE " + ", ".join(f"{_name(database, a)} TO {_name(database, b)}" for a, b in renames), None


def drop_table(database: str, name: str) -> Statement:
    return f"DROP TABLE IF EXISTS {_name(database, name)}", None


def insert_rows(database: str, name: str, columns: Iterable[str]) -> Statement:
    """The INSERT whose data follows as Native blocks (insert.insert_blocks)."""
    return f"INSERT INTO {_name(database, name)} ({', '.join(quote_identifier(c) for c in columns)}) VALUES", None


def replace_partition(database: str, table: str, staging: str, date: dt.date, window_days: int) -> Statement:
    """Atomic: a reader sees the old slice or the new one. Refused by current
    servers when the staging slice is empty; drop_partition empties a day."""
    return (f"ALTER TABLE {_name(database, table)} REPLACE PARTITION {_partition(date, window_days)}"
            f" FROM {_name(database, staging)}"), None


def drop_partition(database: str, table: str, date: dt.date, window_days: int) -> Statement:
    return f"ALTER TABLE {_name(database, table)} DROP PARTITION {_partition(date, window_days)}", None


def day_counts(database: str, table: str, dates: Iterable[dt.date], window_days: int) -> Statement:
    """(processing_date, rows) of several days of one table."""
    return (f"SELECT processing_date, count() FROM {_name(database, table)}"
            " WHERE processing_date IN %(dates)s AND window_days = %(window_days)s"
            " GROUP BY processing_date ORDER BY processing_date",
            {"dates": tuple(dates), "window_days": int(window_days)})


def count_rows(database: str, name: str) -> Statement:
    return f"SELECT count() FROM {_name(database, name)}", None


def staging_tables(database: str) -> Statement:
    """(name, age in seconds by the server's clock) of the staging tables."""
    return ("SELECT name, toInt64(toUInt32(now())) - toUInt32(metadata_modification_time) FROM system.tables"
            " WHERE database = %(database)s AND startsWith(name, %(prefix)s) ORDER BY name",
            {"database": database, "prefix": STAGING_PREFIX})


def add_column(database: str, table: str, column: str, type_: str, cluster: str | None = None) -> Statement:
    return (f"ALTER TABLE {_name(database, table)}{_on_cluster(cluster)}"
            f" ADD COLUMN {quote_identifier(column)} {type_}"), None


def loaded_days(database: str, network: str, dates: Iterable[dt.date], window_days: int) -> Statement:
    """(processing_date, table_name, rows) of every table whose latest marker
    row says loaded, for several days of one network and window."""
    return (
        f"SELECT processing_date, table_name, argMax(rows, version) FROM {_name(database, MARKER_TABLE)}"
        " WHERE network = %(network)s AND processing_date IN %(dates)s AND window_days = %(window_days)s"
        " GROUP BY processing_date, table_name HAVING argMax(loaded, version) = 1"
        " ORDER BY processing_date, table_name",
        {"network": network, "dates": tuple(dates), "window_days": int(window_days)},
    )


def server_timezone() -> Statement:
    """The server's time zone, which its DateTime values are read in."""
    return "SELECT timezone()", None


def table_columns(database: str, table: str) -> Statement:
    """(name, type) of each column of a table (none when it is missing)."""
    return ("SELECT name, type FROM system.columns WHERE database = %(database)s AND table = %(table)s",
            {"database": database, "table": table})


def _newest(database: str, table: str, where: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """FROM the newest version of each row of a ReplacingMergeTree table (the
    SOT's) whose `where` columns hold those values ({column: value}).

    FINAL, not argMax(..., _version) ... GROUP BY: FINAL deduplicates by the
    table's own ORDER BY key, which is what ReplacingMergeTree replaces rows
    by (argMax would need that key spelled out here, and the server would
    hold every group of the day in memory), and it streams the merged parts
    in key order, so the server's memory stays flat. It is exact here: the
    `where` columns are key columns, so no version of a row is filtered out
    before the merge, and the SOT's partition expressions are of key
    columns, so all versions of a row are in one partition (FINAL merges
    within a partition). 18.16 and current servers both have it."""
    condition = " AND ".join(f"{quote_identifier(column)} = %({column})s" for column in where)
    return f" FROM {_name(database, table)} FINAL WHERE {condition}", dict(where)


def newest_rows(database: str, table: str, columns: Iterable[tuple[str, str | None]],
                where: Mapping[str, Any]) -> Statement:
    """The columns ((name, type), ...) of the newest version of each row of
    `table` that matches `where` (see _newest), each CAST to its type where
    the table's differs (a current SOT's Bool flags, say); not aliased,
    which 18.16 would take for a cycle when the column is in `where` too."""
    selected = ", ".join(quote_identifier(name) if cast is None else f"CAST({quote_identifier(name)} AS {cast})"
                         for name, cast in columns)
    source, params = _newest(database, table, where)
    return f"SELECT {selected}{source}", params


def newest_count(database: str, table: str, where: Mapping[str, Any]) -> Statement:
    """How many rows newest_rows gives."""
    source, params = _newest(database, table, where)
    return f"SELECT count(){source}", params
