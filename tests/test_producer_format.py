"""The real SOT's snapshots (devkit/producer.py builds them as the producer
does, with pandas) from a folder and from S3: loaded exactly, each of the
producer's quirks handled, and its faults told apart from bad input."""
import datetime as dt
import math
import os
import shutil
from decimal import Decimal

import pyarrow.parquet as pq
import pytest

from devkit.producer import LABEL_COLUMNS, ProducerDay, sha256
from workflows import cli
from workflows.schema import TABLES
from workflows.slices import Slice
from workflows.state import republished_labels_key

from common import DATE, RUN_DAILY_LOCAL, WINDOW
from s3store import BUCKET


@pytest.fixture
def producer(pipeline, tmp_path, monkeypatch):
    """The producer's bucket layout in a folder, and the pipeline reading it."""
    root = str(tmp_path / "bucket")
    monkeypatch.setenv("SOT_URL", os.path.join(root, "snapshots"))
    pipeline.env["SOT_URL"] = os.path.join(root, "snapshots")
    return ProducerDay(root, "ethereum", DATE, WINDOW)


NAN_ROWS = (0, 7, 11)


def with_nans(day):
    """pandas writes NaN floats as nulls: a few in raw_features."""
    for i in NAN_ROWS:
        day.rows["raw_features"][i]["amount_variance"] = float("nan")
    return day


def assert_loaded_exactly(pipeline, day, without=()):
    expected = {t: 0 if t in without else len(day.rows[t]) for t in TABLES}
    assert pipeline.counts() == expected
    [(nans,)] = pipeline.ch.execute(f"SELECT countIf(isNaN(amount_variance)) FROM {pipeline.database()}.raw_features")
    assert nans == sum(math.isnan(r["amount_variance"]) for r in day.rows["raw_features"])
    # Decimal128(18) sums, to the last digit
    for table, column in (("raw_features", "total_volume_usd"), ("raw_alerts", "volume_usd")):
        if table not in without:
            [(total,)] = pipeline.ch.execute(f"SELECT sum({column}) FROM {pipeline.database()}.{table}")
            assert total == sum((Decimal(r[column]) for r in day.rows[table]), Decimal(0))
    # the labels stamped with the day, the network's own
    assert pipeline.ch.execute(f"SELECT DISTINCT processing_date, window_days, network"
                               f" FROM {pipeline.database()}.raw_address_labels") == [(DATE, WINDOW, "ethereum")]


def test_a_producer_day_loads_exactly_from_a_folder_with_its_nans(pipeline, producer):
    with_nans(producer).write()

    result = pipeline.run_cli(*RUN_DAILY_LOCAL)

    assert result.returncode == 0, result.stderr[-3000:]
    assert_loaded_exactly(pipeline, producer)
    [(nans,)] = pipeline.ch.execute(f"SELECT countIf(isNaN(amount_variance))"
                                    f" FROM {pipeline.database()}.raw_features")
    assert nans == len(NAN_ROWS)
    # money_flows is not loaded, so not downloaded: three day files and the labels from address-labels/
    [downloaded] = [line for line in result.stderr.splitlines() if " DownloadSOT: " in line]
    assert " DownloadSOT: 4 files, " in downloaded, downloaded
    assert not os.path.exists(pipeline.download_dir())  # cleaned up after the load


def upload(s3, day):
    """The producer's whole bucket layout, as written under day.root, to the S3 bucket."""
    for folder, _, names in os.walk(day.root):
        for name in names:
            with open(os.path.join(folder, name), "rb") as stream:
                s3.put(os.path.relpath(os.path.join(folder, name), day.root), stream.read())


def asked_keys(s3):
    """The bucket's keys that the run asked for, since s3.record()."""
    return {r["url"].split("?")[0].split(f"/{BUCKET}/", 1)[1] for r in s3.recorded() if f"/{BUCKET}/" in r["url"]}


