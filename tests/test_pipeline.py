"""RunDaily end to end against the real servers: what lands, what a second
run does, what deleting one target redoes."""
import datetime as dt
import os
import shutil

import luigi
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from devkit.sample import make_snapshot
from targets import ClickHouseMarkerTarget
from workflows import cli, state
from workflows.pipeline import steps
from workflows.schema import TABLES
from workflows.slices import Slice

from common import DATE, WINDOW, expected_rows


def test_two_networks_load_row_by_row(pipeline):
    published = {network: pipeline.publish(network) for network in ("ethereum", "bitcoin")}

    assert pipeline.run(networks="ethereum,bitcoin")

    for network, tables in published.items():
        for table in TABLES:
            assert pipeline.rows(table, network) == expected_rows(tables[table], table), (network, table)
        assert {t for t, *_ in pipeline.markers(network)} == set(TABLES)
        assert not os.path.exists(pipeline.download_dir(network))  # cleaned up
        assert pipeline.redis.get(f"sot_ingestion:{network}:{DATE}:{WINDOW}:cleanup") == b"done"
    # the Decimal128(18) and array columns came through exactly
    features = pipeline.rows("raw_features", columns=["net_flow_usd", "hourly_activity"])
    assert any(value < 0 for value, _ in features) and all(len(hours) == 24 for _, hours in features)


def test_second_run_changes_nothing(pipeline):
    pipeline.publish()
    assert pipeline.run()
    markers, keys = pipeline.markers(), sorted(pipeline.redis.keys())
    parts = pipeline.ch.execute("SELECT name FROM system.parts WHERE database = 'risk_assessment_ethereum' AND active")
    pipeline.ran.clear()

    assert pipeline.run()

    assert pipeline.ran == []  # every task was already complete
    assert pipeline.markers() == markers
    assert sorted(pipeline.redis.keys()) == keys
    assert pipeline.ch.execute(
        "SELECT name FROM system.parts WHERE database = 'risk_assessment_ethereum' AND active") == parts
    assert not os.path.exists(pipeline.download_dir())


def test_deleted_table_marker_reloads_only_that_table_after_a_fresh_download(pipeline):
    tables = pipeline.publish()
    assert pipeline.run()
    before = {t: v for t, _, _, _, v in pipeline.markers()}
    ClickHouseMarkerTarget(pipeline.ch, "risk_assessment_ethereum", Slice("ethereum", DATE, WINDOW),
                           "raw_alerts").remove()
    pipeline.ran.clear()

    assert pipeline.run()

    ran = sorted(type(t).__name__ + (f"[{t.table}]" if hasattr(t, "table") else "") for t in pipeline.ran)
    assert ran == ["Cleanup", "DownloadSOT", "LoadTable[raw_alerts]", "RunDaily", "ValidateMeta", "VerifyChecksums"]
    after = {}
    for table, _, loaded, rows, version in pipeline.markers():
        after[table] = version
    assert after["raw_alerts"] > before["raw_alerts"]
    assert {t: after[t] for t in TABLES if t != "raw_alerts"} == {t: before[t] for t in TABLES if t != "raw_alerts"}
    assert pipeline.rows("raw_alerts") == expected_rows(tables["raw_alerts"], "raw_alerts")
    assert not os.path.exists(pipeline.download_dir())


def staging_tables(pipeline):
    return [name for (name,) in pipeline.ch.execute(
        "SELECT name FROM system.tables WHERE startsWith(name, '_staging_') ORDER BY name")]


def check_and_stage(pipeline):
    """The day up to VerifyChecksums, which stages every file for its load."""
    luigi.task_register.Register.clear_instance_cache()
    assert luigi.build([steps.VerifyChecksums("ethereum", DATE, WINDOW)], local_scheduler=True, log_level="WARNING")


