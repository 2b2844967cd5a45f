"""Parquet files against their ClickHouse tables: check that a file fits,
stage it (stream it into a staging table, checking it on the way) and swap
the staged day in. All read in batches, so memory does not grow with the
file."""
import difflib
import os
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass
from functools import partial

# Arrow's C++ code, the Parquet reader's pages among it, allocates from the
# process's default memory pool, chosen once, at its first use, from this
# variable: jemalloc, which _return_freed_memory_soon has return freed memory
# soon. Left to pyarrow's default (mimalloc), a 1M-row load holds 75 MB more.
os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "jemalloc")

import pyarrow as pa  # noqa: E402
import pyarrow.compute as pc  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from . import clickhouse, sql  # noqa: E402
from .clickhouse import Destination  # noqa: E402
from .errors import collapsed  # noqa: E402
from .insert import Blocks, Inserter, insert_blocks  # noqa: E402
from .native import ColumnMismatch, arrow_type, conform, encode  # noqa: E402
from .schema import Column, Table  # noqa: E402
from .slices import Slice  # noqa: E402

Progress = Callable[[int, int], None]  # (rows done, rows in all)

# Memory stays bounded by the batch and the file's row group, not the file:
# no pre-buffering of column chunks (pyarrow's default keeps what it has read
# until the file is closed), chunks read through a small buffer, and freed
# memory returned to the system within FREED_MEMORY_KEPT_MS (at once, 0, a
# 1M-row file takes 2 s longer: its pages unmapped and faulted in per batch).
BATCH_ROWS = 4096
READ_BUFFER_BYTES = 64 << 10
FREED_MEMORY_KEPT_MS = 100


def _return_freed_memory_soon() -> None:
    try:
        pa.set_memory_pool(pa.jemalloc_memory_pool())
        pa.jemalloc_set_decay_ms(FREED_MEMORY_KEPT_MS)
    except NotImplementedError:  # a pyarrow built without jemalloc keeps its default pool
        pass


class FileMismatch(ValueError):
    """The file is corrupt or does not fit its table; the message is the reason."""


def plan_columns(table: Table, file_schema: pa.Schema, stamped: Collection[str] = ()) -> list[Column]:
    """The table's columns that the file carries or that are `stamped`
    with the snapshot's own value, in table order. A missing column with a
    default is left to the server; one without is an error, and so is one
    the file seems to carry under another name. Columns the table does not
    have are ignored."""
    present = set(file_schema.names) | set(stamped)
    missing = [c.name for c in table.columns if c.name not in present and c.default is None]
    if missing:
        raise FileMismatch("missing column(s) without a default: " + ", ".join(missing))
    refuse_renamed_columns(*column_accounting(table, file_schema.names, stamped))
    return [c for c in table.columns if c.name in present]


def column_accounting(table: Table, file_names: Collection[str],
                      stamped: Collection[str] = ()) -> tuple[list[str], list[str]]:
    """(the file's columns the table lacks, which are ignored; the table's
    columns with a default that the file lacks, which take it)."""
    ignored = [name for name in file_names if name not in table.column_names]
    defaulted = [c.name for c in table.columns if c.default is not None and c.name not in file_names
                 and c.name not in stamped]
    return ignored, defaulted


RENAME_SIMILARITY = 0.8  # difflib's ratio, letter case ignored: severity and Severity, risk_level and riskLevel


def refuse_renamed_columns(ignored: Sequence[str], defaulted: Sequence[str]) -> None:
    """A column the table lacks that is named like a defaulted one it has
    is taken for a rename upstream, not a new column: loading it would set
    every row's value to the default (Severity -> 'medium'). Names less
    alike than RENAME_SIMILARITY are taken as they come."""
    for name in defaulted:
        alike = difflib.get_close_matches(name.lower(), [i.lower() for i in ignored], n=1, cutoff=RENAME_SIMILARITY)
        if alike:
            original = next(i for i in ignored if i.lower() == alike[0])
            raise FileMismatch(f"column {original!r} looks like {name} renamed: {name} would take its DEFAULT in"
                               " every row; refused")