def test_a_producer_day_loads_from_s3_anonymously_asking_only_for_what_it_loads(pipeline, producer, s3):
    with_nans(producer).write()
    upload(s3, producer)
    s3.record()

    result = pipeline.run_cli(*RUN_DAILY_LOCAL, SOT_URL=f"s3://{BUCKET}/snapshots", SOT_S3_ANONYMOUS="1")

    assert result.returncode == 0, result.stderr[-3000:]
    assert_loaded_exactly(pipeline, producer)
    assert asked_keys(s3) == {f"snapshots/ethereum/{DATE}/{WINDOW}/{name}" for name in
                     ("META.json", "alerts.parquet", "features.parquet", "clusters.parquet")} | \
        {"address-labels/ethereum_address_labels.parquet"}


def test_a_day_without_clusters_loads_no_clusters(pipeline, producer):
    producer.write(leave_out=("clusters",))

    result = pipeline.run_cli(*RUN_DAILY_LOCAL)

    assert result.returncode == 0, result.stderr[-3000:]
    assert_loaded_exactly(pipeline, producer, without=("raw_clusters",))
    assert {row[0] for row in pipeline.markers()} == set(TABLES)


@pytest.mark.parametrize("store", ["folder", "s3"])
def test_a_day_with_patterns_and_without_alerts_loads_and_patterns_is_never_downloaded(pipeline, producer, request,
                                                                                       store):
    """Newer producer versions write patterns.parquet (listed in META.json,
    not loaded) and leave out a day's alerts (no file, not in META.json)."""
    producer.write(leave_out=("alerts",), patterns=True)
    assert "patterns.parquet" in producer.meta["sha256"] and producer.meta["counts"]["patterns"] > 0
    assert "alerts.parquet" not in producer.meta["sha256"] and "alerts" not in producer.meta["counts"]
    assert sorted(os.listdir(producer.folder)) == ["META.json", "clusters.parquet", "features.parquet",
                                                   "money_flows.parquet", "patterns.parquet"]
    env = {}
    if store == "s3":
        s3 = request.getfixturevalue("s3")
        upload(s3, producer)
        s3.record()
        env = {"SOT_URL": f"s3://{BUCKET}/snapshots", "SOT_S3_ANONYMOUS": "1"}

    result = pipeline.run_cli(*RUN_DAILY_LOCAL, **env)

    assert result.returncode == 0, result.stderr[-3000:]
    assert_loaded_exactly(pipeline, producer, without=("raw_alerts",))
    assert {row[0] for row in pipeline.markers()} == set(TABLES)  # raw_alerts marked loaded, with 0 rows
    # features, clusters and the labels: neither patterns nor money_flows, nor the alerts it does not list
    [downloaded] = [line for line in result.stderr.splitlines() if " DownloadSOT: " in line]
    assert " DownloadSOT: 3 files, " in downloaded, downloaded
    if store == "s3":
        assert asked_keys(s3) == {f"snapshots/ethereum/{DATE}/{WINDOW}/{name}" for name in
                                  ("META.json", "features.parquet", "clusters.parquet")} | \
            {"address-labels/ethereum_address_labels.parquet"}


def test_a_labels_file_without_a_network_column_loads_stamped_with_the_days_network(pipeline, producer):
    producer.label_columns = tuple(c for c in LABEL_COLUMNS if c != "network")
    producer.write()
    assert "network" not in pq.read_schema(producer.labels_path).names

    result = pipeline.run_cli(*RUN_DAILY_LOCAL)

    assert result.returncode == 0, result.stderr[-3000:]
    assert_loaded_exactly(pipeline, producer)  # every label row: processing_date, window_days and network stamped
    assert pipeline.ch.execute(f"SELECT count() FROM {pipeline.database()}.raw_address_labels"
                               " WHERE network = 'ethereum'") == [(len(producer.rows["raw_address_labels"]),)]


