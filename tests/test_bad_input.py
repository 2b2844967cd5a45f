"""Every case of bad input in contract section 4: a one-line error naming
network, date, file and reason; the download directory removed; nothing of
that day in ClickHouse; other dates untouched."""
import datetime as dt
import json
import os

import luigi
import pyarrow as pa
import pytest

from devkit.sample import default_sizes, make_snapshot
from workflows.meta import file_digest
from workflows.schema import TABLES

from common import DATE, FEATURE_ROWS, OTHER_DATE, WINDOW


def rewrite_meta(pipeline, edit=None):
    """META.json with the current files' checksums, then `edit(meta)`."""
    folder = pipeline.snapshot_dir()
    meta = {"files": [{"filename": f"{t}.parquet",
                       "checksum": "sha256:" + file_digest(os.path.join(folder, f"{t}.parquet"), "sha256")}
                      for t in TABLES]}
    if edit:
        edit(meta)
    with open(os.path.join(folder, "META.json"), "w") as stream:
        json.dump(meta, stream)


def replace_column(tables, table, name, array):
    t = tables[table]
    tables[table] = t.set_column(t.schema.get_field_index(name), name, array)
    return tables


def with_last_value(table, column, first, last, type_):
    """The sample snapshot with `column` of `table` all `first` but the last row."""
    n = default_sizes(FEATURE_ROWS)[table]
    return replace_column(snapshot(), table, column, pa.array([first] * (n - 1) + [last], type_))


def snapshot():
    return make_snapshot("ethereum", DATE, WINDOW, FEATURE_ROWS)


def meta_not_json(p):
    p.publish()
    with open(p.snapshot_file("META.json"), "w") as stream:
        stream.write('{"files": [')
    return "META.json", "not valid JSON"


def meta_without_a_table(p):
    p.publish()
    rewrite_meta(p, lambda meta: meta["files"].pop(2))
    return "META.json", "does not list raw_clusters.parquet"


def meta_bad_checksum_form(p):
    p.publish()
    rewrite_meta(p, lambda meta: meta["files"][0].update(checksum="sha256:xyz"))
    return "META.json", "is not 64 hex digits"


def meta_path_as_file_name(p):
    p.publish()
    rewrite_meta(p, lambda meta: meta["files"][0].update(filename="../raw_alerts.parquet"))
    return "META.json", "is not a plain file name"


def checksum_mismatch(p):
    p.publish()
    p.tamper("raw_address_labels.parquet", b"\0")
    return "raw_address_labels.parquet", "sha256 checksum mismatch"


def corrupt_parquet(p):
    p.publish()
    with open(p.snapshot_file("raw_clusters.parquet"), "wb") as stream:
        stream.write(b"PAR1" + os.urandom(4096))
    rewrite_meta(p)
    return "raw_clusters.parquet", "not a readable Parquet file"


def missing_column_without_default(p):
    tables = snapshot()
    tables["raw_alerts"] = tables["raw_alerts"].drop_columns(["alert_id"])
    p.publish(tables=tables)
    return "raw_alerts.parquet", "missing column(s) without a default: alert_id"


def column_renamed_upstream(p):
    """severity written as Severity: loaded, every row would read 'medium'."""
    tables = snapshot()
    tables["raw_alerts"] = tables["raw_alerts"].rename_columns(
        ["Severity" if name == "severity" else name for name in tables["raw_alerts"].column_names])
    p.publish(tables=tables)
    return "raw_alerts.parquet", "column 'Severity' looks like severity renamed: severity would take its DEFAULT"


def time_out_of_range(p):
    """A time past DateTime's last second (2106-02-07), with its own time zone, finer than a second."""
    p.publish(tables=with_last_value("raw_alerts", "created_at", dt.datetime(2024, 10, 30, 1),
                                     dt.datetime(2200, 1, 1, 0, 0, 0, 5000), pa.timestamp("us", tz="UTC")))
    return "raw_alerts.parquet", "column created_at: value out of range for DateTime"


def date_out_of_range(p):
    """A day past Date's last (2149-06-06) in a column the snapshot does not check."""
    p.publish(tables=with_last_value("raw_alerts", "processing_date", DATE, dt.date(2200, 1, 1), pa.date32()))
    return "raw_alerts.parquet", "column processing_date: "


def duplicate_column_names(p):
    tables = snapshot()
    tables["raw_clusters"] = tables["raw_clusters"].append_column("cluster_id", tables["raw_clusters"]["cluster_id"])
    p.publish(tables=tables)
    return "raw_clusters.parquet", "column cluster_id: appears 2 times"


def value_out_of_range(p):
    values = list(range(FEATURE_ROWS))
    values[-1] = 2**40
    p.publish(tables=replace_column(snapshot(), "raw_features", "degree_in", pa.array(values, pa.int64())))
    return "raw_features.parquet", "column degree_in: value out of range for UInt32"


