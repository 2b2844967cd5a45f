"""Arrow columns in ClickHouse's Native binary layout.

Arrow buffers already hold most columns as ClickHouse stores them: fixed-width
little-endian numbers, Decimal128 as 16-byte integers, list offsets. So a
column is converted to the table's type with pyarrow's checked casts (which
refuse values out of range) and then handed over as buffers, without a Python
loop over values. Pure functions, no servers."""
import re
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc


class ColumnMismatch(ValueError):
    """A column of the file does not fit its table column; the message is the reason."""


_UNSIGNED = {"UInt8": pa.uint8(), "UInt16": pa.uint16(), "UInt32": pa.uint32(), "UInt64": pa.uint64()}
_FLOATS = {"Float32": pa.float32(), "Float64": pa.float64()}
_DECIMAL = re.compile(r"Decimal128\((\d+)\)")
_ARRAY = re.compile(r"Array\((.+)\)")
_DATE_MAX = 65535  # Date is UInt16 days since 1970-01-01
_DATETIME_MAX = 2**32 - 1


def arrow_type(ch_type: str) -> pa.DataType:
    """The Arrow type whose buffers are the ClickHouse type's Native layout
    (Date and DateTime aside, which are narrowed when encoded)."""
    if ch_type in _UNSIGNED:
        return _UNSIGNED[ch_type]
    if ch_type in _FLOATS:
        return _FLOATS[ch_type]
    if ch_type == "String":
        return pa.string()
    if ch_type == "Date":
        return pa.date32()
    if ch_type == "DateTime":
        return pa.timestamp("s")
    if m := _DECIMAL.fullmatch(ch_type):
        return pa.decimal128(38, int(m.group(1)))
    if m := _ARRAY.fullmatch(ch_type):
        return pa.list_(arrow_type(m.group(1)))
    raise ValueError(f"no Arrow mapping for ClickHouse type {ch_type}")


def conform(array: pa.Array | pa.ChunkedArray, ch_type: str, default: Callable[[], Any] | None = None) -> pa.Array:
    """`array` cast to the Arrow type of `ch_type`, or ColumnMismatch.
    Integers of any width and booleans are accepted when every value fits;
    times finer than a second are floored to it. Nulls are refused, unless
    the column has a default (`default()` gives the value they become) or
    is a Float (they become NaN)."""
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    if pa.types.is_dictionary(array.type):  # e.g. written from a pandas Categorical
        array = array.dictionary_decode()
    target = arrow_type(ch_type)
    if array.null_count and default is None:
        if not pa.types.is_floating(target):
            raise ColumnMismatch(f"{array.null_count} null value(s) in a non-nullable {ch_type} column")
        default = _nan  # pandas writes NaN floats as nulls
    if pa.types.is_null(array.type):  # every value null, of no type: the default's
        result = pa.nulls(len(array), target)
    elif array.type == target:
        result = array
    else:
        if pa.types.is_timestamp(array.type) and pa.types.is_timestamp(target) and array.type.unit != "s":
            array = pc.floor_temporal(array, unit="second")  # as ClickHouse stores a finer time in DateTime
        if not _castable(array.type, target):
            raise ColumnMismatch(f"{array.type} cannot be stored as {ch_type}")
        try:
            result = pc.cast(array, target, safe=True)
        except (pa.ArrowInvalid, OverflowError) as exc:
            raise ColumnMismatch(f"value out of range for {ch_type} ({_first_line(exc)})") from None
        if ch_type == "Float32" and pa.types.is_floating(array.type):
            overflowed = pc.and_(pc.is_inf(result), pc.invert(pc.is_inf(array)))
            if pc.any(overflowed).as_py():
                raise ColumnMismatch("value out of range for Float32")
    if result.null_count:
        assert default is not None  # nulls come only from the file's, which set it or were refused above
        result = pc.fill_null(result, pa.scalar(default(), type=target))
    if pa.types.is_list(result.type) and result.values.null_count:
        raise ColumnMismatch(f"null element in a non-nullable {ch_type} column")
    return result


def _nan() -> float:
    return float("nan")