def test_labels_at_sot_labels_url_are_the_ones_loaded(pipeline, producer, tmp_path):
    """SOT_LABELS_URL names the labels folder; another network-day's labels
    at the default place (address-labels/ beside snapshots/) are not read."""
    custom = tmp_path / "elsewhere" / "labels"
    day = ProducerDay(producer.root, "ethereum", DATE, WINDOW, labels_dir=str(custom)).write()
    decoy = ProducerDay(producer.root, "ethereum", DATE, WINDOW, seed=1)
    decoy.write_labels()  # at the default place
    assert os.path.exists(decoy.labels_path) and sha256(decoy.labels_path) != sha256(day.labels_path)
    wanted = sorted((r["address"], r["label"]) for r in day.rows["raw_address_labels"])
    assert wanted != sorted((r["address"], r["label"]) for r in decoy.rows["raw_address_labels"])

    result = pipeline.run_cli(*RUN_DAILY_LOCAL, SOT_LABELS_URL=f"file://{custom}")

    assert result.returncode == 0, result.stderr[-3000:]
    assert "the labels were republished" not in result.stderr  # META's hash is the custom file's
    assert sorted(pipeline.rows("raw_address_labels", columns=["address", "label"])) == wanted
    assert_loaded_exactly(pipeline, day)


@pytest.mark.parametrize("empty", ["left out", "a file of no columns"])
def test_a_producer_day_without_clusters_over_a_day_that_holds_them_is_refused_unless_allowed(pipeline, producer,
                                                                                              empty):
    """The zero-row guard on the producer's two ways of saying "no rows": a
    file left out of META.json, and pandas' file of no columns."""
    producer.write()
    assert pipeline.run_cli(*RUN_DAILY_LOCAL).returncode == 0
    loaded = pipeline.counts()
    if empty == "left out":
        producer.write(leave_out=("clusters",))
        os.remove(os.path.join(producer.folder, "clusters.parquet"))
    else:
        producer.rows["raw_clusters"] = []
        producer.write()
    assert cli.main(["reset", "--date", DATE.isoformat(), "--network", "ethereum"]) == 0

    refused = pipeline.run_cli(*RUN_DAILY_LOCAL, INGESTION_RETRY_ATTEMPTS="1")

    assert refused.returncode == 30, refused.stderr[-3000:]
    file = "raw_clusters (no file)" if empty == "left out" else "clusters.parquet"
    assert f"bad input: ethereum {DATE} {file}: has zero rows, but the day holds {loaded['raw_clusters']:,}" \
           in refused.stderr, refused.stderr[-3000:]
    assert pipeline.counts() == loaded
    assert cli.main(["reset", "--date", DATE.isoformat(), "--network", "ethereum"]) == 0
    allowed = pipeline.run_cli(*RUN_DAILY_LOCAL, INGESTION_ALLOW_EMPTY_DAY="1")
    assert allowed.returncode == 0, allowed.stderr[-3000:]
    assert pipeline.counts() == dict(loaded, raw_clusters=0)


def test_a_count_that_is_not_the_files_is_bad_input_naming_both(pipeline, producer):
    producer.write(counts={"alerts": len(producer.rows["raw_alerts"]) + 1})

    result = pipeline.run_cli(*RUN_DAILY_LOCAL, INGESTION_RETRY_ATTEMPTS="1")

    assert result.returncode == 30, result.stderr[-3000:]
    rows = len(producer.rows["raw_alerts"])
    assert f"ethereum {DATE} alerts.parquet: META.json counts {rows + 1:,} rows of raw_alerts, the file holds" \
           f" {rows:,}" in result.stderr
    assert pipeline.counts() == {t: 0 for t in TABLES}
    assert not os.path.exists(pipeline.download_dir())


