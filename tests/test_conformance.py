"""Every statement the product sends, and every byte its loader puts on the
wire, on both server generations: clickhouse-server 18.16 (Debian's) and the
current 26.x engine (chdb-core, in this process). The product's functions run
unchanged on either; only the transport of the Native blocks differs (the TCP
protocol on 18.16, a Native-format file on 26.x), and both carry the bytes of
native.native_block."""
import inspect
import io
import time
import uuid
from decimal import Decimal

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from clickhouse_driver import Client

from devkit import sample
from devkit.producer import ProducerDay
from devkit.sample import make_snapshot, write_snapshot
from targets import ClickHouseMarkerTarget
from targets.clickhouse_marker import MARKER_COLUMNS, MARKER_COLUMNS_ADDED
from workflows import clickhouse, leases, loader, sql
from workflows.migrate import migrate
from workflows.schema import SCHEMAS, TABLES
from workflows.slices import Slice
from workflows.sources import sot_clickhouse
from workflows.state import loaded_days

from common import DATE, OTHER_DATE, WINDOW
from engines import Engine26, Server1816
from original_ddl import create_original

NETWORK = "ethereum"
# Decimal128(18) holds 38 digits; spelled out, since Python's arithmetic rounds to 28
DECIMAL_MAX = Decimal("99999999999999999999.999999999999999999")
DECIMAL_MIN = Decimal("-99999999999999999999.999999999999999999")
TEXT = "Ωμέγα 中文 🙂 naïve"


@pytest.fixture(scope="module")
def engine26(tmp_path_factory):
    return Engine26(str(tmp_path_factory.mktemp("chdb")))


@pytest.fixture(scope="module")
def server1816(servers):
    return Server1816(Client("127.0.0.1", port=servers.clickhouse_port), servers.clickhouse_http_port)


@pytest.fixture(params=["18.16", "26.x"])
def engine(request):
    return request.getfixturevalue("server1816" if request.param == "18.16" else "engine26")


def new_database():
    return f"conformance_{uuid.uuid4().hex[:8]}"


def test_the_current_engine_is_26_6_or_later(engine26):
    """26.6 is the first release that refuses REPLACE PARTITION from an empty source."""
    major, minor = (int(part) for part in engine26.version().split(".")[:2])
    assert (major, minor) >= (26, 6)


def into(engine, database, table):
    return clickhouse.Destination(engine, database, SCHEMAS[table])


def load(engine, database, table, path, date=DATE, allow_empty=False):
    return loader.DayLoad(into(engine, database, table), Slice(NETWORK, date, WINDOW), allow_empty,
                          engine.insert_native).load(path)


def counted(engine, database, table, date=DATE):
    return clickhouse.count_day_rows(into(engine, database, table), Slice(NETWORK, date, WINDOW))


def zero_row_file(tmp_path, table, date):
    """A file of `table` with no rows, as the SOT writes a table without rows that day."""
    empty = make_snapshot(NETWORK, date, WINDOW, 10)[table].slice(0, 0)
    return write_snapshot(str(tmp_path / f"empty-{table}"), NETWORK, date, WINDOW,
                          {t: empty if t == table else make_snapshot(NETWORK, date, WINDOW, 10)[t] for t in TABLES})