def file_footer(path: str, table: Table) -> tuple[int, tuple[list[str], list[str]]]:
    """(rows, column_accounting) of a Parquet file, from one read of its
    footer (the snapshot's own columns, stamped when absent, aside)."""
    try:
        footer = pq.ParquetFile(path)
        rows, names = footer.metadata.num_rows, footer.schema_arrow.names
    except Exception as exc:  # noqa: BLE001 (whatever the reader raises, the file is unreadable)
        raise FileMismatch(f"not a readable Parquet file ({_one_line(exc)})") from None
    return rows, column_accounting(table, names, stamped=("processing_date", "window_days", "network"))


class CheckedParquet:
    """A Parquet file read batch by batch, every column conformed to its
    table column and the snapshot's own columns (processing_date,
    window_days, network) checked against the snapshot."""

    def __init__(self, path: str, table: Table, day: Slice) -> None:
        _return_freed_memory_soon()
        try:
            self.parquet = pq.ParquetFile(path, pre_buffer=False, buffer_size=READ_BUFFER_BYTES)
            file_schema = self.parquet.schema_arrow
        except Exception as exc:  # noqa: BLE001 (whatever the reader raises, the file is unreadable)
            raise FileMismatch(f"not a readable Parquet file ({_one_line(exc)})") from None
        repeated = sorted({name for name in file_schema.names if file_schema.names.count(name) > 1})
        if repeated:
            raise FileMismatch(f"column {repeated[0]}: appears {file_schema.names.count(repeated[0])} times")
        self.num_rows = self.parquet.metadata.num_rows
        self.expected = {"processing_date": day.date, "window_days": day.window_days}
        if "network" in table.column_names:
            self.expected["network"] = day.network
        if not file_schema.names and not self.num_rows:  # pandas' file of an empty DataFrame: no columns
            self.stamped, self.columns = {}, []
            return
        # the snapshot's own columns, where the file lacks them (the
        # producer's labels file has no date), are the snapshot's values
        self.stamped = {name: value for name, value in self.expected.items() if name not in file_schema.names}
        self.columns = plan_columns(table, file_schema, self.stamped)

    def batches(self) -> Iterator[tuple[int, list[tuple[Column, pa.Array]]]]:
        """Yields (rows, [(Column, conformed array)]) per batch."""
        if not self.columns:
            return
        read = [c.name for c in self.columns if c.name not in self.stamped]
        try:
            for batch in self.parquet.iter_batches(batch_size=BATCH_ROWS, columns=read):
                yield batch.num_rows, [(column, self._stamp(column, batch.num_rows) if column.name in self.stamped
                                        else self._conform(batch, column)) for column in self.columns]
        except FileMismatch:
            raise
        except Exception as exc:  # noqa: BLE001 (the reader's, whatever the bytes: the file is bad input)
            raise FileMismatch(f"corrupt Parquet data ({_one_line(exc)})") from None

    def _stamp(self, column: Column, rows: int) -> pa.Array:
        return pa.repeat(pa.scalar(self.stamped[column.name], type=arrow_type(column.type)), rows)

    def _conform(self, batch: pa.RecordBatch, column: Column) -> pa.Array:
        try:
            default = column.default_value if column.default is not None else None
            array = conform(batch.column(column.name), column.type, default)
            if column.name in self.expected:
                _check_all_equal(array, self.expected[column.name])
            return array
        except ColumnMismatch as exc:
            raise FileMismatch(f"column {column.name}: {exc}") from None
        except Exception as exc:  # noqa: BLE001 (a value Arrow cannot convert is bad input, not a crash)
            raise FileMismatch(f"column {column.name}: cannot be stored as {column.type}"
                               f" ({type(exc).__name__}: {_one_line(exc)})") from None


def _check_all_equal(array: pa.Array, value: object) -> None:
    differs = pc.invert(pc.equal(array, pa.scalar(value, type=array.type)))
    if len(array) and pc.any(differs).as_py():
        raise ColumnMismatch(f"rows of {_shown(array.filter(differs)[0])} in a snapshot of {value}")