def null_in_non_nullable_column(p):
    p.publish(tables=with_last_value("raw_alerts", "description", "x", None, pa.string()))
    return "raw_alerts.parquet", "column description: 1 null value(s)"


def rows_of_another_date(p):
    p.publish(tables=with_last_value("raw_address_labels", "processing_date", DATE, OTHER_DATE, pa.date32()))
    return "raw_address_labels.parquet", f"rows of {OTHER_DATE} in a snapshot of {DATE}"


def rows_of_another_network(p):
    p.publish(tables=with_last_value("raw_address_labels", "network", "ethereum", "bitcoin", pa.string()))
    return "raw_address_labels.parquet", "rows of bitcoin in a snapshot of ethereum"


def meta_nested_too_deeply(p):
    p.publish()
    with open(p.snapshot_file("META.json"), "w") as stream:
        stream.write('{"files": ' + "[" * 100_000 + "]" * 100_000 + "}")
    return "META.json", "nested too deeply"


def listed_file_is_a_symlink(p):
    p.publish()
    target = p.snapshot_file("raw_alerts.parquet") + ".real"
    os.rename(p.snapshot_file("raw_alerts.parquet"), target)
    os.symlink(target, p.snapshot_file("raw_alerts.parquet"))
    return "raw_alerts.parquet", "is a symlink in the SOT store"


def listed_file_is_a_fifo(p):
    p.publish()
    os.remove(p.snapshot_file("raw_clusters.parquet"))
    os.mkfifo(p.snapshot_file("raw_clusters.parquet"))
    return "raw_clusters.parquet", "is not a regular file"


CASES = [meta_not_json, meta_nested_too_deeply, listed_file_is_a_symlink, listed_file_is_a_fifo, meta_without_a_table,
         meta_bad_checksum_form, meta_path_as_file_name, checksum_mismatch, corrupt_parquet,
         missing_column_without_default, column_renamed_upstream, time_out_of_range, date_out_of_range,
         duplicate_column_names,
         value_out_of_range, null_in_non_nullable_column, rows_of_another_date, rows_of_another_network]


@pytest.mark.parametrize("case", CASES, ids=[c.__name__ for c in CASES])
def test_bad_input(pipeline, case):
    pipeline.publish(date=OTHER_DATE)
    assert pipeline.run(date=OTHER_DATE)
    other_before = pipeline.counts(date=OTHER_DATE)
    filename, reason = case(pipeline)

    assert not pipeline.run()

    messages = [message for _, message in pipeline.failures]
    assert len(messages) == 1, messages
    assert messages[0].startswith(f"ethereum {DATE} {filename}: ") and reason in messages[0], messages[0]
    assert "\n" not in messages[0]
    assert not os.path.exists(pipeline.download_dir())
    # the snapshot as a whole was refused before any table was loaded
    assert pipeline.counts() == {t: 0 for t in TABLES}
    assert {t for t, d, *_ in pipeline.markers() if d == DATE} == set()
    assert pipeline.counts(date=OTHER_DATE) == other_before
    # nor staged: the files staged before the bad one went with it
    assert pipeline.ch.execute("SELECT name FROM system.tables WHERE startsWith(name, '_staging_')") == []


def test_retry_after_bad_input_downloads_afresh_and_loads(pipeline):
    checksum_mismatch(pipeline)
    assert not pipeline.run()
    tables = pipeline.publish()  # the SOT fixed the snapshot

    assert pipeline.run()

    assert pipeline.counts() == {t: tables[t].num_rows for t in TABLES}


def test_only_meta_and_its_listed_files_are_copied_readable_by_the_owner_only(pipeline, tmp_path):
    pipeline.publish()
    secret = tmp_path / "secret"
    secret.write_text("not for the download directory")
    os.symlink(secret, pipeline.snapshot_file("shadow"))
    with open(pipeline.snapshot_file("notes.txt"), "w") as stream:
        stream.write("an unlisted file")
    copied = {}

    def record(task):
        if type(task).__name__ == "DownloadSOT":
            folder = pipeline.download_dir()
            copied.update({name: os.stat(os.path.join(folder, name)).st_mode & 0o777 for name in os.listdir(folder)})
            copied["."] = os.stat(folder).st_mode & 0o777

    luigi.Task.event_handler(luigi.Event.SUCCESS)(record)
    try:
        assert pipeline.run()
    finally:
        luigi.Task.remove_event_handler(luigi.Event.SUCCESS, record)

    assert sorted(copied) == sorted([".", ".download", ".arrived.json", "META.json", *(f"{t}.parquet" for t in TABLES)])
    assert {name: mode for name, mode in copied.items() if name not in (".download", ".arrived.json")} == \
        {".": 0o700, "META.json": 0o600, **{f"{t}.parquet": 0o600 for t in TABLES}}
