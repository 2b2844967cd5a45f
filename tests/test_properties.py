"""Property-based tests of what reads untrusted input: META.json parsing and
checking a Parquet file against its table. Whatever the bytes, the outcome is
the result or one clear line (MetaError, FileMismatch), never another kind
of failure."""
import io
import json
import string

import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devkit.sample import make_snapshot
from workflows.loader import FileMismatch, check_parquet
from workflows.meta import PRODUCER_NAMES, PRODUCER_OPTIONAL, MetaError, parse_meta
from workflows.schema import SCHEMAS, TABLES
from workflows.slices import Slice

from common import DATE, WINDOW

NETWORK = "ethereum"
PLAIN = set(string.ascii_letters + string.digits + "_.-")

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=30)
names = st.one_of(st.sampled_from([f"{t}.parquet" for t in TABLES]), st.text(max_size=40),
                  st.sampled_from(["../raw_alerts.parquet", "/etc/shadow", "raw_alerts.parquet\0", ".", "..",
                                   "sub/raw_alerts.parquet", "räw_alerts.parquet", ""]))
checksums = st.one_of(st.just("sha256:" + "a" * 64), st.text(max_size=80), st.integers(), st.none(),
                      st.from_regex(r"(sha256|md5|SHA256):[0-9a-fA-F]{0,70}", fullmatch=True))
entries = st.fixed_dictionaries({"filename": names, "checksum": checksums})


def outcome(document):
    """parse_meta's result, checked, or the MetaError's one line."""
    try:
        parsed = parse_meta(document)
    except MetaError as exc:
        assert "\n" not in str(exc)
        return None
    assert list(parsed) == list(TABLES)
    for table, entry in parsed.items():
        assert entry.table == table
        if entry.filename is None:  # the producer left the table out: no rows that day
            assert table in PRODUCER_OPTIONAL and entry.rows == 0
            continue
        assert entry.filename in (f"{table}.parquet", f"{PRODUCER_NAMES[table]}.parquet")
        assert set(entry.filename) <= PLAIN and not entry.filename.startswith(".")
        assert len(entry.digest) == {"sha256": 64, "md5": 32}[entry.algorithm]
        assert entry.rows is None or (isinstance(entry.rows, int) and entry.rows >= 0)
    return parsed


@given(json_values)
def test_any_json_document(document):
    outcome(json.dumps(document))


@given(st.binary(max_size=300))
def test_any_bytes(data):
    outcome(data)


@given(st.lists(entries, max_size=8), st.dictionaries(st.text(max_size=5), json_values, max_size=3))
def test_file_lists_of_any_names_and_checksums(files, extra):
    outcome(json.dumps({**extra, "files": files}))


@given(st.dictionaries(names, st.one_of(st.fixed_dictionaries({"md5": checksums}), json_values), max_size=6))
def test_legacy_documents(files):
    outcome(json.dumps({"files": files}))


producer_files = st.sampled_from([f"{name}.parquet" for name in (*PRODUCER_NAMES.values(), "money_flows",
                                                                 "patterns")]) | names
producer_counts = st.dictionaries(st.sampled_from([*PRODUCER_NAMES.values(), "money_flows"]) | st.text(max_size=8),
                                  st.integers(-5, 10**12) | json_values, max_size=6)


@given(st.sampled_from(["1.0.0", "1.2", "2.0.0", "1", "", None, 1]),
       st.dictionaries(producer_files, st.just("a" * 64) | checksums, min_size=2, max_size=7), producer_counts)
def test_producer_documents(version, sums, counts):
    document = {"schema_version": version, "sha256": sums, "counts": counts}
    parsed = outcome(json.dumps(document))
    if parsed is not None:
        assert str(version).startswith("1")
        for entry in parsed.values():
            assert entry.filename is None or entry.rows == counts[entry.filename.removesuffix(".parquet")]


@given(st.integers(min_value=1, max_value=200_000))
def test_nesting_of_any_depth(depth):
    outcome('{"files": ' + "[" * depth + "]" * depth + "}")