def test_each_file_is_decoded_once_the_loads_swap_in_what_verify_checksums_staged(pipeline):
    tables = pipeline.publish()
    check_and_stage(pipeline)
    download = open(os.path.join(pipeline.download_dir(), state.DOWNLOAD_STAMP)).read()
    staged = staging_tables(pipeline)
    assert sorted(name.split("_20241030_")[0] for name in staged) == sorted(f"_staging_{t}" for t in TABLES)
    assert {name.split("_")[-2] for name in staged} == {f"d{download[:12]}"}  # kept for the download
    assert pipeline.counts() == {t: 0 for t in TABLES}
    # the loads decode nothing: with the features file's data pages zeroed
    # (its footer kept), they still load exactly the rows staged from it
    path = os.path.join(pipeline.download_dir(), "raw_features.parquet")
    with open(path, "r+b") as stream:
        stream.seek(-8, os.SEEK_END)
        footer = int.from_bytes(stream.read(4), "little")
        size = stream.seek(0, os.SEEK_END)
        stream.seek(4)
        stream.write(bytes(size - 8 - footer - 4))

    assert pipeline.run()

    for table in TABLES:
        assert pipeline.rows(table) == expected_rows(tables[table], table), table
    assert staging_tables(pipeline) == []


def test_a_load_whose_staged_table_is_gone_loads_its_file(pipeline):
    """As when the sweep took it, or the worker now talks to another replica."""
    tables = pipeline.publish()
    check_and_stage(pipeline)
    [features] = [name for name in staging_tables(pipeline) if name.startswith("_staging_raw_features_")]
    pipeline.ch.execute(f"DROP TABLE risk_assessment_ethereum.{features}")

    assert pipeline.run()

    for table in TABLES:
        assert pipeline.rows(table) == expected_rows(tables[table], table), table
    assert staging_tables(pipeline) == []


def test_a_local_copy_changed_after_its_check_is_not_loaded_when_its_stage_is_gone(pipeline):
    """LoadTable falls back to the file on disk only after proving it again."""
    tables = pipeline.publish()
    check_and_stage(pipeline)
    [features] = [name for name in staging_tables(pipeline) if name.startswith("_staging_raw_features_")]
    pipeline.ch.execute(f"DROP TABLE risk_assessment_ethereum.{features}")
    copy = os.path.join(pipeline.download_dir(), "raw_features.parquet")
    other = os.path.join(pipeline.sot, "other.parquet")
    pq.write_table(make_snapshot("ethereum", DATE, WINDOW, 300, seed=9)["raw_features"], other)
    shutil.copyfile(other, copy)  # a file that fits its table, but not the one verified

    assert not pipeline.run()

    [(task, reason)] = pipeline.failures
    assert (type(task).__name__, task.table) == ("LoadTable", "raw_features")
    assert reason.startswith(f"ethereum {DATE} raw_features.parquet: changed on disk since it was verified: sha256 ")
    assert pipeline.count("raw_features") == 0
    # the changed copy was removed; a load that ran after the failure (luigi
    # picks among the four in no fixed order) fetched the day afresh
    published = open(pipeline.snapshot_file("raw_features.parquet"), "rb").read()
    assert not os.path.exists(copy) or open(copy, "rb").read() == published
    assert pipeline.run()
    assert pipeline.rows("raw_features") == expected_rows(tables["raw_features"], "raw_features")


def test_each_load_logs_and_marks_the_columns_it_ignored_and_those_that_took_their_default(pipeline, caplog):
    tables = make_snapshot("ethereum", DATE, WINDOW, 300)
    alerts = tables["raw_alerts"].drop_columns(["pattern_type", "suspected_address_subtype"])
    tables["raw_alerts"] = alerts.append_column("analyst_note", pa.array(["x"] * alerts.num_rows))
    pipeline.publish(tables=tables)

    with caplog.at_level("INFO", logger="workflows"):
        assert pipeline.run()

    assert pipeline.ch.execute(
        "SELECT table_name, ignored_columns, defaulted_columns FROM risk_assessment_ethereum.ingestion_markers"
        " ORDER BY table_name") == [("raw_address_labels", [], []), ("raw_alerts", ["analyst_note"],
                                    ["pattern_type", "suspected_address_subtype"]), ("raw_clusters", [], []),
                                   ("raw_features", [], [])]
    [line] = [line for line in caplog.messages if "columns" in line]  # on the load's own line
    assert line.startswith(f"ethereum {DATE} LoadTable raw_alerts: {alerts.num_rows} rows; file columns ignored:"
                           " analyst_note; table columns that took their DEFAULT: pattern_type,"
                           " suspected_address_subtype ("), line
    assert pipeline.rows("raw_alerts", columns=["pattern_type"])[0] == ("",)