def _castable(source: pa.DataType, target: pa.DataType) -> bool:
    """The conversions the contract allows: numbers between numeric types,
    text to text, dates and times, lists of such element by element."""
    t = pa.types
    if t.is_list(target):
        return (t.is_list(source) or t.is_large_list(source) or t.is_fixed_size_list(source)) and _castable(
            source.value_type, target.value_type
        )
    if t.is_integer(target):
        return t.is_integer(source) or t.is_boolean(source)
    if t.is_floating(target):
        return t.is_integer(source) or t.is_floating(source) or t.is_decimal(source)
    if t.is_decimal(target):
        return t.is_integer(source) or t.is_decimal(source)
    if t.is_string(target):
        return t.is_string(source) or t.is_large_string(source)
    if t.is_date(target):
        return t.is_date(source) or t.is_timestamp(source)
    if t.is_timestamp(target):
        return t.is_timestamp(source) or t.is_date(source)
    return False


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def encode(array: pa.Array, ch_type: str) -> list[np.ndarray | memoryview]:
    """Native column data of a conformed array: a list of bytes-like buffers."""
    if m := _ARRAY.fullmatch(ch_type):
        offsets = _numbers(array.offsets, np.int32)
        ends = (offsets[1:] - offsets[0]).astype("<u8")
        return [ends] + encode(array.flatten(), m.group(1))
    if ch_type == "String":
        return [_strings(array)]
    if ch_type == "Date":
        return [_narrowed(array, pa.int32(), (0, _DATE_MAX), "<u2", "Date")]
    if ch_type == "DateTime":
        return [_narrowed(array, pa.int64(), (0, _DATETIME_MAX), "<u4", "DateTime")]
    if _DECIMAL.fullmatch(ch_type):
        start = array.offset * 16
        return [memoryview(array.buffers()[1])[start : start + len(array) * 16]]
    return [_numbers(array, array.type.to_pandas_dtype())]


def _numbers(array: pa.Array, dtype: npt.DTypeLike) -> np.ndarray:
    """Zero-copy numpy view of a fixed-width array without nulls."""
    dtype = np.dtype(dtype)
    return np.frombuffer(array.buffers()[1], dtype=dtype, count=len(array), offset=array.offset * dtype.itemsize)


def _narrowed(array: pa.Array, wide: pa.DataType, bounds: tuple[int, int], dtype: str, ch_type: str) -> np.ndarray:
    low, high = bounds
    values = _numbers(array.view(wide), wide.to_pandas_dtype())
    if len(values) and (values.min() < low or values.max() > high):
        raise ColumnMismatch(f"value out of range for {ch_type}")
    return values.astype(dtype)


def _strings(array: pa.Array) -> np.ndarray:
    """Each value as a LEB128 length followed by its bytes: the data buffer
    with the length prefixes inserted in one pass."""
    offsets = np.frombuffer(array.buffers()[1], np.int32, len(array) + 1, array.offset * 4).astype(np.int64)
    lengths = np.diff(offsets)
    data = np.frombuffer(array.buffers()[2] or b"", dtype=np.uint8)[offsets[0] : offsets[-1]]
    if len(lengths) and lengths.min() == lengths.max() < 128:
        # all values of one short length (addresses, ids): rows of [length, bytes]
        width = int(lengths[0])
        rows = np.empty((len(lengths), width + 1), dtype=np.uint8)
        rows[:, 0] = width
        rows[:, 1:] = data.reshape(len(lengths), width)
        return rows.ravel()
    prefix = np.ones(len(lengths), dtype=np.int64)  # one byte per 7 bits of length
    for bits in (7, 14, 21, 28):
        prefix += lengths >= (1 << bits)
    at = np.repeat(offsets[:-1] - offsets[0], prefix)
    rest = np.repeat(lengths, prefix)
    nth = np.arange(len(at)) - np.repeat(np.cumsum(prefix) - prefix, prefix)
    more = np.repeat(prefix, prefix) - 1 > nth
    prefix_bytes = ((rest >> (7 * nth)) & 0x7F) | (more << 7)
    return np.insert(data, at, prefix_bytes.astype(np.uint8))


# (name, ClickHouse type, [buffers]): one column's Native data, as encode() makes its buffers
EncodedColumn = tuple[str, str, list]
CUSTOM_SERIALIZATION_REVISION = 54454  # clickhouse_driver.defines.DBMS_MIN_REVISION_WITH_CUSTOM_SERIALIZATION


def native_block(n_rows: int, columns: list[EncodedColumn], revision: int | None = None) -> list[bytes | memoryview]:
    """One block of Native data as a list of byte buffers: the column and row
    counts, then per column its name, type and data. ClickHouse's Native
    format (`revision` None) is such blocks one after another; the TCP
    protocol of `revision` sends each in a Data packet, with a
    custom-serialization flag per column from revision 54454 on."""
    flag = b"\0" if revision is not None and revision >= CUSTOM_SERIALIZATION_REVISION else b""
    buffers: list[bytes | memoryview] = [_varint(len(columns)) + _varint(n_rows)]
    for name, ch_type, data in columns:
        buffers.append(_text(name) + _text(ch_type) + flag)
        buffers.extend(memoryview(buffer).cast("B") for buffer in data)
    return buffers


def _varint(value: int) -> bytes:
    """LEB128, as ClickHouse writes lengths and counts."""
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _text(value: str) -> bytes:
    data = value.encode()
    return _varint(len(data)) + data
