"""A database made by the system this pipeline replaces: refused in one line
before any load, migrated without losing a row (on 18.16 here; on 26.x with
its Bool flags and skip indexes in test_conformance.py), then loaded."""
import datetime as dt
import os
import subprocess
import sys

from devkit.sample import make_snapshot
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