def test_reload_replaces_the_day_and_leaves_other_dates(pipeline):
    other = DATE - dt.timedelta(days=1)
    pipeline.publish(date=other)
    assert pipeline.run(date=other)
    pipeline.publish()
    assert pipeline.run()
    # the SOT republishes the day with other rows; a reset table is replaced, not appended to
    republished = pipeline.publish(tables=make_snapshot("ethereum", DATE, WINDOW, 300, seed=7))
    ClickHouseMarkerTarget(pipeline.ch, "risk_assessment_ethereum", Slice("ethereum", DATE, WINDOW),
                           "raw_features").remove()

    assert pipeline.run()

    assert pipeline.rows("raw_features") == expected_rows(republished["raw_features"], "raw_features")
    assert pipeline.count("raw_features", date=other) == 500


def test_int64_integer_columns_and_legacy_meta_are_accepted(pipeline):
    tables = pipeline.publish(int64_integers=True, legacy_meta=True)

    assert pipeline.run()

    for table in TABLES:
        assert pipeline.rows(table) == expected_rows(tables[table], table), table


def test_validation_marker_counts_only_while_its_download_is_on_disk(pipeline):
    pipeline.publish()
    validate = steps.ValidateMeta("ethereum", DATE, WINDOW)
    steps.DownloadSOT("ethereum", DATE, WINDOW).execute()
    validate.execute()
    assert validate.complete()

    steps.DownloadSOT("ethereum", DATE, WINDOW).execute()  # a fresh download of the same snapshot

    assert not validate.complete()


def test_download_killed_half_way_never_looks_complete(pipeline):
    pipeline.publish()
    parent = os.path.dirname(pipeline.download_dir())
    partial = os.path.join(parent, f"{WINDOW}.partial-deadbeef")
    os.makedirs(partial)
    open(os.path.join(partial, "raw_features.parquet"), "wb").write(b"PAR1 half")
    download = steps.DownloadSOT("ethereum", DATE, WINDOW)
    assert not download.complete()

    download.execute()

    assert download.complete()
    assert sorted(os.listdir(parent)) == [str(WINDOW)]


def test_a_zero_row_file_empties_a_day_only_when_the_operator_allows_it(pipeline, monkeypatch):
    """A zero-row file is a day without rows (DROP PARTITION on every server
    generation), but for a day that holds rows it looks like an export bug."""
    tables = pipeline.publish()
    assert pipeline.run()
    loaded = pipeline.counts()
    pipeline.publish(tables=dict(tables, raw_clusters=tables["raw_clusters"].slice(0, 0)))
    cli.main(["reset", "--date", DATE.isoformat(), "--network", "ethereum", "--step", "download"])

    assert not pipeline.run()
    [(task, reason)] = pipeline.failures
    assert reason.startswith("ethereum 2024-10-30 raw_clusters.parquet: has zero rows, but the day holds")
    assert pipeline.counts() == loaded

    monkeypatch.setenv("INGESTION_ALLOW_EMPTY_DAY", "1")
    assert pipeline.run()
    assert pipeline.counts() == dict(loaded, raw_clusters=0)


def test_a_zero_row_file_for_a_new_day_loads(pipeline):
    tables = pipeline.publish()
    pipeline.publish(tables=dict(tables, raw_alerts=tables["raw_alerts"].slice(0, 0)))
    assert pipeline.run()
    assert pipeline.counts() == {t: 0 if t == "raw_alerts" else tables[t].num_rows for t in TABLES}
    assert ClickHouseMarkerTarget(pipeline.ch, "risk_assessment_ethereum", Slice("ethereum", DATE, WINDOW),
                                  "raw_alerts").loaded_rows() == 0


@pytest.mark.parametrize("compression", ["lz4", "none"])
def test_plain_and_compressed_blocks_load_the_same_rows(pipeline, monkeypatch, compression):
    monkeypatch.setenv("INGESTION_COMPRESSION", compression)
    tables = pipeline.publish()

    assert pipeline.run()

    for table in TABLES:
        assert pipeline.rows(table) == expected_rows(tables[table], table), table