def _shown(scalar: pa.Scalar) -> object:
    """A value for a message; a date beyond Python's range as its day number."""
    try:
        return scalar.as_py()
    except (OverflowError, ValueError):
        return f"{scalar.type} {scalar.value}"


def check_parquet(path: str, table: Table, day: Slice, on_progress: Progress | None = None) -> int:
    """Reads and encodes the whole file as DayLoad.load would, writing
    nothing; returns its rows."""
    source = CheckedParquet(path, table, day)
    rows = 0
    for n, _ in encoded_blocks(source):
        rows += n
        if on_progress:
            on_progress(rows, source.num_rows)
    return rows


def encoded_blocks(source: CheckedParquet) -> Blocks:
    """(rows, [(name, ch_type, [buffers])]) per batch: the Native column data
    the load sends, as native.native_block frames it."""
    for n, arrays in source.batches():
        yield n, [(column.name, column.type, _encoded(array, column)) for column, array in arrays]


def _encoded(array: pa.Array, column: Column) -> list:
    try:
        return encode(array, column.type)
    except ColumnMismatch as exc:  # Date and DateTime are narrowed here, and checked as they are
        raise FileMismatch(f"column {column.name}: {exc}") from None


@dataclass(frozen=True)
class DayLoad:
    """One table's day made from one Parquet file: staged, then swapped in.
    A zero-row file empties a day that holds rows only with `allow_empty`
    (INGESTION_ALLOW_EMPTY_DAY): an export bug upstream must not wipe a good
    day. `insert` sends the Native blocks (by default insert_blocks over the
    destination's client)."""

    into: Destination
    day: Slice
    allow_empty: bool = False
    insert: Inserter | None = None

    def load(self, path: str | None, on_progress: Progress | None = None) -> int:
        """Replaces the table's day with the file's rows and returns how many
        there were. On any error the table is untouched."""
        with clickhouse.staging_table(self.into, self.day) as staging:
            rows = self.stage(path, staging, on_progress)
            clickhouse.swap_day(self.into, staging, self.day, rows)  # checked as it staged
        return rows

    def stage(self, path: str | None, staging: str, on_progress: Progress | None = None) -> int:
        """Streams the file into the empty table `staging`, checking every
        batch as it goes, and returns its rows: when it returns, the file
        fits its table and swap_in can make it the day. A `path` of None (the
        producer left the table out) stages no rows."""
        rows = 0
        if path is not None:
            source = CheckedParquet(path, self.into.table, self.day)

            def sent(n: int) -> None:
                nonlocal rows
                rows += n
                if on_progress:
                    on_progress(rows, source.num_rows)

            if source.columns:  # a file of no columns (pandas' empty DataFrame) has no rows to send
                statement, _ = sql.insert_rows(self.into.database, staging, [c.name for c in source.columns])
                insert = self.insert or partial(insert_blocks, self.into.client)
                insert(statement, encoded_blocks(source), sent)
        self.refuse_likely_export_bug(rows)
        return rows

    def swap_in(self, staging: str, rows: int) -> None:
        """Makes the `rows` rows staged in `staging` the table's day,
        atomically; the day may have changed since they were staged, so the
        guard of stage() is applied again."""
        self.refuse_likely_export_bug(rows)
        clickhouse.swap_day(self.into, staging, self.day, rows)

    def refuse_likely_export_bug(self, rows: int) -> None:
        if not rows and not self.allow_empty:
            held = clickhouse.count_day_rows(self.into, self.day)
            if held:
                raise FileMismatch(f"has zero rows, but the day holds {held:,} in {self.into.table.name}; refused as"
                                   " a likely export bug (INGESTION_ALLOW_EMPTY_DAY=1 loads it)")


def file_rows(path: str) -> int:
    """The rows a Parquet file's footer declares."""
    try:
        return pq.ParquetFile(path).metadata.num_rows
    except Exception as exc:  # noqa: BLE001 (whatever the reader raises, the file is unreadable)
        raise FileMismatch(f"not a readable Parquet file ({_one_line(exc)})") from None


def _one_line(exc: BaseException) -> str:
    return collapsed(exc) or type(exc).__name__