def scenario(engine, tmp_path):
    """Every operation the product performs on ClickHouse, as one day's
    loads, a reload, zero-row days, markers, status and the staging sweep do
    them; returns what each observable step gave."""
    database = new_database()
    seen = {"ping": engine.execute(*sql.ping()), "exists before": clickhouse.database_exists(engine, database)}
    clickhouse.ensure_schema(engine, database)
    seen["exists after"] = clickhouse.database_exists(engine, database)
    clickhouse.ensure_schema(engine, database)  # a second run changes nothing
    seen["tables"] = engine.execute(
        "SELECT name, engine FROM system.tables WHERE database = %(d)s ORDER BY name", {"d": database})
    seen["table names"] = sorted(name for (name,) in engine.execute(*sql.table_names(database)))

    folder = write_snapshot(str(tmp_path / "sot"), NETWORK, DATE, WINDOW, make_snapshot(NETWORK, DATE, WINDOW, 300))
    seen["loaded"] = {t: load(engine, database, t, f"{folder}/{t}.parquet") for t in TABLES}
    seen["reloaded"] = {t: load(engine, database, t, f"{folder}/{t}.parquet") for t in TABLES}
    seen["counts"] = {t: counted(engine, database, t) for t in TABLES}

    # as VerifyChecksums stages a file for its download and LoadTable swaps it in
    download, day = uuid.uuid4().hex, Slice(NETWORK, DATE, WINDOW)
    alerts = loader.DayLoad(into(engine, database, "raw_alerts"), day, insert=engine.insert_native)
    for _ in range(2):  # two runs staged the same download; the second stage is left over
        with clickhouse.staging_table(alerts.into, day) as staging:
            rows = alerts.stage(f"{folder}/raw_alerts.parquet", staging)
            clickhouse.keep_staged(alerts.into, staging, day, download)
    seen["staged not found"] = (
        clickhouse.claim_staged(alerts.into, day, "f" * 32, rows),
        clickhouse.claim_staged(into(engine, database, "raw_clusters"), day, download, rows))
    claimed = clickhouse.claim_staged(alerts.into, day, download, rows)
    with clickhouse.dropped_after(engine, database, claimed):
        alerts.swap_in(claimed, rows)
    seen["claimed"] = clickhouse.staging_owner(claimed) == leases.owner()
    seen["left over"] = len(clickhouse.drop_staged(engine, database, day))
    seen["swapped in"] = counted(engine, database, "raw_alerts")

    empty_today = zero_row_file(tmp_path, "raw_clusters", DATE)
    with pytest.raises(loader.FileMismatch, match="has zero rows, but the day holds"):
        load(engine, database, "raw_clusters", f"{empty_today}/raw_clusters.parquet")
    seen["after refused empty"] = counted(engine, database, "raw_clusters")
    seen["allowed empty"] = load(engine, database, "raw_clusters", f"{empty_today}/raw_clusters.parquet",
                                 allow_empty=True)
    seen["after allowed empty"] = counted(engine, database, "raw_clusters")
    empty_other = zero_row_file(tmp_path, "raw_alerts", OTHER_DATE)
    seen["new empty day"] = load(engine, database, "raw_alerts", f"{empty_other}/raw_alerts.parquet", OTHER_DATE)
    seen["other days untouched"] = {t: counted(engine, database, t) for t in TABLES}

    marker = ClickHouseMarkerTarget(engine, database, Slice(NETWORK, DATE, WINDOW), "raw_alerts")
    seen["marker before"] = marker.exists()
    marker.touch(seen["loaded"]["raw_alerts"])
    other_day = Slice(NETWORK, OTHER_DATE, WINDOW)
    ClickHouseMarkerTarget(engine, database, other_day, "raw_features").touch(7)  # rows it lacks
    seen["marker set"] = (marker.exists(), marker.loaded_rows())
    seen["status"] = loaded_days(engine, database, NETWORK, [DATE, OTHER_DATE], WINDOW)
    seen["complete before"] = engine.execute(f"SELECT * FROM {database}.complete_days")
    for table in TABLES:
        day_marker = ClickHouseMarkerTarget(engine, database, Slice(NETWORK, DATE, WINDOW), table)
        day_marker.touch(seen["other days untouched"][table])
    seen["complete after"] = engine.execute(f"SELECT * FROM {database}.complete_days")
    seen["last complete day"] = engine.execute(*sql.last_complete_day(database, NETWORK, WINDOW))
    marker.remove()
    seen["marker removed"] = marker.exists()
    marker.touch(30)
    seen["marker set again"] = marker.loaded_rows()
    seen["versions"] = engine.execute(
        # merges drop older rows
        f"SELECT max(version) FROM {database}.ingestion_markers WHERE table_name = 'raw_alerts'")

    seen["migrated"] = migrated_original(engine, database, folder)
    seen["marker columns added"] = marker_columns_added(engine, database)

    leftover = clickhouse.staging_name("raw_alerts", Slice(NETWORK, DATE, WINDOW))
    engine.execute(*sql.create_table(database, SCHEMAS["raw_alerts"], leftover))
    seen["fresh staging kept"] = clickhouse.sweep_staging(engine, database)
    time.sleep(1.1)
    seen["stale staging swept"] = clickhouse.sweep_staging(engine, database, max_age_seconds=0) == [leftover]
    seen["tables at the end"] = engine.execute(
        "SELECT name FROM system.tables WHERE database = %(d)s ORDER BY name", {"d": database})
    seen["rows"] = {t: engine.execute(
        f"SELECT {', '.join(c.name for c in SCHEMAS[t].columns if c.name != 'created_at')}"
        f" FROM {database}.{t} ORDER BY {', '.join(SCHEMAS[t].order_by)}")
                    for t in TABLES}
    engine.execute(f"DROP DATABASE {database}")
    seen.update(sot_scenario(engine))
    return seen


