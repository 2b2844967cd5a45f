"""Property-based tests of what reads untrusted input: META.json parsing and
checking a Parquet file against its table. Whatever the bytes, the outcome is
the result or one clear line (MetaError, FileMismatch), never another kind
of failure."""
import datetime as dt
import io
import json
import string

import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from workflows.loader import FileMismatch, check_parquet
from workflows.meta import TABLES, MetaError, parse_meta
from workflows.sample import make_snapshot
from workflows.schema import TABLES as SCHEMAS

DATE, WINDOW, NETWORK = dt.date(2024, 10, 30), 195, "ethereum"
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
        assert entry.filename == f"{table}.parquet"
        assert set(entry.filename) <= PLAIN and not entry.filename.startswith(".")
        assert len(entry.digest) == {"sha256": 64, "md5": 32}[entry.algorithm]
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
        return check_parquet(str(path), SCHEMAS[table_name], DATE, WINDOW, NETWORK)
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

