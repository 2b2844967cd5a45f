"""The SOT ClickHouse as a snapshot store (SOT_URL=clickhouse://): a day of
its own tables exported in the producer's format (alerts, features and
clusters.parquet, the network's labels as address_labels.parquet, and a
META.json of schema 1.x with counts and bare sha256) straight into the
download directory, so that validation and load run unchanged; `publish`
writes the same export to a folder or an S3 prefix. SOT_PORT may be the
server's native port or its HTTP one (sot_http)."""
import datetime as dt
import hashlib
import io
import json
import socket
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any, BinaryIO

import pyarrow as pa
import pyarrow.parquet as pq
from clickhouse_driver import Client
from clickhouse_driver.errors import Error as ClickHouseError
from clickhouse_driver.errors import ErrorCodes

from .. import sql
from ..clients import ClickHouseServer, connected_client
from ..config import Settings
from ..errors import one_line
from ..meta import META_FILENAME, PRODUCER_NAMES
from ..native import arrow_type
from ..schema import SCHEMAS, TABLES, Column
from ..slices import Slice
from .base import NotPublished, Progress, SnapshotSource, SourceUnavailable, create_private_file
from .sot_http import HttpClickHouse, answers_http

# The SOT's own tables (the analytics pipeline's), by the table each feeds.
# Each is a ReplacingMergeTree(_version): a row may be there in several
# versions until a merge, and only the newest is exported (sql._newest).
SOT_TABLES = {"raw_alerts": "analyzers_alerts", "raw_features": "analyzers_features",
              "raw_clusters": "analyzers_alert_clusters", "raw_address_labels": "core_address_labels"}
LABELS_TABLE = "raw_address_labels"  # the network's labels as they are now: core_address_labels has no day
PRODUCER_SCHEMA_VERSION = "1.0.0"  # the META.json the producer writes
# Rows per Parquet row group, and per block read from the server: a block's
# rows are Python objects until it is turned into Arrow. Publishing 1M
# feature rows peaked at 640 MB RSS (native) and 890 MB (HTTP) with
# 65,536-row blocks, at 316 and 327 MB with 8,192-row ones, flat in the rows.
EXPORT_ROW_GROUP_ROWS = 65_536
EXPORT_BLOCK_ROWS = 8_192
# what a wrong user or password gets: 18.16's codes, and the one current servers give for both
AUTHENTICATION_FAILED = {ErrorCodes.UNKNOWN_USER, ErrorCodes.WRONG_PASSWORD, ErrorCodes.REQUIRED_PASSWORD, 516}


def producer_filename(table: str) -> str:
    """The file of `table` in the producer's META.json (the labels' name there, not on the store)."""
    return f"{PRODUCER_NAMES[table]}.parquet"


class HashingWriter(io.RawIOBase):
    """A binary output that hashes (sha256) what goes through it."""

    def __init__(self, out: BinaryIO) -> None:
        super().__init__()
        self.out, self.sha256, self.position = out, hashlib.sha256(), 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:  # bytes, or a pyarrow.Buffer: sized, with the buffer protocol
        self.out.write(data)
        self.sha256.update(data)
        self.position += len(data)
        return len(data)

    def tell(self) -> int:
        return self.position


