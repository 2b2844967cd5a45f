"""The SOT side: one day of the four tables in the SOT ClickHouse, written as
a snapshot of contract section 4 (Parquet files, then META.json). `python -m
workflows publish` writes it to a folder or an S3 prefix; with
SOT_URL=clickhouse:// DownloadSOT writes it straight into the download
directory, so validation and load run unchanged."""
import hashlib
import io
import json
import os
from urllib.parse import unquote, urlparse

import pyarrow as pa
import pyarrow.parquet as pq
from pyarrow.fs import FileType

from . import sql
from .clickhouse import count_rows
from .config import ConfigError
from .meta import META_FILENAME, TABLES
from .native import arrow_type
from .resources import s3_filesystem, sot_clickhouse_client
from .schema import TABLES as SCHEMAS
from .sot import NotPublished, SnapshotSource, create_private_file, snapshot_path

EXPORT_BLOCK_ROWS = 65_536  # rows per Parquet row group and per block read: memory stays flat


class HashingWriter(io.RawIOBase):
    """A binary output that hashes (sha256) what goes through it."""

    def __init__(self, out):
        super().__init__()
        self.out, self.sha256, self.position = out, hashlib.sha256(), 0

    def writable(self):
        return True

    def write(self, data):
        self.out.write(data)
        self.sha256.update(data)
        self.position += len(data)
        return len(data)

    def tell(self):
        return self.position


def export_table(client, database, table, network, date, window_days, out, progress=None):
    """Streams the day's rows of `table` as Parquet into the binary output
    `out`, EXPORT_BLOCK_ROWS at a time; returns the number of rows."""
    schema = SCHEMAS[table]
    arrow_schema = pa.schema([pa.field(c.name, arrow_type(c.type)) for c in schema.columns])
    query, params = sql.select_day(database, schema, network, date, window_days)
    rows_done = 0
    with pq.ParquetWriter(out, arrow_schema) as writer:
        block = []
        for row in client.execute_iter(query, params, settings={"max_block_size": EXPORT_BLOCK_ROWS}):
            block.append(row)
            if len(block) == EXPORT_BLOCK_ROWS:
                writer.write_batch(_batch(block, arrow_schema))
                rows_done += len(block)
                block = []
                if progress:
                    progress(rows_done)
        if block or not rows_done:  # a day without rows is a file with zero rows
            writer.write_batch(_batch(block, arrow_schema))
            rows_done += len(block)
    return rows_done


def _batch(rows, arrow_schema):
    columns = list(zip(*rows)) or [()] * len(arrow_schema)
    return pa.record_batch([pa.array(values, type=field.type) for values, field in zip(columns, arrow_schema)],
                           schema=arrow_schema)


def export_day(client, database, network, date, window_days, open_output, progress=None):
    """Writes the four tables through `open_output(filename)` (a binary
    output to close after) and returns the META.json that lists them with
    their sha256, for the caller to write last. Raises NotPublished when
    the SOT holds no row of the day in any table."""
    counts = {t: count_rows(client, database, t, date, window_days) for t in TABLES}
    if not any(counts.values()):
        raise NotPublished(f"no rows of {date} (window {window_days}) in the SOT database {database}")
    files = []
    for table in TABLES:
        filename = f"{table}.parquet"

        def report(done, total=counts[table]):
            if progress:
                progress(f"{filename}: {done:,} / {total:,} rows exported", 100 * done / max(total, 1))
        with open_output(filename) as out:
            hashed = HashingWriter(out)
            export_table(client, database, table, network, date, window_days, hashed, report)
        files.append({"filename": filename, "checksum": f"sha256:{hashed.sha256.hexdigest()}"})
    meta = {"network": network, "processing_date": date.isoformat(), "window_days": int(window_days),
            "files": files}
    return json.dumps(meta, indent=2).encode()


class ClickHouseSnapshotSource(SnapshotSource):
    """SOT_URL=clickhouse://: the snapshot is exported from the SOT
    ClickHouse (SOT_HOST, SOT_DATABASE, ...) into the download directory."""

    def __init__(self, settings):
        self.settings = settings

    def describe(self, snapshot):
        s = self.settings
        return f"clickhouse://{s.sot_host}:{s.sot_port}/{s.sot_database}"

    def fetch(self, network, date, window_days, destination, progress=None):
        client = sot_clickhouse_client(self.settings)
        try:
            meta = export_day(client, self.settings.sot_database_for(network), network, date, window_days,
                              lambda filename: create_private_file(destination, filename), progress)
        except NotPublished as exc:
            raise NotPublished(f"not published yet: {exc}") from None
        with create_private_file(destination, META_FILENAME) as out:
            out.write(meta)
        # the checksums were taken as the bytes were written
        return {entry["filename"]: entry["checksum"] for entry in json.loads(meta)["files"]}


def publish(settings, network, date, window_days, to_url, progress=None):
    """Writes the day from the SOT ClickHouse as a snapshot under `to_url` (a
    folder, file:// or s3://bucket/prefix): a META.json already there is
    removed first and written again last, so a reader never pairs it with
    files of another export. Returns the snapshot's location."""
    client = sot_clickhouse_client(settings)
    database = settings.sot_database_for(network)
    parsed = urlparse(to_url)
    relative = snapshot_path(network, date, window_days)
    if parsed.scheme in ("", "file"):
        folder = os.path.join(unquote(parsed.path) if parsed.scheme == "file" else to_url, relative)
        os.makedirs(folder, exist_ok=True)
        meta_path = os.path.join(folder, META_FILENAME)
        if os.path.exists(meta_path):
            os.remove(meta_path)
        meta = export_day(client, database, network, date, window_days,
                          lambda filename: open(os.path.join(folder, filename), "wb"), progress)
        with open(meta_path + ".partial", "wb") as out:
            out.write(meta)
        os.rename(meta_path + ".partial", meta_path)
        return folder
    if parsed.scheme == "s3":
        filesystem = s3_filesystem(settings)
        prefix = "/".join(part for part in (parsed.netloc, parsed.path.strip("/"), relative) if part)
        if filesystem.get_file_info(f"{prefix}/{META_FILENAME}").type == FileType.File:
            filesystem.delete_file(f"{prefix}/{META_FILENAME}")
        meta = export_day(client, database, network, date, window_days,
                          lambda filename: filesystem.open_output_stream(f"{prefix}/{filename}"), progress)
        with filesystem.open_output_stream(f"{prefix}/{META_FILENAME}") as out:
            out.write(meta)
        return f"s3://{prefix}"
    raise ConfigError(f"--to: {parsed.scheme}:// is not a place to publish to; use a path, file:// or s3://")