def fill_original(engine, database, folder, tables):
    """The original tables (original_ddl), holding the day's rows of the snapshot in `folder`."""
    create_original(engine, database, modern=engine.generation != "18.16", tables=tables)
    for table in tables:
        source = loader.CheckedParquet(f"{folder}/{table}.parquet", SCHEMAS[table], Slice(NETWORK, DATE, WINDOW))
        statement, _ = sql.insert_rows(database, table, [c.name for c in source.columns])
        engine.insert_native(statement, loader.encoded_blocks(source))


def migrated_original(engine, database, folder):
    """raw_clusters as the replaced system made it, migrated: what was rebuilt, its rows, its partition key."""
    original = f"{database}_original"
    fill_original(engine, original, folder, ["raw_clusters"])
    rebuilt = migrate(engine, original, say=lambda line: None)
    seen = (rebuilt, clickhouse.count_all_rows(engine, original, "raw_clusters"),
            engine.execute("SELECT partition_key FROM system.tables WHERE database = %(d)s", {"d": original}),
            migrate(engine, original, say=lambda line: None))
    engine.execute(f"DROP DATABASE {original}")
    return seen


def marker_columns_added(engine, database):
    """A marker table of the first release (no column accounting) gets the
    new columns at the next ensure_schema; its rows keep theirs."""
    earlier = f"{database}_earlier"
    engine.execute(f"CREATE DATABASE {earlier}")
    first_release = ", ".join(f"{name} {type_}" for name, type_ in MARKER_COLUMNS if (name, type_) not in
                              MARKER_COLUMNS_ADDED)
    engine.execute(f"CREATE TABLE {earlier}.ingestion_markers ({first_release}) ENGINE = ReplacingMergeTree(version)"
                   " ORDER BY (network, processing_date, window_days, table_name)")
    clickhouse.ensure_schema(engine, earlier)
    marker = ClickHouseMarkerTarget(engine, earlier, Slice(NETWORK, DATE, WINDOW), "raw_alerts")
    marker.touch(5, (["extra"], ["severity"]))
    seen = engine.execute(f"SELECT rows, ignored_columns, defaulted_columns FROM {earlier}.ingestion_markers")
    engine.execute(f"DROP DATABASE {earlier}")
    return seen


