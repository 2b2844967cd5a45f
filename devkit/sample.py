"""Sample SOT snapshots with realistic values in every contract column, as
the SOT writes them (Arrow types of contract section 5). Used by `make demo`,
the tests and the benchmark. Vectorised, so a million feature rows take
seconds."""
import datetime as dt
import json
import os
from functools import partial

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from workflows import sql
from workflows.insert import insert_blocks
from workflows.meta import META_FILENAME, file_digest
from workflows.native import arrow_type, conform, encode
from workflows.schema import SCHEMAS, TABLES, Column, quote_identifier
from workflows.sources.sot_clickhouse import LABELS_TABLE, SOT_TABLES

TYPOLOGIES = ["layering", "peel_chain", "mixer_interaction", "sanctioned_counterparty", "rapid_movement", "fan_out"]
SEVERITIES = ["low", "medium", "high", "critical"]
ADDRESS_TYPES = ["exchange", "mixer", "defi", "wallet", "contract", "bridge", "unknown"]
LABELS = ["binance_hot_wallet", "tornado_cash", "uniswap_router", "ofac_sanctioned", "kraken_deposit", "scam_report"]
ASSETS = ["ETH", "USDT", "USDC", "WBTC", "DAI", "BTC", "TOR"]
ROW_GROUP_ROWS = 65536
# The SOT's tables as its schema files declare them, by the table each feeds: (PARTITION BY, ORDER BY)
SOT_LAYOUTS = {
    "raw_alerts": ("toYYYYMM(processing_date)", "window_days, processing_date, alert_id, typology_type"),
    "raw_features": ("(window_days, toYYYYMM(processing_date))", "window_days, processing_date, address"),
    "raw_clusters": ("(cluster_type, toYYYYMM(processing_date))",
                     "window_days, processing_date, cluster_type, cluster_id"),
    "raw_address_labels": ("network", "network, address, label"),
}
# a column outside each table's key, which a superseded version of a row holds another value in
SUPERSEDED_COLUMNS = {"raw_alerts": "description", "raw_features": "dominant_asset_in",
                      "raw_clusters": "severity_max", "raw_address_labels": "risk_level"}
SUPERSEDED_ROWS = 3
LABELS_TIMESTAMP_MS = 1_730_000_000_000


