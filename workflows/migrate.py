"""`python -m workflows migrate`: a network's tables made by the system this
pipeline replaces (month partitions, another order), rebuilt in the
pipeline's layout with every row, so that days can be swapped in."""
from . import clickhouse, sql
from .layout import layout_differences, migrated_layout
from .schema import TABLES

NEW_SUFFIX = "__migrating"  # the rebuilt table, until it is swapped in
OLD_SUFFIX = "__before_migration"  # the original, after the swap, until its rows are counted again


class MigrationFailed(RuntimeError):
    """The copy does not hold the original's rows; nothing was swapped."""


def migrate(ch, database, dry_run=False, say=print):
    """Rebuilds each table of `database` that cannot take a day swap: a new
    table in the pipeline's layout (the original's Bool flags and skip
    indexes kept), every row copied and counted, the two swapped, the
    original dropped once the swapped-in table holds its rows. Safe to run
    again: a table in the layout is left alone, and a copy left by a run
    that stopped is dropped and made again. Returns the tables rebuilt (or,
    with `dry_run`, that would be)."""
    served = clickhouse.served_tables(ch, database)
    rebuilt = []
    for name, table in TABLES.items():
        if name not in served:
            say(f"{database}.{name}: not there; the first run creates it")
            continue
        drop_leftover(ch, database, name, served)
        differences = layout_differences(table, served[name])
        if not differences:
            say(f"{database}.{name}: already in the pipeline's layout")
            continue
        rows = clickhouse.count_all_rows(ch, database, name)
        if dry_run:
            say(f"{database}.{name}: would rebuild ({'; '.join(differences)}), copying {rows:,} rows")
        else:
            held = {column for column, _ in served[name].columns}
            rebuild(ch, database, migrated_layout(table, served[name]), [c for c in table.column_names if c in held],
                    rows)
            say(f"{database}.{name}: rebuilt ({'; '.join(differences)}); {rows:,} rows copied and counted;"
                " the original dropped")
        rebuilt.append(name)
    return rebuilt


def drop_leftover(ch, database, name, served):
    """The copy of a migration that stopped before its swap. An original left
    after a swap is dropped only once the table holds as many rows."""
    ch.execute(*sql.drop_table(database, name + NEW_SUFFIX))
    old = name + OLD_SUFFIX
    if clickhouse.listed(ch, sql.served_tables(database, [old])) and \
            clickhouse.count_all_rows(ch, database, old) == clickhouse.count_all_rows(ch, database, name):
        ch.execute(*sql.drop_table(database, old))


def rebuild(ch, database, table, columns, rows):
    """`table` made anew beside the original, its `columns` copied (the others take their DEFAULT), swapped in."""
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