def sot_scenario(engine):
    """A day exported from the SOT's own tables, as DownloadSOT and publish
    do it: rows in two versions (merges stopped, so both are there), and
    another network's labels."""
    sot = new_database()
    sample.create_sot_tables(engine, sot)
    for name in sot_clickhouse.SOT_TABLES.values():
        engine.execute(f"SYSTEM STOP MERGES {sot}.{name}")
    snapshot = make_snapshot(NETWORK, DATE, WINDOW, 300)
    sample.fill_sot_database(engine, sot, snapshot, insert=engine.insert_native)
    sample.fill_sot_database(engine, sot, {"raw_address_labels": make_snapshot("bitcoin", DATE, WINDOW, 100)[
        "raw_address_labels"]}, insert=engine.insert_native)
    day = sot_clickhouse.SotDay(engine, sot, Slice(NETWORK, DATE, WINDOW))
    seen = {"sot versions held": {t: engine.execute(f"SELECT count() FROM {sot}.{name}")[0][0]
                                  for t, name in sot_clickhouse.SOT_TABLES.items()},
            "sot counts": {t: day.count(t) for t in TABLES},
            "sot exported": {t: exported_rows(day, t) for t in TABLES},
            "sot timezone named": bool(engine.execute(*sql.server_timezone())[0][0])}
    seen["sot exported as published"] = {t: seen["sot exported"][t] == published_rows(snapshot[t], t) for t in TABLES}
    engine.execute(f"DROP DATABASE {sot}")
    return seen


def exported_rows(day, table):
    """The table as the SOT export writes it: its Parquet rows, sorted."""
    out = sot_clickhouse.HashingWriter(io.BytesIO())
    day.export_table(table, out)
    exported = pq.read_table(pa.BufferReader(out.out.getvalue()))
    return sorted(tuple(row.values()) for row in exported.to_pylist())


def published_rows(arrow_table, table):
    """The newest version of each row filled in: the sample's rows, in the
    columns the SOT's table has (no created_at; labels without the day), sorted."""
    columns = [c.name for c in sample.sot_columns(table) if c.name in SCHEMAS[table].column_names]
    return sorted(tuple(row[c] for c in columns) for row in arrow_table.select(columns).to_pylist())


def test_every_statement_gives_the_same_results_on_both_generations(server1816, engine26, tmp_path, monkeypatch):
    old = scenario(server1816, tmp_path / "old")

    statements = {name for name, f in inspect.getmembers(sql, inspect.isfunction)
                  if not name.startswith("_") and f.__module__ == sql.__name__}
    ran = set()
    for name in statements:
        def recorded(*args, _name=name, _statement=getattr(sql, name), **kwargs):
            ran.add(_name)
            return _statement(*args, **kwargs)
        monkeypatch.setattr(sql, name, recorded)
    current = scenario(engine26, tmp_path / "current")

    assert ran == statements, f"not exercised on 26.x: {sorted(statements - ran)}"
    assert current == old
    assert old["ping"] == [(1,)]
    assert (old["exists before"], old["exists after"]) == (False, True)
    assert [name for name, _ in old["tables"]] == sorted([*TABLES, "complete_days", "ingestion_markers"])
    assert {engine for _, engine in old["tables"]} == {"MergeTree", "ReplacingMergeTree", "View"}
    assert old["table names"] == [name for name, _ in old["tables"]]
    assert old["loaded"] == old["reloaded"] == old["counts"] == {
        "raw_features": 300, "raw_alerts": 30, "raw_clusters": 3, "raw_address_labels": 15}
    assert old["staged not found"] == (None, None) and old["claimed"] is True and old["swapped in"] == 30
    assert old["left over"] == 1
    assert old["after refused empty"] == 3 and old["allowed empty"] == 0 and old["after allowed empty"] == 0
    assert old["new empty day"] == 0 and old["other days untouched"] == dict(old["counts"], raw_clusters=0)
    assert old["marker before"] is False and old["marker set"] == (True, 30) and old["marker removed"] is False
    assert old["status"] == {DATE: {"raw_alerts": 30}}  # OTHER_DATE's raw_features holds no 7 rows
    assert old["complete before"] == [] and old["complete after"] == [(NETWORK, DATE, WINDOW)]
    assert old["last complete day"] == [(DATE,)]
    assert old["marker set again"] == 30 and old["versions"] == [(4,)]
    assert old["fresh staging kept"] == [] and old["stale staging swept"] is True
    assert [name for (name,) in old["tables at the end"]] == sorted([*TABLES, "complete_days", "ingestion_markers"])
    assert old["migrated"] == (["raw_clusters"], 3, [("(processing_date, window_days)",)], [])
    assert old["marker columns added"] == [(5, ["extra"], ["severity"])]

    superseded = sample.SUPERSEDED_ROWS
    assert old["sot versions held"] == {"raw_features": 300 + superseded, "raw_alerts": 30 + superseded,
                                        "raw_clusters": 3 + superseded, "raw_address_labels": 15 + 5 + 2 * superseded}
    assert old["sot counts"] == {"raw_features": 300, "raw_alerts": 30, "raw_clusters": 3, "raw_address_labels": 15}
    assert {t: len(rows) for t, rows in old["sot exported"].items()} == old["sot counts"]
    assert old["sot exported as published"] == {t: True for t in TABLES}  # the newest versions, this network's labels
    assert old["sot timezone named"] is True


