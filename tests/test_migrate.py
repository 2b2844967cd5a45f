"""A database made by the system this pipeline replaces: refused in one line
before any load, migrated without losing a row (on 18.16 here; on 26.x with
its Bool flags and skip indexes in test_conformance.py), then loaded."""
import datetime as dt
import os
import subprocess
import sys

import pytest

from devkit.sample import make_snapshot
from workflows import migrate
from workflows.schema import TABLES

from common import REPO, RUN_DAILY_LOCAL, WINDOW
from original_ddl import create_original

OLD_DAYS = (dt.date(2024, 9, 30), dt.date(2024, 10, 1))  # loaded by the old system, across a month boundary


def fill_original(pipeline):
    """The original tables of ethereum, holding two days the old system loaded; returns their rows."""
    database = pipeline.database()
    create_original(pipeline.ch, database, modern=False)
    held = {}
    for date in OLD_DAYS:
        for table, rows in make_snapshot("ethereum", date, WINDOW, 300, seed=7).items():
            pipeline.ch.execute(f"INSERT INTO {database}.{table} ({', '.join(rows.column_names)}) VALUES",
                                [tuple(row.values()) for row in rows.to_pylist()])
            held[table] = held.get(table, 0) + rows.num_rows
    return held


def table_contents(pipeline, table):
    """Every row of the table, in a fixed order: what a migration must keep."""
    columns = ", ".join(c for c in ("processing_date", "window_days", "alert_id", "address", "cluster_id", "label",
                                    "total_volume_usd") if c in [n for (n, *_) in pipeline.ch.execute(
                                        f"DESCRIBE TABLE {pipeline.database()}.{table}")])
    return pipeline.ch.execute(f"SELECT {columns} FROM {pipeline.database()}.{table} ORDER BY {columns}")


def migrate_cli(pipeline, *args):
    return subprocess.run([sys.executable, "-m", "workflows", "migrate", "--network", "ethereum", *args], cwd=REPO,
                          env={**os.environ, **pipeline.env}, capture_output=True, text=True,
                          timeout=300)


class Died(Exception):
    """The migrating process, dead between two of its statements."""


class DiesBefore:
    """pipeline.ch, for a migration whose process dies just before the first statement `fatal(query)` picks."""

    def __init__(self, ch, fatal):
        self.ch, self.fatal = ch, fatal

    def execute(self, query, *args, **kwargs):
        if self.fatal(query):
            raise Died(query)
        return self.ch.execute(query, *args, **kwargs)


def is_swap(query):  # two renames in one statement on 18.16 (an Ordinary database), EXCHANGE on current servers
    return query.startswith(("RENAME TABLE", "EXCHANGE TABLES"))


def is_rename_after_swap(query):
    return query.startswith("RENAME TABLE") and migrate.OLD_SUFFIX in query


def die_migrating(pipeline, fatal):
    """migrate() run until its process dies; raw_alerts, the first table, is where it stops."""
    with pytest.raises(Died):
        migrate.migrate(DiesBefore(pipeline.ch, fatal), pipeline.database(), say=lambda line: None)


def held_tables(pipeline):
    """{table: (partition key, rows)} of every table of the database: what a dry run must leave as it was."""
    database = pipeline.database()
    return {name: (partition, pipeline.ch.execute(f"SELECT count() FROM {database}.{name}")[0][0])
            for name, partition in pipeline.ch.execute(
                "SELECT name, partition_key FROM system.tables WHERE database = %(d)s", {"d": database})}


def test_the_original_a_run_left_after_its_swap_is_counted_and_dropped_and_a_dry_run_changes_nothing(pipeline):
    held = fill_original(pipeline)
    before = {t: table_contents(pipeline, t) for t in TABLES}
    die_migrating(pipeline, is_rename_after_swap)  # raw_alerts swapped in, the original left as raw_alerts__migrating
    crashed = held_tables(pipeline)
    assert crashed["raw_alerts__migrating"] == ("toYYYYMM(processing_date)", held["raw_alerts"])
    assert crashed["raw_alerts"] == ("(processing_date, window_days)", held["raw_alerts"])
    leftover = (f"risk_assessment_ethereum.raw_alerts__migrating: {{}} leftover, the original a stopped run left"
                f" after its swap ({held['raw_alerts']:,} rows, the migrated risk_assessment_ethereum.raw_alerts"
                f" holds {held['raw_alerts']:,})")

    dry, migrated = dry_run_then_migrate(pipeline, leftover, crashed, before)

    assert dry.stdout.strip().endswith("would rebuild 3 table(s): raw_features, raw_clusters, raw_address_labels")
    assert migrated.stdout.strip().endswith("rebuilt 3 table(s): raw_features, raw_clusters, raw_address_labels")


def test_an_original_left_after_the_swap_whose_count_differs_is_refused_in_one_line_and_kept(pipeline):
    held = fill_original(pipeline)
    die_migrating(pipeline, is_rename_after_swap)
    later = make_snapshot("ethereum", dt.date(2024, 10, 2), WINDOW, 300, seed=8)["raw_alerts"]  # loaded since
    pipeline.ch.execute(f"INSERT INTO {pipeline.database()}.raw_alerts ({', '.join(later.column_names)}) VALUES",
                        [tuple(row.values()) for row in later.to_pylist()])
    crashed = held_tables(pipeline)
    live = held["raw_alerts"] + later.num_rows
    both = (f"risk_assessment_ethereum.raw_alerts__migrating (the original a stopped run left after its swap) holds"
            f" {held['raw_alerts']:,} rows, the migrated risk_assessment_ethereum.raw_alerts {live:,}; both kept:"
            " drop raw_alerts__migrating by hand once raw_alerts holds every row it should")

    dry = migrate_cli(pipeline, "--dry-run")

    assert dry.returncode == 0, dry.stderr
    assert [line for line in dry.stdout.splitlines() if "raw_alerts__migrating" in line][0].startswith(
        f"would refuse: {both}"), dry.stdout
    assert held_tables(pipeline) == crashed

    refused = migrate_cli(pipeline)

    assert refused.returncode == 1, refused.stdout
    [line] = refused.stderr.splitlines()
    assert line.startswith(f"migrate risk_assessment_ethereum: MigrationFailed: refused: {both}"), line
    assert held_tables(pipeline) == crashed  # nothing dropped, nothing rebuilt