def test_labels_republished_since_the_export_load_the_current_file_and_say_so(pipeline, producer, capsys):
    producer.write()
    exported = producer.meta["sha256"]["address_labels.parquet"]
    producer.republish_labels(extra=3)
    current = sha256(producer.labels_path)

    result = pipeline.run_cli(*RUN_DAILY_LOCAL)

    assert result.returncode == 0, result.stderr[-3000:]
    assert pipeline.count("raw_address_labels") == len(producer.rows["raw_address_labels"])
    [said] = [line for line in result.stderr.splitlines() if "the labels were republished" in line]
    assert f"META.json has sha256 {exported}, the current file {current}" in said
    [table_row] = [line for line in result.stderr.splitlines() if line.startswith("ethereum ") and "done;" in line]
    assert table_row.endswith("done; labels republished since the export")  # the run's closing table
    assert cli.main(["status", "--date", DATE.isoformat(), "--network", "ethereum"]) == 0
    assert "labels republished since the export" in capsys.readouterr().out


    producer.write()  # exported again, with the current labels: the note no longer holds
    assert cli.main(["reset", "--date", DATE.isoformat(), "--network", "ethereum"]) == 0
    # a note an earlier download left (reset now removes it): the download that matches its META removes it
    pipeline.redis.set(republished_labels_key(Slice("ethereum", DATE, WINDOW)), '{"meta": "a", "file": "b"}')
    again = pipeline.run_cli(*RUN_DAILY_LOCAL)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "the labels were republished" not in again.stderr
    capsys.readouterr()
    assert cli.main(["status", "--date", DATE.isoformat(), "--network", "ethereum"]) == 0
    assert "labels republished" not in capsys.readouterr().out


def test_a_reset_forgets_the_days_labels_note(pipeline, producer, capsys):
    producer.write()
    producer.republish_labels(extra=1)
    assert pipeline.run_cli(*RUN_DAILY_LOCAL).returncode == 0
    assert cli.main(["reset", "--date", DATE.isoformat(), "--network", "ethereum"]) == 0
    capsys.readouterr()
    assert cli.main(["status", "--date", DATE.isoformat(), "--network", "ethereum"]) == 0
    assert "labels republished" not in capsys.readouterr().out


def test_meta_uploaded_before_a_file_is_not_published_yet_then_loads(pipeline, producer):
    producer.write()
    features = os.path.join(producer.folder, "features.parquet")
    shutil.move(features, features + ".later")

    early = pipeline.run_cli(*RUN_DAILY_LOCAL, INGESTION_RETRY_ATTEMPTS="1")

    assert early.returncode == 30, early.stderr[-3000:]
    assert f"ethereum {DATE}: not published yet: features.parquet, listed in META.json, is not at" \
           f" {producer.folder}/features.parquet yet" in early.stderr
    assert "bad input" not in early.stderr
    shutil.move(features + ".later", features)
    cli.main(["reset", "--date", DATE.isoformat(), "--network", "ethereum"])
    late = pipeline.run_cli(*RUN_DAILY_LOCAL)
    assert late.returncode == 0, late.stderr[-3000:]
    assert_loaded_exactly(pipeline, producer)


def test_the_producers_types_load(pipeline, producer):
    """A table with no rows that day (a file of no columns), decimals of
    any precision up to 38, bools, times finer than a second, a column of
    nulls only."""
    producer.rows["raw_clusters"] = []  # pandas: a file with no columns
    for i, row in enumerate(producer.rows["raw_alerts"]):
        row["volume_usd"] = Decimal("12345678901234567890.123456789012345678") if i == 0 else Decimal("0.5")
        row["created_at"] = dt.datetime(2024, 10, 30, 12, 0, 1, 999_000)
        row["pattern_id"] = None  # all null: Arrow's null type; the column's DEFAULT ''
    producer.write(counts={"clusters": 0})

    result = pipeline.run_cli(*RUN_DAILY_LOCAL)

    assert result.returncode == 0, result.stderr[-3000:]
    assert pipeline.count("raw_clusters") == 0
    alerts = pipeline.rows("raw_alerts", columns=["volume_usd", "created_at", "pattern_id"])
    assert sorted(r[0] for r in alerts)[-1] == Decimal("12345678901234567890.123456789012345678")
    assert {r[1] for r in alerts} == {dt.datetime(2024, 10, 30, 12, 0, 1)}  # floored
    assert {r[2] for r in alerts} == {""}
    [(flags,)] = pipeline.ch.execute(f"SELECT sum(is_whale) FROM {pipeline.database()}.raw_features")
    assert flags == sum(r["is_whale"] for r in producer.rows["raw_features"])