def default_sizes(feature_rows):
    """Rows per table for a day with `feature_rows` addresses."""
    return {
        "raw_features": feature_rows,
        "raw_alerts": max(feature_rows // 10, 1),
        "raw_clusters": max(feature_rows // 100, 1),
        "raw_address_labels": max(feature_rows // 20, 1),
    }


def make_snapshot(network, date, window_days, feature_rows=1000, seed=0):
    """{table: pyarrow.Table} of one day, with every column of the contract."""
    rng = np.random.default_rng([seed, int(date.strftime("%Y%m%d")), window_days, sum(network.encode())])
    sizes = default_sizes(feature_rows)
    addresses = _addresses(rng, network, sizes["raw_features"])
    alerts = _alerts(rng, network, date, window_days, addresses, sizes["raw_alerts"])
    return {
        "raw_features": _features(rng, date, window_days, addresses),
        "raw_alerts": alerts,
        "raw_clusters": _clusters(rng, date, window_days, alerts, sizes["raw_clusters"]),
        "raw_address_labels": _labels(rng, network, date, window_days, addresses, sizes["raw_address_labels"]),
    }


def write_snapshot(root, network, date, window_days, tables, legacy_meta=False, int64_integers=False):
    """Writes the tables as Parquet and META.json last, as the SOT does.
    Returns the snapshot directory."""
    folder = os.path.join(root, network, date.isoformat(), str(window_days))
    os.makedirs(folder, exist_ok=True)
    files = {}
    for name in TABLES:
        table = _with_int64_integers(tables[name]) if int64_integers else tables[name]
        path = os.path.join(folder, f"{name}.parquet")
        pq.write_table(table, path, row_group_size=ROW_GROUP_ROWS)
        files[f"{name}.parquet"] = path
    if legacy_meta:
        meta = {"files": {f: {"md5": file_digest(p, "md5")} for f, p in files.items()}}
    else:
        meta = {
            "network": network,
            "processing_date": date.isoformat(),
            "window_days": window_days,
            "files": [{"filename": f, "checksum": "sha256:" + file_digest(p, "sha256")} for f, p in files.items()],
        }
    with open(os.path.join(folder, META_FILENAME), "w") as stream:
        json.dump(meta, stream, indent=2)
    return folder


def sot_columns(table):
    """The columns of the SOT's table that feeds `table`, as its schema files
    declare them: no created_at, a _version; the labels without the day's
    columns, with two timestamps of their own."""
    if table == LABELS_TABLE:
        own = [c for c in SCHEMAS[table].columns if c.name not in ("processing_date", "window_days")]
        own += [Column("created_timestamp", "UInt64"), Column("updated_timestamp", "UInt64")]
    else:
        own = [c for c in SCHEMAS[table].columns if c.name != "created_at"]
    return own + [Column("_version", "UInt64")]


def create_sot_tables(ch, database):
    """The SOT's tables in `database`, when missing. This is the SOT's schema,
    not the pipeline's, so its statements are here rather than in sql."""
    ch.execute(f"CREATE DATABASE IF NOT EXISTS {quote_identifier(database)}")
    for table, (partition_by, order_by) in SOT_LAYOUTS.items():
        columns = ", ".join(f"{quote_identifier(c.name)} {c.type}" for c in sot_columns(table))
        ch.execute(f"CREATE TABLE IF NOT EXISTS {quote_identifier(database)}.{quote_identifier(SOT_TABLES[table])}"
                   f" ({columns}) ENGINE = ReplacingMergeTree(_version) PARTITION BY {partition_by}"
                   f" ORDER BY ({order_by})")


def fill_sot_database(ch, database, tables, insert=None):
    """Puts the tables' rows into a SOT ClickHouse database (its tables
    created when missing), for `publish` to export: the SOT side of the demo
    and the tests. Every row goes in as version 2; then SUPERSEDED_ROWS rows
    of each table go in again as version 1 with another value in a column,
    inserted last, so that only the newest-version rule sets them aside.
    `insert` as loader.DayLoad takes it (insert.Inserter); by default the native insert
    over `ch`."""
    create_sot_tables(ch, database)
    insert = insert or partial(insert_blocks, ch)
    for table, rows in tables.items():
        column = SUPERSEDED_COLUMNS[table]
        older = rows.slice(0, SUPERSEDED_ROWS)
        older = older.set_column(older.schema.get_field_index(column), column,
                                 pa.repeat(pa.scalar("superseded"), older.num_rows))
        columns = sot_columns(table)
        for version, part in ((2, rows), (1, older)):
            if part.num_rows:
                statement, _ = sql.insert_rows(database, SOT_TABLES[table], [c.name for c in columns])
                insert(statement, [(part.num_rows, _sot_block(columns, part, version))], None)


def _sot_block(columns, rows, version):
    """The Native column data of `rows` as a version of the SOT's rows."""
    n = rows.num_rows
    arrays = {name: rows.column(name) for name in rows.column_names}
    stamp = pa.repeat(pa.scalar(LABELS_TIMESTAMP_MS, pa.uint64()), n)
    arrays["created_timestamp"] = arrays["updated_timestamp"] = stamp
    arrays["_version"] = pa.repeat(pa.scalar(version, pa.uint64()), n)
    return [(c.name, c.type, encode(conform(arrays[c.name], c.type), c.type)) for c in columns]


def _with_int64_integers(table):
    """As pandas writes them: every integer column int64."""
    fields = [pa.field(f.name, pa.int64()) if pa.types.is_unsigned_integer(f.type) else f for f in table.schema]
    return table.cast(pa.schema(fields))


def _table(name, columns):
    """Arrow table with the contract's types, in table order; columns with a
    default may be left out of `columns`."""
    schema = SCHEMAS[name]
    fields = [pa.field(c.name, _file_type(c)) for c in schema.columns if c.name in columns]
    return pa.table({f.name: pa.array(columns[f.name], type=f.type) if not isinstance(columns[f.name], pa.Array)
                     else columns[f.name].cast(f.type) for f in fields}, schema=pa.schema(fields))


def _file_type(column):
    if column.name.startswith("is_"):
        return pa.bool_()
    return arrow_type(column.type)


def _choice(rng, values, n):
    return pa.array(np.asarray(values, dtype=object)[rng.integers(0, len(values), n)], type=pa.string())


def _hex_ids(rng, n, nbytes, prefix=""):
    raw = rng.integers(0, 256, size=(n, nbytes), dtype=np.uint8)
    digits = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
    text = np.empty((n, nbytes * 2), dtype=np.uint8)
    text[:, 0::2] = digits[raw >> 4]
    text[:, 1::2] = digits[raw & 15]
    body = text.view(f"S{nbytes * 2}").ravel()
    return pa.array(np.char.add(prefix.encode(), body) if prefix else body, type=pa.binary()).cast(pa.string())


def _addresses(rng, network, n):
    if network == "bitcoin":
        return _hex_ids(rng, n, 19, "bc1q")
    if network == "torus":
        return _hex_ids(rng, n, 24, "5")
    return _hex_ids(rng, n, 20, "0x")


def _usd(rng, n, scale=1e4, sigma=2.0, signed=False):
    """Decimal128(38, 18) dollar amounts, log-normally distributed, exact to the micro-dollar."""
    micro = np.round(rng.lognormal(np.log(scale), sigma, n) * 1e6).astype(np.int64)
    if signed:
        micro *= rng.choice(np.array([-1, 1], dtype=np.int64), n)
    int128 = np.empty((n, 2), dtype="<i8")  # little-endian: low word, then the sign-extended high word
    int128[:, 0], int128[:, 1] = micro, micro >> 63
    micros = pa.Array.from_buffers(pa.decimal128(38, 6), n, [None, pa.py_buffer(int128.tobytes())])
    return micros.cast(pa.decimal128(38, 18))


def _list(values, lengths):
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), values)


def _timestamps(rng, date, n):
    end = int(dt.datetime.combine(date, dt.time(), dt.timezone.utc).timestamp())
    return rng.integers(end - 86400, end, n)


def _created_at(date, n):
    stamp = dt.datetime.combine(date + dt.timedelta(days=1), dt.time(0, 30))
    return pa.repeat(pa.scalar(stamp, pa.timestamp("s")), n)


def _common(date, window_days, n):
    return {"window_days": np.full(n, window_days, np.uint16),
            "processing_date": pa.repeat(pa.scalar(date, pa.date32()), n)}


def _features(rng, date, window_days, addresses):
    n = len(addresses)
    cols = _common(date, window_days, n)
    cols["address"] = addresses
    degree_in, degree_out = rng.poisson(12, n).astype(np.uint32), rng.poisson(9, n).astype(np.uint32)
    cols.update(degree_in=degree_in, degree_out=degree_out, degree_total=degree_in + degree_out,
                unique_counterparties=(degree_in + degree_out) // 2)
    cols["net_flow_usd"] = _usd(rng, n, signed=True)
    for name in ("total_in_usd", "total_out_usd", "total_volume_usd", "avg_tx_in_usd",
                 "avg_tx_out_usd", "median_tx_in_usd", "median_tx_out_usd", "max_tx_usd", "min_tx_usd",
                 "avg_daily_volume_usd", "khop1_volume_usd", "khop2_volume_usd", "khop3_volume_usd"):
        cols[name] = _usd(rng, n)
    for name in ("amount_variance", "amount_skewness", "amount_kurtosis", "volume_std", "volume_cv",
                 "flow_concentration"):
        cols[name] = rng.gamma(2.0, 1.5, n)
    tx_in, tx_out = rng.poisson(40, n).astype(np.uint64), rng.poisson(35, n).astype(np.uint64)
    cols.update(tx_in_count=tx_in, tx_out_count=tx_out, tx_total_count=tx_in + tx_out)
    span = rng.integers(1, window_days + 1, n).astype(np.uint32)
    cols.update(activity_days=(span * rng.uniform(0.1, 1, n)).astype(np.uint32) + 1, activity_span_days=span)
    cols.update(peak_hour=rng.integers(0, 24, n).astype(np.uint8), peak_day=rng.integers(0, 7, n).astype(np.uint8),
                peak_activity_hour=rng.integers(0, 24, n).astype(np.uint8),
                peak_activity_day=rng.integers(0, 7, n).astype(np.uint8))
    for column in SCHEMAS["raw_features"].columns:
        if column.type == "Float32":
            cols[column.name] = rng.random(n, dtype=np.float32)
    for name in ("unique_assets_in", "unique_assets_out", "kcore", "khop1_count", "outlier_transactions",
                 "unique_recipients_count", "unique_senders_count"):
        cols[name] = rng.poisson(5, n).astype(np.uint32)
    cols["community_id"] = rng.integers(0, 50_000, n).astype(np.uint32)
    cols["khop2_count"] = cols["khop1_count"] * np.uint32(7)
    cols["khop3_count"] = cols["khop2_count"] * np.uint32(5)
    cols["dominant_asset_in"], cols["dominant_asset_out"] = _choice(rng, ASSETS, n), _choice(rng, ASSETS, n)
    cols["hourly_activity"] = _list(pa.array(rng.integers(0, 400, 24 * n).astype(np.uint16)), np.full(n, 24))
    cols["daily_activity"] = _list(pa.array(rng.integers(0, 2000, 7 * n).astype(np.uint16)), np.full(n, 7))
    for column in SCHEMAS["raw_features"].columns:
        if column.name.startswith("is_"):
            cols[column.name] = rng.random(n) < 0.1
    first = _timestamps(rng, date, n) - span.astype(np.int64) * 86400
    cols["first_activity_timestamp"] = first.astype(np.uint64)
    cols["last_activity_timestamp"] = _timestamps(rng, date, n).astype(np.uint64)
    cols["created_at"] = _created_at(date, n)
    return _table("raw_features", cols)


def _alerts(rng, network, date, window_days, addresses, n):
    cols = _common(date, window_days, n)
    cols["alert_id"] = _hex_ids(rng, n, 8, f"{network[:3]}-alert-")
    cols["address"] = addresses.take(pa.array(rng.integers(0, len(addresses), n)))
    cols["typology_type"] = _choice(rng, TYPOLOGIES, n)
    cols["pattern_id"] = _hex_ids(rng, n, 4, "pat-")
    cols["pattern_type"] = _choice(rng, ["cycle", "chain", "star", "burst"], n)
    cols["severity"] = _choice(rng, SEVERITIES, n)
    cols["suspected_address_type"] = _choice(rng, ADDRESS_TYPES, n)
    cols["suspected_address_subtype"] = _choice(rng, ["", "hot_wallet", "router", "pool"], n)
    cols["alert_confidence_score"] = rng.random(n, dtype=np.float32)
    cols["description"] = pa.array([f"{t} activity over {window_days} days" for t in
                                    _choice(rng, TYPOLOGIES, n).to_pylist()])
    cols["volume_usd"] = _usd(rng, n, scale=5e4)
    cols["evidence_json"] = pa.array([json.dumps({"tx_count": int(c), "hops": int(h)}) for c, h in
                                      zip(rng.poisson(20, n), rng.integers(1, 6, n))])
    lengths = rng.integers(0, 4, n)
    cols["risk_indicators"] = _list(_choice(rng, ["high_velocity", "new_address", "round_amounts",
                                                       "mixer_exposure", "sanctions_exposure"], int(lengths.sum())),
                                    lengths)
    cols["created_at"] = _created_at(date, n)
    return _table("raw_alerts", cols)


def _clusters(rng, date, window_days, alerts, n):
    cols = _common(date, window_days, n)
    alert_ids = alerts.column("alert_id").combine_chunks()
    cols["cluster_id"] = _hex_ids(rng, n, 8, "cluster-")
    cols["cluster_type"] = _choice(rng, ["same_entity", "pattern", "funding_source"], n)
    cols["primary_address"] = alerts.column("address").combine_chunks().take(pa.array(rng.integers(0, len(alerts), n)))
    cols["pattern_id"] = _hex_ids(rng, n, 4, "pat-")
    cols["primary_alert_id"] = alert_ids.take(pa.array(rng.integers(0, len(alerts), n)))
    related = rng.integers(1, 6, n)
    cols["related_alert_ids"] = _list(alert_ids.take(pa.array(rng.integers(0, len(alerts), int(related.sum())))),
                                      related)
    involved = rng.integers(1, 8, n)
    cols["addresses_involved"] = _list(_addresses(rng, "ethereum", int(involved.sum())), involved)
    cols["total_alerts"] = related.astype(np.uint32)
    cols["total_volume_usd"] = _usd(rng, n, scale=2e5)
    cols["severity_max"] = _choice(rng, SEVERITIES, n)
    cols["confidence_avg"] = rng.random(n, dtype=np.float32)
    earliest = _timestamps(rng, date, n)
    cols["earliest_alert_timestamp"] = earliest.astype(np.uint64)
    cols["latest_alert_timestamp"] = (earliest + rng.integers(0, 3600, n)).astype(np.uint64)
    cols["created_at"] = _created_at(date, n)
    return _table("raw_clusters", cols)


def _labels(rng, network, date, window_days, addresses, n):
    cols = _common(date, window_days, n)
    cols["network"] = pa.repeat(pa.scalar(network), n)
    cols["address"] = addresses.take(pa.array(rng.choice(len(addresses), n, replace=False)))
    cols["label"] = _choice(rng, LABELS, n)
    cols["network_type"] = _choice(rng, ["mainnet"], n)
    cols["address_type"] = _choice(rng, ADDRESS_TYPES, n)
    cols["address_subtype"] = _choice(rng, ["", "hot_wallet", "deposit", "router"], n)
    cols["risk_level"] = _choice(rng, ["low", "medium", "high"], n)
    cols["confidence_score"] = rng.random(n, dtype=np.float32)
    cols["trust_level"] = _choice(rng, ["verified", "community", "heuristic"], n)
    cols["source"] = _choice(rng, ["chainalysis", "etherscan", "internal"], n)
    return _table("raw_address_labels", cols)