def test_the_copy_a_run_left_before_its_swap_is_dropped_and_made_again_and_a_dry_run_changes_nothing(pipeline):
    held = fill_original(pipeline)
    before = {t: table_contents(pipeline, t) for t in TABLES}
    die_migrating(pipeline, is_swap)  # raw_alerts copied and counted, not swapped in
    crashed = held_tables(pipeline)
    assert crashed["raw_alerts"] == ("toYYYYMM(processing_date)", held["raw_alerts"])
    assert crashed["raw_alerts__migrating"] == ("(processing_date, window_days)", held["raw_alerts"])
    leftover = (f"risk_assessment_ethereum.raw_alerts__migrating: {{}} leftover, the copy a stopped run made before"
                f" its swap ({held['raw_alerts']:,} rows; the original risk_assessment_ethereum.raw_alerts holds"
                f" {held['raw_alerts']:,} and is kept)")

    _, migrated = dry_run_then_migrate(pipeline, leftover, crashed, before)

    assert migrated.stdout.strip().endswith("rebuilt 4 table(s): raw_alerts, raw_features, raw_clusters,"
                                            " raw_address_labels")


def dry_run_then_migrate(pipeline, leftover, crashed, before):
    """`migrate --dry-run` says it would drop the leftover and changes nothing;
    `migrate` drops it, saying so, and keeps every row. Returns both runs."""
    dry = migrate_cli(pipeline, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert leftover.format("would drop") in dry.stdout.splitlines(), dry.stdout
    assert held_tables(pipeline) == crashed  # nothing dropped, nothing rebuilt

    migrated = migrate_cli(pipeline)
    assert migrated.returncode == 0, migrated.stderr
    assert leftover.format("dropped") in migrated.stdout.splitlines(), migrated.stdout
    assert sorted(held_tables(pipeline)) == sorted(TABLES)
    assert {t: table_contents(pipeline, t) for t in TABLES} == before  # every row kept
    return dry, migrated


def test_a_database_of_the_old_system_is_refused_then_migrated_without_losing_a_row_then_loaded(pipeline):
    tables = pipeline.publish()
    held = fill_original(pipeline)
    before = {t: table_contents(pipeline, t) for t in TABLES}

    refused = pipeline.run_cli(*RUN_DAILY_LOCAL)

    assert refused.returncode == 35, refused.stderr[-3000:]  # before any load: the check of the first load
    [line] = [line.split("complete() method: ", 1)[-1] for line in refused.stderr.splitlines()
              if "cannot take a day swap" in line]
    assert line.startswith("risk_assessment_ethereum.raw_alerts (and raw_features, raw_clusters,"
                           " raw_address_labels) cannot take a day swap: partition key (toYYYYMM(processing_date)),"
                           " the pipeline's (processing_date, window_days); order (window_days, processing_date,"
                           " alert_id, typology_type), the pipeline's (processing_date, window_days, alert_id);"
                           " run python -m workflows migrate --network ethereum"), line
    assert "Traceback" not in refused.stderr
    assert {t: table_contents(pipeline, t) for t in TABLES} == before  # nothing loaded, nothing lost

    dry = migrate_cli(pipeline, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "risk_assessment_ethereum.raw_features: would rebuild (partition key (window_days," \
           " toYYYYMM(processing_date))" in dry.stdout
    assert dry.stdout.strip().endswith("would rebuild 4 table(s): raw_alerts, raw_features, raw_clusters,"
                                       " raw_address_labels")
    assert {t: table_contents(pipeline, t) for t in TABLES} == before

    migrated = migrate_cli(pipeline)
    assert migrated.returncode == 0, migrated.stderr
    assert "raw_features: rebuilt (partition key" in migrated.stdout
    assert f"{held['raw_features']:,} rows copied and counted; the original dropped" in migrated.stdout
    assert {t: table_contents(pipeline, t) for t in TABLES} == before  # every row kept
    assert pipeline.ch.execute("SELECT name, partition_key FROM system.tables WHERE database ="
                               " 'risk_assessment_ethereum' AND name LIKE 'raw_%' ORDER BY name") == \
        [(t, "(processing_date, window_days)") for t in sorted(TABLES)]

    again = migrate_cli(pipeline)  # safe to run again
    assert again.returncode == 0 and again.stdout.strip().endswith("rebuilt 0 table(s)"), again.stdout
    assert "raw_alerts: already in the pipeline's layout" in again.stdout

    loaded = pipeline.run_cli(*RUN_DAILY_LOCAL)
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    assert pipeline.counts() == {t: tables[t].num_rows for t in TABLES}
    for date in OLD_DAYS:  # the old system's days untouched by the load
        assert pipeline.counts(date=date) == {t: held[t] // 2 for t in TABLES}