def migrated_old_system(engine, tmp_path):
    """A database of the replaced system (on 26.x: Bool flags, skip indexes),
    filled with a day and migrated; returns its name."""
    database = new_database()
    folder = write_snapshot(str(tmp_path), NETWORK, DATE, WINDOW, make_snapshot(NETWORK, DATE, WINDOW, 300))
    fill_original(engine, database, folder, list(TABLES))
    held = {t: clickhouse.count_all_rows(engine, database, t) for t in TABLES}
    with pytest.raises(clickhouse.LayoutMismatch, match="cannot take a day swap"):
        clickhouse.ensure_schema(engine, database)

    assert migrate(engine, database, say=lambda line: None) == list(TABLES)

    assert {t: clickhouse.count_all_rows(engine, database, t) for t in TABLES} == held
    clickhouse.ensure_schema(engine, database)  # the layout now takes day swaps
    return database


def test_a_database_of_the_old_system_migrated_keeps_bool_and_skip_indexes_and_takes_a_day(engine, tmp_path):
    """On 26.x the replaced system's tables have Bool flags and skip indexes:
    the migration keeps both, and a day staged from UInt8 swaps in."""
    database = migrated_old_system(engine, tmp_path)
    modern = engine.generation != "18.16"
    [(flag_type,)] = engine.execute(f"SELECT type FROM system.columns WHERE database = '{database}'"
                                    " AND table = 'raw_features' AND name = 'is_whale'")
    assert flag_type == ("Bool" if modern else "UInt8")
    if modern:
        assert engine.execute(f"SELECT table, name FROM system.data_skipping_indices WHERE database = '{database}'"
                              " ORDER BY table, name") == [
            ("raw_address_labels", "idx_network"), ("raw_alerts", "idx_address"),
            ("raw_alerts", "idx_processing_date"), ("raw_clusters", "idx_cluster_id"),
            ("raw_features", "idx_is_whale"), ("raw_features", "idx_window_days")]
    again = write_snapshot(str(tmp_path / "again"), NETWORK, DATE, WINDOW, make_snapshot(NETWORK, DATE, WINDOW, 200))
    assert load(engine, database, "raw_features", f"{again}/raw_features.parquet") == 200
    assert counted(engine, database, "raw_features") == 200
    engine.execute(f"DROP DATABASE {database}")


