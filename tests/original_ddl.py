"""The four tables as the system this pipeline replaces created them
(chainswarm/risk-assesment, packages/storage/schema/raw_*.sql): the same
columns as the pipeline's, the is_* flags Boolean, month partitions, another
order, and skip indexes made by CREATE INDEX. ClickHouse 18.16 has neither
Bool nor skip indexes: there the flags are UInt8 and no index is made."""
from workflows.schema import SCHEMAS, TABLES

KEYS = {  # table: (PARTITION BY, ORDER BY), as the original DDL has them
    "raw_alerts": ("toYYYYMM(processing_date)", "(window_days, processing_date, alert_id, typology_type)"),
    "raw_features": ("(window_days, toYYYYMM(processing_date))", "(window_days, processing_date, address)"),
    "raw_clusters": ("(cluster_type, toYYYYMM(processing_date))",
                     "(window_days, processing_date, cluster_type, cluster_id)"),
    "raw_address_labels": ("(toYYYYMM(processing_date), network)",
                           "(processing_date, window_days, network, address, label)"),
}
INDEXES = {  # a few of each table's, as the original writes them
    "raw_alerts": ["idx_processing_date ON raw_alerts(processing_date) TYPE minmax GRANULARITY 4",
                   "idx_address ON raw_alerts(address) TYPE bloom_filter(0.01) GRANULARITY 4"],
    "raw_features": ["idx_window_days ON raw_features(window_days) TYPE set(0) GRANULARITY 4",
                     "idx_is_whale ON raw_features(is_whale) TYPE minmax GRANULARITY 4"],
    "raw_clusters": ["idx_cluster_id ON raw_clusters(cluster_id) TYPE bloom_filter(0.01) GRANULARITY 4"],
    "raw_address_labels": ["idx_network ON raw_address_labels(network) TYPE bloom_filter(0.01) GRANULARITY 4"],
}


def original_ddl(database, table, modern):
    """The statements that made `table` in `database`; `modern`: a server with Bool and skip indexes."""
    columns = ",\n    ".join(
        f"{c.name} {'Bool' if modern and c.name.startswith('is_') else c.type}"
        + (f" DEFAULT {c.default}" if c.default else "") for c in SCHEMAS[table].columns)
    partition, order = KEYS[table]
    statements = [f"CREATE TABLE IF NOT EXISTS {database}.{table} (\n    {columns}\n)\nENGINE = MergeTree()\n"
                  f"PARTITION BY {partition}\nORDER BY {order}\nSETTINGS index_granularity = 8192"]
    if modern:
        statements += [f"CREATE INDEX IF NOT EXISTS {index.replace(' ON ', f' ON {database}.', 1)}"
                       for index in INDEXES[table]]
    return statements


def create_original(engine, database, modern, tables=TABLES):
    engine.execute(f"CREATE DATABASE IF NOT EXISTS {database}")
    for table in tables:
        for statement in original_ddl(database, table, modern):
            engine.execute(statement)