class SotDay:
    """One network's day of the SOT ClickHouse, as the producer exports it."""

    def __init__(self, client: Any, database: str, day: Slice) -> None:
        self.client, self.database, self.network = client, database, day.network
        self.date, self.window_days = day.date, int(day.window_days)

    def where(self, table: str) -> dict[str, Any]:
        if table == LABELS_TABLE:
            return {"network": self.network}
        return {"processing_date": self.date, "window_days": self.window_days}

    def count(self, table: str) -> int:
        return self.client.execute(*sql.newest_count(self.database, SOT_TABLES[table], self.where(table)))[0][0]

    def columns(self, table: str) -> list[tuple[Column, str | None]]:
        """The columns of our table that the SOT's has, in our order, each
        with the type to CAST the SOT's to where it differs (None where it
        is the same): its tables have no created_at, its labels no day (the
        load stamps it)."""
        held = dict(self.client.execute(*sql.table_columns(self.database, SOT_TABLES[table])))
        return [(c, None if held[c.name] == c.type else c.type) for c in SCHEMAS[table].columns if c.name in held]

    def export_table(self, table: str, out: BinaryIO | HashingWriter,
                     progress: Callable[[int], None] | None = None) -> int:
        """Streams the newest version of each of the table's rows as Parquet
        into the binary output `out`, a block of EXPORT_BLOCK_ROWS at a time,
        a row group of EXPORT_ROW_GROUP_ROWS; returns the number of rows.
        `progress(rows_done)` follows it."""
        columns = self.columns(table)
        arrow_schema = pa.schema([pa.field(c.name, arrow_type(c.type)) for c, _ in columns])
        query, params = sql.newest_rows(self.database, SOT_TABLES[table], [(c.name, cast) for c, cast in columns],
                                        self.where(table))
        rows = self.client.execute_iter(query, params, settings={"max_block_size": EXPORT_BLOCK_ROWS})
        rows_done = 0
        # a table without rows that day is a file of its columns with zero rows
        with pq.ParquetWriter(out, arrow_schema) as writer:
            for group in _row_groups(rows, arrow_schema):
                writer.write_table(group, row_group_size=EXPORT_ROW_GROUP_ROWS)
                rows_done += group.num_rows
                if progress:
                    progress(rows_done)
        return rows_done

    def export(self, open_output: Callable[[str], AbstractContextManager[BinaryIO]],
               progress: Progress | None = None) -> bytes:
        """Writes the four files through `open_output(filename)` (a binary
        output to close after; the labels' filename is address_labels.parquet,
        which the caller puts where labels go) and returns the META.json that
        lists them, for the caller to write last. Raises NotPublished when
        none of the day's tables holds a row of the day."""
        counts = {table: self.count(table) for table in TABLES}
        if not any(rows for table, rows in counts.items() if table != LABELS_TABLE):
            raise NotPublished(f"no rows of {self.date} (window {self.window_days}) in the SOT database"
                               f" {self.database}")
        total, before = sum(counts.values()), 0
        written, sums = {}, {}
        for table in TABLES:
            filename = producer_filename(table)

            def report(done: int, filename: str = filename, table: str = table, before: int = before) -> None:
                if progress:
                    progress(f"{filename}: {done:,} / {counts[table]:,} rows exported",
                             100 * (before + done) / max(total, 1))
            with open_output(filename) as out:
                hashed = HashingWriter(out)
                written[PRODUCER_NAMES[table]] = self.export_table(table, hashed, report)
            sums[filename] = hashed.sha256.hexdigest()
            before += counts[table]
        meta = {"schema_version": PRODUCER_SCHEMA_VERSION,
                "batch_id": f"{self.network}-{self.date.isoformat()}-{self.window_days}d",
                "network": self.network, "processing_date": self.date.isoformat(), "window_days": self.window_days,
                "generated_at": dt.datetime.now(dt.timezone.utc).isoformat().replace("+00:00", "Z"),
                "counts": written, "sha256": sums}
        return json.dumps(meta, indent=2).encode()


def _row_groups(rows: Iterable[tuple[Any, ...]], arrow_schema: pa.Schema) -> Iterator[pa.Table]:
    """The rows (tuples) as Arrow tables of EXPORT_ROW_GROUP_ROWS rows (the
    last one shorter), each made of EXPORT_BLOCK_ROWS-row batches: only one
    block of rows is Python objects at a time."""
    block, group = [], []
    for row in rows:
        block.append(row)
        if len(block) == EXPORT_BLOCK_ROWS:
            group.append(_batch(block, arrow_schema))
            block = []
            if len(group) * EXPORT_BLOCK_ROWS == EXPORT_ROW_GROUP_ROWS:
                yield pa.Table.from_batches(group, arrow_schema)
                group = []
    if block:
        group.append(_batch(block, arrow_schema))
    if group:
        yield pa.Table.from_batches(group, arrow_schema)