def test_a_database_of_the_old_system_migrated_takes_a_producer_day_with_its_flags(engine, tmp_path):
    """The producer's features.parquet (Parquet bool flags, int64 integers, as
    pandas writes them) swaps into the migrated table (Bool flags on 26.x,
    UInt8 on 18.16) with every flag as the producer wrote it."""
    database = migrated_old_system(engine, tmp_path)
    day = ProducerDay(str(tmp_path / "producer"), NETWORK, DATE, WINDOW, feature_rows=200).write()
    flags = [c.name for c in SCHEMAS["raw_features"].columns if c.name.startswith("is_")]
    rows = sorted(day.rows["raw_features"], key=lambda row: row["address"])
    expected = [(row["address"], *(bool(row[flag]) for flag in flags)) for row in rows]
    assert all(any(row[i] for row in expected) and not all(row[i] for row in expected)
               for i in range(1, len(flags) + 1))  # each flag both True and False: a lost flag shows

    assert load(engine, database, "raw_features", f"{day.folder}/features.parquet") == 200

    held = engine.execute(f"SELECT address, {', '.join(flags)} FROM {database}.raw_features"
                          f" WHERE processing_date = '{DATE.isoformat()}' AND window_days = {WINDOW}"
                          " ORDER BY address")
    assert [(address, *(bool(value) for value in values)) for address, *values in held] == expected
    engine.execute(f"DROP DATABASE {database}")


def test_a_zero_row_day_fails_with_replace_partition_on_the_current_engine(engine26):
    """Why swap_day drops the partition for an empty day: 26.6+ refuses the swap."""
    database = new_database()
    clickhouse.ensure_schema(engine26, database)
    alerts, day = into(engine26, database, "raw_alerts"), Slice(NETWORK, DATE, WINDOW)
    with clickhouse.staging_table(alerts, day) as staging:
        with pytest.raises(RuntimeError, match="REPLACE PARTITION"):
            engine26.execute(*sql.replace_partition(database, "raw_alerts", staging, DATE, WINDOW))
        clickhouse.swap_day(alerts, staging, day, 0)


def edge_snapshot(date=DATE):
    """A day whose files carry what a loader can get wrong: Decimal128(18) at
    both ends of its range, empty and long arrays, non-ASCII text, nulls in
    columns that have a default. write_snapshot adds int64 integers."""
    tables = {}
    for name, table in make_snapshot(NETWORK, date, WINDOW, 1000).items():
        schema = SCHEMAS[name]
        for i, field in enumerate(table.schema):
            column = next(c for c in schema.columns if c.name == field.name)
            values = table.column(i).to_pylist()
            if pa.types.is_decimal(field.type):
                values[:4] = [DECIMAL_MAX, DECIMAL_MIN, Decimal("-0.000000000000000001"), Decimal(0)]
            elif pa.types.is_list(field.type):
                long = [TEXT * 3] * 1000 if pa.types.is_string(field.type.value_type) else list(range(1000))
                values[:2] = [[], long]
            elif pa.types.is_string(field.type) and field.name != "network":
                values[3] = f"{TEXT} {values[3]}"
            if column.default is not None and column.default != "now()":
                values[5] = None
            table = table.set_column(i, field, pa.array(values, field.type))
        tables[name] = table
    return tables


def expected_rows(table, arrow_table):
    """The file's rows as the table holds them, in the file's columns: nulls
    become the column's default."""
    schema = SCHEMAS[table]
    columns = [c for c in schema.columns if c.name in arrow_table.column_names]
    ordered = arrow_table.sort_by([(key, "ascending") for key in schema.order_by]).to_pylist()
    return [tuple(c.default_value() if row[c.name] is None else row[c.name] for c in columns) for row in ordered]


@pytest.mark.parametrize("table", list(TABLES))
def test_the_loaders_bytes_read_back_row_by_row(engine, table, tmp_path):
    snapshot = edge_snapshot()
    folder = write_snapshot(str(tmp_path), NETWORK, DATE, WINDOW, snapshot, int64_integers=True)
    database = new_database()
    clickhouse.ensure_schema(engine, database)
    assert load(engine, database, table, f"{folder}/{table}.parquet") == snapshot[table].num_rows

    schema = SCHEMAS[table]
    columns = [c.name for c in schema.columns if c.name in snapshot[table].column_names]
    rows = engine.execute(f"SELECT {', '.join(columns)} FROM {database}.{table}"
                          f" ORDER BY {', '.join(schema.order_by)}")
    assert rows == expected_rows(table, snapshot[table])
    engine.execute(f"DROP DATABASE {database}")


