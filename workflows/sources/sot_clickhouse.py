"""The SOT ClickHouse as a snapshot store (SOT_URL=clickhouse://): the day's
rows of its tables exported as a snapshot straight into the download
directory, so that validation and load run unchanged; `publish` writes the
same export to a folder or an S3 prefix."""
import hashlib
import io
import json
import socket

import pyarrow as pa
import pyarrow.parquet as pq
from clickhouse_driver.errors import Error as ClickHouseError

from .. import sql
from ..clickhouse import count_rows
from ..errors import one_line
from ..meta import META_FILENAME, TABLES
from ..native import arrow_type
from ..resources import clickhouse_client_of
from ..schema import TABLES as SCHEMAS
from .base import NotPublished, SnapshotSource, SourceUnavailable, create_private_file

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



def sot_clickhouse_client(settings):
    """The SOT ClickHouse that snapshots are exported from (SOT_URL=clickhouse://, publish)."""
    s = settings
    try:
        return clickhouse_client_of(((s.sot_host, s.sot_port),), s.sot_user, s.sot_password, s.sot_secure, "", True,
                           s.connect_timeout, s.compression)
    except (ClickHouseError, OSError) as exc:
        if _answers_http(s.sot_host, s.sot_port, s.connect_timeout):
            raise SourceUnavailable(f"SOT ClickHouse {s.sot_host}:{s.sot_port} answers HTTP: SOT_PORT must be"
                                    " its native protocol port (9000, or 9440 with SOT_SECURE=1)") from None
        raise SourceUnavailable(f"SOT ClickHouse {s.sot_host}:{s.sot_port}: {one_line(exc)}") from None



def _answers_http(host, port, timeout):
    """Whether host:port is an HTTP server (ClickHouse's 8123, say)."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(b"GET /ping HTTP/1.0\r\n\r\n")
            return sock.recv(5) == b"HTTP/"
    except OSError:
        return False