def _batch(rows: list[tuple[Any, ...]], arrow_schema: pa.Schema) -> pa.RecordBatch:
    return pa.record_batch([pa.array(values, type=field.type) for values, field in zip(zip(*rows), arrow_schema)],
                           schema=arrow_schema)


class ClickHouseSnapshotSource(SnapshotSource):
    """SOT_URL=clickhouse://: the snapshot is exported from the SOT
    ClickHouse (SOT_HOST, SOT_DATABASE, ...) into the download directory."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def describe(self, snapshot: str) -> str:
        s = self.settings
        return f"clickhouse://{s.sot_host}:{s.sot_port}/{s.sot_database}"

    def fetch(self, day: Slice, destination: str, progress: Progress | None = None) -> dict[str, str]:
        """The labels go into the download as address_labels.parquet, the name
        META.json gives them, where the load looks for them."""
        with reading_the_sot(self.settings):
            sot = SotDay(sot_clickhouse_client(self.settings), self.settings.sot_database_for(day.network), day)
            try:
                meta = sot.export(lambda filename: create_private_file(destination, filename), progress)
            except NotPublished as exc:
                raise NotPublished(f"not published yet: {exc}") from None
        with create_private_file(destination, META_FILENAME) as out:
            out.write(meta)
        # the checksums were taken as the bytes were written
        return {filename: f"sha256:{digest}" for filename, digest in json.loads(meta)["sha256"].items()}


@contextmanager
def reading_the_sot(settings: Settings) -> Iterator[None]:
    """A failure of the SOT ClickHouse as one line naming it (SourceUnavailable);
    a wrong user or password as "authentication failed", over either
    protocol. Never the password."""
    try:
        yield
    except ClickHouseError as exc:
        raise SourceUnavailable(_failure(settings, exc)) from None


def _failure(settings: Settings, exc: BaseException) -> str:
    where = f"SOT ClickHouse {settings.sot_host}:{settings.sot_port}"
    if getattr(exc, "code", None) in AUTHENTICATION_FAILED:
        return f"{where}: authentication failed for user {settings.sot_user!r} (SOT_USER, SOT_PASSWORD)"
    if isinstance(exc, ConnectionRefusedError):
        return f"{where}: connection refused (SOT_HOST, SOT_PORT)"
    if isinstance(exc, TimeoutError):
        return f"{where}: no answer within {settings.connect_timeout:g} s (INGESTION_CONNECT_TIMEOUT)"
    if isinstance(exc, socket.gaierror):
        return f"{where}: host not found: {exc.strerror} (SOT_HOST)"
    return f"{where}: {one_line(exc)}"


def sot_clickhouse_client(settings: Settings) -> HttpClickHouse | Client:
    """The SOT ClickHouse that snapshots are exported from (SOT_URL=clickhouse://,
    publish), connected and its credentials checked: over HTTP when SOT_PORT
    is its HTTP interface (the original deployment's 8123), else over the
    native protocol. Either has the driver's execute and execute_iter."""
    s = settings
    try:
        with reading_the_sot(s):
            url = f"{'https' if s.sot_secure else 'http'}://{s.sot_host}:{s.sot_port}"
            if answers_http(url, s.connect_timeout):
                return HttpClickHouse(url, (s.sot_user, s.sot_password), s.connect_timeout).connect()
            return connected_client(ClickHouseServer(((s.sot_host, s.sot_port),), s.sot_user, s.sot_password,
                                                     s.sot_secure, "", True, s.connect_timeout, s.compression))
    except OSError as exc:  # the native connect's TLS and socket failures
        raise SourceUnavailable(_failure(s, exc)) from None