@given(st.sampled_from(TABLES).flatmap(lambda t: st.tuples(st.just(t), st.lists(st.just(f"{t}.parquet"),
                                                                                 min_size=2, max_size=3))))
def test_a_file_listed_twice(duplicated):
    table, twice = duplicated
    files = [{"filename": f"{t}.parquet", "checksum": "sha256:" + "b" * 64} for t in TABLES if t != table]
    files += [{"filename": name, "checksum": "sha256:" + "c" * 64} for name in twice]
    assert outcome(json.dumps({"files": files})) is None


SAMPLE = make_snapshot(NETWORK, DATE, WINDOW, 40)


def parquet_bytes(table):
    out = io.BytesIO()
    pq.write_table(table, out)
    return out.getvalue()


def checked(tmp_path_factory, table_name, data):
    """check_parquet's row count for a file of these bytes, or None for a FileMismatch."""
    path = tmp_path_factory.mktemp("p") / f"{table_name}.parquet"
    path.write_bytes(data)
    try:
        return check_parquet(str(path), SCHEMAS[table_name], Slice(NETWORK, DATE, WINDOW))
    except FileMismatch as exc:
        assert "\n" not in str(exc) and str(exc)
        return None


relaxed = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@relaxed
@given(st.sampled_from(TABLES), st.data())
def test_truncated_or_altered_parquet(tmp_path_factory, table_name, data):
    good = parquet_bytes(SAMPLE[table_name])
    cut = data.draw(st.integers(min_value=0, max_value=len(good)))
    flips = data.draw(st.lists(st.tuples(st.integers(0, len(good) - 1), st.integers(0, 255)), max_size=4))
    damaged = bytearray(good[:cut] if cut < len(good) else good)
    for at, value in flips:
        if at < len(damaged):
            damaged[at] = value
    rows = checked(tmp_path_factory, table_name, bytes(damaged))
    if bytes(damaged) == good:
        assert rows == SAMPLE[table_name].num_rows


@relaxed
@given(st.binary(max_size=2000))
def test_random_bytes_as_parquet(tmp_path_factory, data):
    assert checked(tmp_path_factory, "raw_alerts", data) is None or data.startswith(b"PAR1")


@relaxed
@given(st.data())
def test_columns_dropped_added_nulled_or_out_of_range(tmp_path_factory, data):
    table_name = data.draw(st.sampled_from(TABLES))
    table = SAMPLE[table_name]
    schema = SCHEMAS[table_name]
    dropped = data.draw(st.lists(st.sampled_from(table.column_names), unique=True, max_size=3))
    for name in dropped:
        table = table.drop_columns([name])
    if data.draw(st.booleans()):
        table = table.append_column("unexpected", pa.array(range(table.num_rows), pa.int64()))
    rows = data.draw(st.integers(0, table.num_rows))
    table = table.slice(0, rows)
    change = data.draw(st.sampled_from(["none", "null", "huge", "negative"]))
    numeric = [f.name for f in table.schema if pa.types.is_integer(f.type)]
    if change == "null" and table.num_columns:
        name = data.draw(st.sampled_from(table.column_names))
        column = table.column(name).to_pylist()
        if column:
            column[-1] = None
        table = table.set_column(table.column_names.index(name), pa.field(name, table.schema.field(name).type),
                                 pa.array(column, table.schema.field(name).type))
    elif change in ("huge", "negative") and numeric and rows:
        name = data.draw(st.sampled_from(numeric))
        values = pa.array([2**40 if change == "huge" else -1] * rows, pa.int64())
        table = table.set_column(table.column_names.index(name), name, values)

    result = checked(tmp_path_factory, table_name, parquet_bytes(table))

    # the snapshot's own columns, when absent, take the snapshot's values
    required = {c.name for c in schema.columns if c.default is None} - {"processing_date", "window_days", "network"}
    if result is not None:
        assert result == rows
        assert not (required & set(dropped))  # a file without a required column is never accepted
    elif not (required & set(dropped)) and change == "none":
        raise AssertionError("a file that fits its table was refused")


