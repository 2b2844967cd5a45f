"""One Parquet file into its ClickHouse table: read in batches, check every
column against the table, stream into a staging table, swap the day's slice."""
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from . import clickhouse
from .native import ColumnMismatch, conform, encode

BATCH_ROWS = 65536


class FileMismatch(ValueError):
    """The file does not fit its table; the message is the reason."""


def plan_columns(table, file_schema):
    """The table's columns that the file carries, in table order. A missing
    column with a default is left to the server; one without is an error.
    Columns the table does not have are ignored."""
    present = set(file_schema.names)
    missing = [c.name for c in table.columns if c.name not in present and c.default is None]
    if missing:
        raise FileMismatch("missing column(s) without a default: " + ", ".join(missing))
    return [c for c in table.columns if c.name in present]


def expected_values(table, date, window_days, network):
    """Columns whose every value must equal the snapshot's."""
    expected = {"processing_date": date, "window_days": window_days}
    if "network" in table.column_names:
        expected["network"] = network
    return expected


def encode_batch(batch, columns, expected):
    """A record batch as Native column data, each column checked."""
    encoded = []
    for column in columns:
        try:
            array = conform(batch.column(column.name), column.type)
            if column.name in expected:
                _check_all_equal(array, expected[column.name])
            encoded.append((column.name, column.type, encode(array, column.type)))
        except ColumnMismatch as exc:
            raise FileMismatch(f"column {column.name}: {exc}") from None
    return encoded


def _check_all_equal(array, value):
    scalar = pa.scalar(value, type=array.type)
    differs = pc.invert(pc.equal(array, scalar))
    if len(array) and pc.any(differs).as_py():
        other = array.filter(differs)[0].as_py()
        raise ColumnMismatch(f"rows of {other} in a snapshot of {value}")


def staging_name(table_name, date, window_days):
    return f"_staging_{table_name}_{date:%Y%m%d}_{window_days}"


def load_parquet(ch, database, table, path, date, window_days, network, on_progress=None):
    """Replaces the table's (date, window_days) slice with the file's rows and
    returns how many there were. Raises FileMismatch for a file that is
    corrupt or does not fit; the table is then untouched."""
    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise FileMismatch(f"not a readable Parquet file ({_one_line(exc)})") from None
    columns = plan_columns(table, parquet.schema_arrow)
    total = parquet.metadata.num_rows
    expected = expected_values(table, date, window_days, network)
    staging = staging_name(table.name, date, window_days)
    clickhouse.recreate_staging(ch, database, table.name, staging)
    try:
        rows = 0
        with clickhouse.native_insert(ch, database, staging, [c.name for c in columns]) as send:
            for batch in _batches(parquet, [c.name for c in columns]):
                send(batch.num_rows, encode_batch(batch, columns, expected))
                rows += batch.num_rows
                if on_progress:
                    on_progress(rows, total)
        clickhouse.replace_partition(ch, database, table.name, staging, date, window_days)
    finally:
        clickhouse.drop_table(ch, database, staging)
    return rows


def _batches(parquet, names):
    try:
        yield from parquet.iter_batches(batch_size=BATCH_ROWS, columns=names, use_threads=True)
    except (pa.ArrowException, OSError) as exc:
        raise FileMismatch(f"corrupt Parquet data ({_one_line(exc)})") from None


def _one_line(exc):
    return " ".join(str(exc).split()) or type(exc).__name__