@pytest.mark.parametrize("table", list(TABLES))
def test_the_sot_exports_http_reader_reads_row_by_row_what_the_engine_holds(engine, table, tmp_path):
    """FORMAT Native over HTTP, read by sot_http, gives each value as the
    native protocol (18.16) or the engine itself (26.x) does: Decimal128(18)
    at both ends of its range, dates, empty and long arrays, non-ASCII text."""
    folder = write_snapshot(str(tmp_path), NETWORK, DATE, WINDOW, edge_snapshot())
    database = new_database()
    clickhouse.ensure_schema(engine, database)
    load(engine, database, table, f"{folder}/{table}.parquet")

    query = f"SELECT * FROM {database}.{table} ORDER BY {', '.join(SCHEMAS[table].order_by)}"
    rows = engine.http_rows(query)
    assert len(rows) == 1000 // {"raw_features": 1, "raw_alerts": 10, "raw_clusters": 100, "raw_address_labels": 20}[
        table]
    assert rows == engine.execute(query)
    engine.execute(f"DROP DATABASE {database}")


def test_a_current_sots_bool_flags_are_exported_as_the_tables_uint8(engine26):
    """A SOT on a current server declares its is_* flags Boolean (Bool): the
    export has the server CAST them to the table's UInt8."""
    sot = new_database()
    sample.create_sot_tables(engine26, sot)
    flags = [c.name for c in SCHEMAS["raw_features"].columns if c.name.startswith("is_")]
    engine26.execute(f"ALTER TABLE {sot}.analyzers_features " + ", ".join(f"MODIFY COLUMN {f} Bool" for f in flags))
    features = make_snapshot(NETWORK, DATE, WINDOW, 50)["raw_features"]
    sample.fill_sot_database(engine26, sot, {"raw_features": features}, insert=engine26.insert_native)

    exported = exported_rows(sot_clickhouse.SotDay(engine26, sot, Slice(NETWORK, DATE, WINDOW)), "raw_features")

    assert exported == published_rows(features, "raw_features")
    engine26.execute(f"DROP DATABASE {sot}")


@pytest.mark.parametrize("rows", [0, 5, 8, 56, 64, 75])
def test_an_export_holds_every_row_whatever_its_blocks_and_row_groups(engine, rows, monkeypatch):
    """Blocks of 8 rows, row groups of 32: a table that ends on a block, on
    a row group, inside either, or has no rows."""
    monkeypatch.setattr(sot_clickhouse, "EXPORT_BLOCK_ROWS", 8)
    monkeypatch.setattr(sot_clickhouse, "EXPORT_ROW_GROUP_ROWS", 32)
    sot = new_database()
    alerts = make_snapshot(NETWORK, DATE, WINDOW, 1000)["raw_alerts"].slice(0, rows)
    sample.fill_sot_database(engine, sot, {"raw_alerts": alerts}, insert=engine.insert_native)
    out = sot_clickhouse.HashingWriter(io.BytesIO())

    assert sot_clickhouse.SotDay(engine, sot, Slice(NETWORK, DATE, WINDOW)).export_table("raw_alerts", out) == rows

    exported = pq.ParquetFile(pa.BufferReader(out.out.getvalue()))
    groups = [exported.metadata.row_group(i).num_rows for i in range(exported.metadata.num_row_groups)]
    assert sum(groups) == rows and all(n == 32 for n in groups[:-1]) and groups[-1:] <= [32]
    assert sorted(tuple(row.values()) for row in exported.read().to_pylist()) == published_rows(alerts, "raw_alerts")
    engine.execute(f"DROP DATABASE {sot}")
