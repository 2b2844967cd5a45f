"""`python -m workflows migrate`: a network's tables made by the system this
pipeline replaces (month partitions, another order), rebuilt in the
pipeline's layout with every row, so that days can be swapped in."""
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import clickhouse, sql
from .layout import ServedTable, layout_differences, migrated_layout
from .schema import SCHEMAS, Table

NEW_SUFFIX = "__migrating"  # the rebuilt table until it is swapped in; the original between the swap and a rename
OLD_SUFFIX = "__before_migration"  # the original, after the swap, until its rows are counted again


class MigrationFailed(RuntimeError):
    """A count differs: the copy does not hold the original's rows (nothing
    was swapped), or the original a stopped run left after its swap does
    not match the table (both kept)."""


@dataclass(frozen=True)
class Rebuild:
    """A table of the replaced system's layout, to be made anew in the pipeline's."""

    table: Table  # in the pipeline's layout, the original's Bool flags and skip indexes kept
    columns: list[str]  # the original's columns that the copy takes (the others take their DEFAULT)
    rows: int
    differences: list[str]


@dataclass(frozen=True)
class Leftover:
    """A table a migration that stopped left beside the one it was made for."""

    name: str
    live: str  # the table it was made for
    rows: int
    live_rows: int
    copy: bool  # the copy made before the swap (the original still live); else the original, left after it

    def droppable(self) -> bool:
        # the live table was counted equal to the original before the swap: equal counts mean no row is lost
        return self.copy or self.rows == self.live_rows


def planned_rebuilds(ch: Any, database: str, say: Callable[[str], None], dry: bool) -> list[Rebuild]:
    """The tables of `database` that cannot take a day swap, saying why the
    others are left alone; what a stopped run left is settled first (with
    `dry`, only said)."""
    served = clickhouse.served_tables(ch, database)
    settle_leftovers(ch, database, served, say, dry)
    planned = []
    for name, table in SCHEMAS.items():
        if name not in served:
            say(f"{database}.{name}: not there; the first run creates it")
            continue
        differences = layout_differences(table, served[name])
        if not differences:
            say(f"{database}.{name}: already in the pipeline's layout")
            continue
        held = {column for column, _ in served[name].columns}
        planned.append(Rebuild(migrated_layout(table, served[name]), [c for c in table.column_names if c in held],
                               clickhouse.count_all_rows(ch, database, name), differences))
    return planned


def dry_run(ch: Any, database: str, say: Callable[[str], None] = print) -> list[str]:
    """Says what migrate() would rebuild and do with what a stopped run left, changing nothing."""
    plans = planned_rebuilds(ch, database, say, dry=True)
    for plan in plans:
        say(f"{database}.{plan.table.name}: would rebuild ({'; '.join(plan.differences)}), copying {plan.rows:,}"
            " rows")
    return [plan.table.name for plan in plans]


def migrate(ch: Any, database: str, say: Callable[[str], None] = print) -> list[str]:
    """Rebuilds each table of `database` that cannot take a day swap: a new
    table in the pipeline's layout, every row copied and counted, the two
    swapped, the original dropped once the swapped-in table holds its rows.
    Safe to run again: a table in the layout is left alone; of what a run
    that stopped left, a copy not yet swapped in is dropped and made again,
    and the original after the swap is dropped only when the table holds as
    many rows (else MigrationFailed, nothing dropped). Returns the tables
    rebuilt."""
    rebuilt = []
    for plan in planned_rebuilds(ch, database, say, dry=False):
        rebuild(ch, database, plan)
        say(f"{database}.{plan.table.name}: rebuilt ({'; '.join(plan.differences)}); {plan.rows:,} rows copied and"
            " counted; the original dropped")
        rebuilt.append(plan.table.name)
    return rebuilt


def settle_leftovers(ch: Any, database: str, served: dict[str, ServedTable], say: Callable[[str], None],
                     dry: bool) -> None:
    """Drops each table a stopped run left once no row can be lost, saying
    so in a line; with `dry` only says what it would do. An original whose
    count differs from the table's is refused before anything is dropped."""
    found = leftovers(ch, database, served)
    refused = [leftover for leftover in found if not leftover.droppable()]
    if refused and not dry:
        raise MigrationFailed(f"refused: {refusal(database, refused[0])}")
    for leftover in found:
        if not leftover.droppable():
            say(f"would refuse: {refusal(database, leftover)}")
            continue
        if not dry:
            clickhouse.drop_table(ch, database, leftover.name)
        verb = "would drop" if dry else "dropped"
        say(f"{database}.{leftover.name}: {verb} leftover, {described(database, leftover)}")


def leftovers(ch: Any, database: str, served: dict[str, ServedTable]) -> list[Leftover]:
    """The tables stopped migrations left beside the served ones, each counted with its table."""
    made_for = {name + suffix: name for name in served for suffix in (NEW_SUFFIX, OLD_SUFFIX)}
    if not made_for:
        return []
    present = {name for name, *_ in clickhouse.query_tables_retrying(ch, sql.served_tables(database, made_for))}
    return [Leftover(name, live, clickhouse.count_all_rows(ch, database, name),
                     clickhouse.count_all_rows(ch, database, live),
                     # the table still in the replaced system's layout: the swap did not happen, it is the original
                     copy=name.endswith(NEW_SUFFIX) and bool(layout_differences(SCHEMAS[live], served[live])))
            for name, live in made_for.items() if name in present]


def described(database: str, leftover: Leftover) -> str:
    if leftover.copy:
        return (f"the copy a stopped run made before its swap ({leftover.rows:,} rows; the original"
                f" {database}.{leftover.live} holds {leftover.live_rows:,} and is kept)")
    return (f"the original a stopped run left after its swap ({leftover.rows:,} rows, the migrated"
            f" {database}.{leftover.live} holds {leftover.live_rows:,})")


def refusal(database: str, leftover: Leftover) -> str:
    return (f"{database}.{leftover.name} (the original a stopped run left after its swap) holds {leftover.rows:,}"
            f" rows, the migrated {database}.{leftover.live} {leftover.live_rows:,}; both kept: drop"
            f" {leftover.name} by hand once {leftover.live} holds every row it should (days loaded since add"
            " rows), then run migrate again")


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
