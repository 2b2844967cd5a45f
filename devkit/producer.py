"""A day as the real SOT producer (the analytics pipeline's export_batch_task)
writes it: rows as a ClickHouse client returns them (Python ints, floats,
Decimals, dates, bools, lists), put through pandas'
`DataFrame(rows).to_parquet(compression="snappy")`, short file names, a
META.json of schema 1.x with counts and bare sha256, and the network's labels
file beside the snapshots, without date or window columns."""
import datetime as dt
import hashlib
import json
import os

import pandas as pd
import pyarrow as pa

from devkit.sample import make_snapshot
from workflows.meta import META_FILENAME, labels_filename

FILES = {"raw_alerts": "alerts", "raw_features": "features", "raw_clusters": "clusters"}
LABEL_COLUMNS = ("network", "network_type", "address", "label", "address_type", "address_subtype", "trust_level",
                 "source", "risk_level", "confidence_score", "created_timestamp", "updated_timestamp")


def client_rows(table):
    """An Arrow table's rows as a ClickHouse client returns them: the SOT's
    `is_*` flags are Boolean, so bools."""
    rows = table.to_pylist()
    for row in rows:
        for name, value in row.items():
            if name.startswith("is_"):
                row[name] = bool(value)
    return rows


def to_parquet(rows, path):
    """As the producer writes a table: rows (dicts) or, for a large day, the
    same values column by column (an Arrow table with the producer's types:
    client_types)."""
    frame = rows.to_pandas() if isinstance(rows, pa.Table) else pd.DataFrame(rows)
    frame.to_parquet(path, compression="snappy")


def client_types(table):
    """An Arrow table's columns as a ClickHouse client returns them to
    pandas: every integer int64, Float32 as double, the is_* flags bool."""
    fields = []
    for field in table.schema:
        if field.name.startswith("is_"):
            fields.append(pa.field(field.name, pa.bool_()))
        elif pa.types.is_integer(field.type):
            fields.append(pa.field(field.name, pa.int64()))
        elif pa.types.is_floating(field.type):
            fields.append(pa.field(field.name, pa.float64()))
        elif pa.types.is_list(field.type) and pa.types.is_integer(field.type.value_type):
            fields.append(pa.field(field.name, pa.list_(pa.int64())))
        else:
            fields.append(field)
    return table.cast(pa.schema(fields))


def sha256(path):
    with open(path, "rb") as stream:
        return hashlib.sha256(stream.read()).hexdigest()


class ProducerDay:
    """One network's day in the producer's layout under `root`:
    snapshots/{network}/{date}/{window}/ and address-labels/."""

    def __init__(self, root, network, date, window_days, feature_rows=500, seed=0, labels_dir=None):
        """`feature_rows` above 10,000: the tables are kept column by column
        (the same Parquet types, without a Python object per value).
        `labels_dir`: where the labels file goes (SOT_LABELS_URL), instead of
        address-labels/ beside snapshots/."""
        self.root, self.network, self.date, self.window_days = root, network, date, window_days
        self.labels_dir = labels_dir or os.path.join(root, "address-labels")
        self.label_columns = LABEL_COLUMNS  # the labels file's columns (without `network`: the load stamps it)
        self.tables = make_snapshot(network, date, window_days, feature_rows, seed)
        if feature_rows > 10_000:
            self.rows = {table: client_types(self.tables[table]) for table in self.tables}
            labels = self.rows["raw_address_labels"].drop_columns(["processing_date", "window_days"])
            stamp = pa.array([1_730_000_000_000] * labels.num_rows, pa.int64())
            self.rows["raw_address_labels"] = labels.append_column("created_timestamp", stamp) \
                .append_column("updated_timestamp", stamp)
            self.rows["money_flows"] = pa.table({"from_address": self.tables["raw_features"]["address"][:30]})
            self.rows["patterns"] = pa.table({"pattern_id": self.tables["raw_alerts"]["alert_id"][:20]})
            return
        self.rows = {table: client_rows(self.tables[table]) for table in self.tables}
        for row in self.rows["raw_address_labels"]:  # the labels file: no day, two timestamps of its own
            del row["processing_date"], row["window_days"]
            row["created_timestamp"] = row["updated_timestamp"] = 1_730_000_000_000
        self.rows["money_flows"] = [{"from_address": r["address"], "to_address": r["address"], "amount_usd": 1.5}
                                    for r in self.rows["raw_features"][:30]]
        self.rows["patterns"] = [{"pattern_id": f"pattern-{i}", "pattern_type": r["typology_type"],
                                  "addresses": [r["address"]], "detected_at": 1_730_000_000_000}
                                 for i, r in enumerate(self.rows["raw_alerts"][:20])]

    @property
    def folder(self):
        return os.path.join(self.root, "snapshots", self.network, self.date.isoformat(), str(self.window_days))

    @property
    def labels_path(self):
        return os.path.join(self.labels_dir, labels_filename(self.network))

    def write(self, leave_out=(), counts=None, meta=True, patterns=False):
        """Writes the files (those of `leave_out`, e.g. "alerts" or
        "clusters", not at all) and, with `meta`, META.json. `counts`
        overrides META's counts. `patterns`: patterns.parquet too, listed in
        META.json, as newer producer versions write it."""
        os.makedirs(self.folder, exist_ok=True)
        sums, written = {}, {}
        extra = [("money_flows", "money_flows")] + ([("patterns", "patterns")] if patterns else [])
        for table, name in [*FILES.items(), *extra]:
            if name in leave_out:
                continue
            path = os.path.join(self.folder, f"{name}.parquet")
            to_parquet(self.rows[table], path)
            sums[f"{name}.parquet"], written[name] = sha256(path), len(self.rows[table])
        self.write_labels()
        sums["address_labels.parquet"], written["address_labels"] = sha256(self.labels_path), \
            len(self.rows["raw_address_labels"])
        self.meta = {"schema_version": "1.0.0",
                     "batch_id": f"{self.network}-{self.date.isoformat()}-{self.window_days}d",
                     "network": self.network, "processing_date": self.date.isoformat(),
                     "window_days": self.window_days,
                     "generated_at": dt.datetime.now(dt.timezone.utc).isoformat().replace("+00:00", "Z"),
                     "counts": {**written, **(counts or {})}, "sha256": sums}
        if meta:
            self.write_meta()
        return self

    def write_labels(self):
        labels = self.rows["raw_address_labels"]
        columns = list(self.label_columns)
        os.makedirs(os.path.dirname(self.labels_path), exist_ok=True)
        to_parquet(labels.select(columns) if isinstance(labels, pa.Table) else
                   [{name: row[name] for name in columns} for row in labels], self.labels_path)

    def write_meta(self):
        with open(os.path.join(self.folder, META_FILENAME), "w") as stream:
            json.dump(self.meta, stream)

    def republish_labels(self, extra=3):
        """The labels list changes after the export: rows added, the file replaced in place."""
        more = [dict(self.rows["raw_address_labels"][0], address=f"0xnew{i}") for i in range(extra)]
        self.rows["raw_address_labels"] = self.rows["raw_address_labels"] + more
        self.write_labels()
