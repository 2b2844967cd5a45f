"""`python -m workflows migrate`: a network's tables made by the system this
pipeline replaces (month partitions, another order), rebuilt in the
pipeline's layout with every row, so that days can be swapped in."""
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import clickhouse, sql
from .layout import ServedTable, layout_differences, migrated_layout
from .schema import SCHEMAS, Table

NEW_SUFFIX = "__migrating"  # the rebuilt table, until it is swapped in
OLD_SUFFIX = "__before_migration"  # the original, after the swap, until its rows are counted again


class MigrationFailed(RuntimeError):
    """The copy does not hold the original's rows; nothing was swapped."""


@dataclass(frozen=True)
class Rebuild:
    """A table of the replaced system's layout, to be made anew in the pipeline's."""

    table: Table  # in the pipeline's layout, the original's Bool flags and skip indexes kept
    columns: list[str]  # the original's columns that the copy takes (the others take their DEFAULT)
    rows: int
    differences: list[str]


def planned_rebuilds(ch: Any, database: str, say: Callable[[str], None] = print) -> list[Rebuild]:
    """The tables of `database` that cannot take a day swap, saying why the
    others are left alone; the copy a stopped run left is dropped first."""
    served = clickhouse.served_tables(ch, database)
    planned = []
    for name, table in SCHEMAS.items():
        if name not in served:
            say(f"{database}.{name}: not there; the first run creates it")
            continue
        drop_leftover(ch, database, name, served)
        differences = layout_differences(table, served[name])
        if not differences:
            say(f"{database}.{name}: already in the pipeline's layout")
            continue
        held = {column for column, _ in served[name].columns}
        planned.append(Rebuild(migrated_layout(table, served[name]), [c for c in table.column_names if c in held],
                               clickhouse.count_all_rows(ch, database, name), differences))
    return planned


def dry_run(ch: Any, database: str, say: Callable[[str], None] = print) -> list[str]:
    """Says what migrate() would rebuild, changing nothing but a stopped run's leftover copy."""
    plans = planned_rebuilds(ch, database, say)
    for plan in plans:
        say(f"{database}.{plan.table.name}: would rebuild ({'; '.join(plan.differences)}), copying {plan.rows:,}"
            " rows")
    return [plan.table.name for plan in plans]


def migrate(ch: Any, database: str, say: Callable[[str], None] = print) -> list[str]:
    """Rebuilds each table of `database` that cannot take a day swap: a new
    table in the pipeline's layout, every row copied and counted, the two
    swapped, the original dropped once the swapped-in table holds its rows.
    Safe to run again: a table in the layout is left alone, and a copy left
    by a run that stopped is dropped and made again. Returns the tables
    rebuilt."""
    rebuilt = []
    for plan in planned_rebuilds(ch, database, say):
        rebuild(ch, database, plan)
        say(f"{database}.{plan.table.name}: rebuilt ({'; '.join(plan.differences)}); {plan.rows:,} rows copied and"
            " counted; the original dropped")
        rebuilt.append(plan.table.name)
    return rebuilt


def drop_leftover(ch: Any, database: str, name: str, served: dict[str, ServedTable]) -> None:
    """The copy of a migration that stopped before its swap. An original left
    after a swap is dropped only once the table holds as many rows."""
    ch.execute(*sql.drop_table(database, name + NEW_SUFFIX))
    old = name + OLD_SUFFIX
    if clickhouse.query_tables_retrying(ch, sql.served_tables(database, [old])) and \
            clickhouse.count_all_rows(ch, database, old) == clickhouse.count_all_rows(ch, database, name):
        ch.execute(*sql.drop_table(database, old))


def rebuild(ch: Any, database: str, plan: Rebuild) -> None:
    """The table made anew beside the original, the planned columns copied, swapped in."""
    table, columns, rows = plan.table, plan.columns, plan.rows
    new = table.name + NEW_SUFFIX
    ch.execute(*sql.create_table(database, table, new))
    ch.execute(*sql.copy_rows(database, table.name, new, columns))
    copied = clickhouse.count_all_rows(ch, database, new)
    if copied != rows:
        ch.execute(*sql.drop_table(database, new))
        raise MigrationFailed(f"{database}.{table.name}: the copy holds {copied:,} rows, the table {rows:,}"
                              " (written to meanwhile?); nothing was swapped")
    clickhouse.swap_tables(ch, database, table.name, new)
    ch.execute(*sql.rename_tables(database, [(new, table.name + OLD_SUFFIX)]))
    if clickhouse.count_all_rows(ch, database, table.name) != rows:
        raise MigrationFailed(f"{database}.{table.name}: swapped in without all {rows:,} rows; the original is"
                              f" kept as {table.name + OLD_SUFFIX}")
    ch.execute(*sql.drop_table(database, table.name + OLD_SUFFIX))