@given(st.lists(st.sampled_from(["a", "b_1", "toYYYYMM(d)", "tuple(a, b)", "'x,y'", "f(g(h, i), j)"]),
                min_size=1, max_size=5))
def test_key_columns_of_any_key_written_with_or_without_its_parentheses(parts):
    from workflows.layout import key_columns
    assert key_columns(", ".join(parts)) == tuple(parts)
    assert key_columns("(" + ", ".join(parts) + ")") == tuple(parts)



def perturbed_column(data, rows):
    """A column of another type, or of out-of-range or null values."""
    kind = data.draw(st.sampled_from(["int64", "float64", "string", "bool", "date32", "timestamp", "decimal",
                                      "null", "list", "binary", "dictionary"]))
    if kind == "null":
        return pa.nulls(rows)
    if kind == "int64":
        return pa.array(data.draw(st.lists(st.integers(-2**63, 2**63 - 1), min_size=rows, max_size=rows)), pa.int64())
    if kind == "float64":
        return pa.array(data.draw(st.lists(st.floats() | st.none(), min_size=rows, max_size=rows)), pa.float64())
    if kind == "string":
        return pa.array(data.draw(st.lists(st.text(max_size=5) | st.none(), min_size=rows, max_size=rows)))
    if kind == "bool":
        return pa.array(data.draw(st.lists(st.booleans(), min_size=rows, max_size=rows)), pa.bool_())
    if kind == "date32":
        return pa.array(data.draw(st.lists(st.integers(-2**31, 2**31 - 1), min_size=rows, max_size=rows)), pa.int32()
                        ).cast(pa.date32())
    if kind == "timestamp":
        unit = data.draw(st.sampled_from(["s", "ms", "us", "ns"]))
        bound = 2**63 // 1000 if unit == "s" else 2**63 - 1  # Parquet stores seconds as milliseconds
        values = data.draw(st.lists(st.integers(-bound, bound), min_size=rows, max_size=rows))
        return pa.array(values, pa.int64()).cast(pa.timestamp(unit, tz=data.draw(st.sampled_from([None, "UTC"]))))
    if kind == "decimal":
        scale = data.draw(st.integers(0, 20))
        values = data.draw(st.lists(st.decimals(allow_nan=False, allow_infinity=False, places=scale,
                                                min_value=-10**17, max_value=10**17), min_size=rows, max_size=rows))
        return pa.array(values, pa.decimal128(38, scale))
    if kind == "list":
        return pa.array(data.draw(st.lists(st.lists(st.integers(-2**63, 2**63 - 1) | st.none(), max_size=3) | st.none(),
                                           min_size=rows, max_size=rows)), pa.list_(pa.int64()))
    if kind == "binary":
        return pa.array(data.draw(st.lists(st.binary(max_size=5), min_size=rows, max_size=rows)), pa.binary())
    return pa.array(data.draw(st.lists(st.sampled_from(["a", "b"]), min_size=rows, max_size=rows))).dictionary_encode()


@relaxed
@given(st.data())
def test_any_schema_or_value_is_a_load_or_one_line(tmp_path_factory, data):
    """Columns retyped, duplicated, filled with out-of-range dates and
    times, nulls or another type's values: check_parquet counts the rows
    or says in one line why not (a SnapshotError names the file); nothing
    else escapes."""
    table_name = data.draw(st.sampled_from(TABLES))
    table = SAMPLE[table_name].slice(0, data.draw(st.integers(1, 5)))
    for _ in range(data.draw(st.integers(1, 3))):
        name = data.draw(st.sampled_from(table.column_names))
        column = perturbed_column(data, table.num_rows)
        if data.draw(st.booleans()):
            table = table.append_column(name, column)  # a second column of the same name
        else:
            table = table.set_column(table.column_names.index(name), name, column)
    rows = checked(tmp_path_factory, table_name, parquet_bytes(table))
    assert rows in (None, table.num_rows)
