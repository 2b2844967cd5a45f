"""Pure functions, no servers: META.json, checksums, settings, Native encoding."""
import dataclasses
import datetime as dt
import decimal
import hashlib
import io
import json
import logging
import struct
import traceback

import pyarrow as pa
import pytest
from clickhouse_driver.varint import write_varint

from workflows import sql as statements
from workflows.config import ConfigError, Settings
from workflows.errors import OneLineFailure, OneLineTracebacks, WithoutTracebacks
from workflows.meta import MetaError, file_digest, parse_meta
from workflows.native import ColumnMismatch, conform, encode
from workflows.schema import SCHEMAS
from workflows.slices import Slice

SHA = "ab" * 32
MD5 = "cd" * 16
NAMES = ["raw_alerts", "raw_features", "raw_clusters", "raw_address_labels"]


def current_meta(**overrides):
    files = [{"filename": f"{t}.parquet", "checksum": f"sha256:{SHA}"} for t in NAMES]
    return json.dumps({"files": files, "exported_at": "2024-10-31T00:10:00Z", **overrides})


def test_meta_current_form():
    entries = parse_meta(current_meta())
    assert list(entries) == NAMES
    assert entries["raw_features"].filename == "raw_features.parquet"
    assert (entries["raw_alerts"].algorithm, entries["raw_alerts"].digest) == ("sha256", SHA)


def test_meta_legacy_md5_form():
    entries = parse_meta(json.dumps({"files": {f"{t}.parquet": {"md5": MD5.upper()} for t in NAMES}}))
    assert {(e.algorithm, e.digest) for e in entries.values()} == {("md5", MD5)}


@pytest.mark.parametrize("text, reason", [
    ("{", "not valid JSON"),
    ("[]", 'no "files" key'),
    (json.dumps({"files": 3}), "neither a list nor an object"),
    (json.dumps({"files": [{"filename": "raw_alerts.parquet", "checksum": f"sha256:{SHA}"}]}),
     "does not list raw_features.parquet, raw_clusters.parquet, raw_address_labels.parquet"),
    (current_meta().replace(f"sha256:{SHA}", "sha256:" + SHA[:-2], 1), "is not 64 hex digits"),
    (current_meta().replace(f"sha256:{SHA}", SHA, 1), "is not of the form sha256:<hex>"),
    (current_meta().replace(f"sha256:{SHA}", f"sha1:{SHA}", 1), "unknown checksum algorithm 'sha1'"),
    (current_meta().replace("raw_clusters.parquet", "../raw_clusters.parquet"), "is not a plain file name"),
    (current_meta().replace("raw_clusters.parquet", "/tmp/raw_clusters.parquet"), "is not a plain file name"),
    (json.dumps({"files": {f"{t}.parquet": {"sha1": MD5} for t in NAMES}}), 'legacy entry has no "md5"'),
])
def test_meta_refuses(text, reason):
    with pytest.raises(MetaError) as error:
        parse_meta(text)
    assert reason in str(error.value)


def test_file_digest_matches_hashlib_across_chunks(tmp_path):
    data = bytes(range(256)) * 40000  # spans several 4 MiB chunks
    path = tmp_path / "f"
    path.write_bytes(data)
    seen = []
    assert file_digest(path, "sha256", seen.append) == hashlib.sha256(data).hexdigest()
    assert file_digest(path, "md5") == hashlib.md5(data).hexdigest()
    assert seen[-1] == len(data) and len(seen) == 3


ENV = {"SOT_URL": "/srv/sot"}


def test_settings_defaults():
    s = Settings.from_env(ENV)
    assert (s.redis_url, s.clickhouse_port, s.networks, s.window_days) == (
        "redis://localhost:6379/0", 9000, ("ethereum", "bitcoin", "torus"), 195)
    assert s.database_for("bitcoin") == "risk_assessment_bitcoin"
    assert Settings.from_env(dict(ENV, REDIS_URL="", REDIS_HOST="r", REDIS_PORT="7", REDIS_DB="2")).redis_url == \
        "redis://r:7/2"


@pytest.mark.parametrize("env, message", [
    (dict(ENV, CLICKHOUSE_PORT="nine"), "CLICKHOUSE_PORT: 'nine' is not a whole number"),
    (dict(ENV, REDIS_URL="", REDIS_PORT="99999"), "REDIS_PORT: 99999 is outside 1..65535"),
    (dict(ENV, INGESTION_NETWORKS="ethereum,Bit-coin"), "INGESTION_NETWORKS: 'Bit-coin' is not a network name"),
    (dict(ENV, INGESTION_WINDOW_DAYS="0"), "INGESTION_WINDOW_DAYS: 0 is outside"),
    (dict(ENV, CLICKHOUSE_SECURE="maybe"), "CLICKHOUSE_SECURE: 'maybe' is not 0 or 1"),
    (dict(ENV, CLICKHOUSE_DATABASE="risk;drop"), "CLICKHOUSE_DATABASE"),
])
def test_settings_refuse(env, message):
    with pytest.raises(ConfigError) as error:
        Settings.from_env(env)
    assert message in str(error.value)


def leb128(n):
    """clickhouse-driver's own varint, as a reference independent of ours."""
    out = io.BytesIO()
    write_varint(n, out)
    return out.getvalue()


def native(array, ch_type):
    return b"".join(bytes(memoryview(b).cast("B")) for b in encode(conform(array, ch_type), ch_type))


def test_strings_are_length_prefixed_bytes_even_when_sliced():
    values = ["", "a", "é", "x" * 127, "y" * 128, "z" * 20000, "w" * (1 << 21)]
    array = pa.array(["skipped"] + values).slice(1)
    assert native(array, "String") == b"".join(leb128(len(v.encode())) + v.encode() for v in values)


def test_arrays_are_end_offsets_then_values():
    array = pa.array([["skipped"], ["a", "b"], [], ["c"]]).slice(1)
    assert native(array, "Array(String)") == struct.pack("<3Q", 2, 2, 3) + b"\x01a\x01b\x01c"
    hours = pa.array([[1, 2], [300]], pa.list_(pa.uint16()))
    assert native(hours, "Array(UInt16)") == struct.pack("<2Q3H", 2, 3, 1, 2, 300)


def test_decimal128_is_the_exact_scaled_integer():
    value = decimal.Decimal("-123456789012345678.123456789012345678")
    array = pa.array([value], pa.decimal128(38, 18))
    assert int.from_bytes(native(array, "Decimal128(18)"), "little", signed=True) == \
        -123456789012345678123456789012345678
    assert native(pa.array([decimal.Decimal("1.5")], pa.decimal128(10, 2)), "Decimal128(18)") == \
        (15 * 10**17).to_bytes(16, "little")


def test_dates_flags_and_int64_that_fit():
    assert native(pa.array([dt.date(1970, 1, 2), dt.date(2024, 10, 30)]), "Date") == struct.pack("<2H", 1, 20026)
    assert native(pa.array([True, False]), "UInt8") == b"\x01\x00"
    assert native(pa.array([65535, 0], pa.int64()), "UInt16") == struct.pack("<2H", 65535, 0)
    assert native(pa.array([dt.datetime(2024, 10, 31, 0, 30)], pa.timestamp("s")), "DateTime") == \
        struct.pack("<I", 1730334600)


@pytest.mark.parametrize("array, ch_type, reason", [
    (pa.array([70000], pa.int64()), "UInt16", "value out of range for UInt16"),
    (pa.array([-1], pa.int64()), "UInt32", "value out of range for UInt32"),
    (pa.array([1e300]), "Float32", "value out of range for Float32"),
    (pa.array([decimal.Decimal("1e21")], pa.decimal128(38, 0)), "Decimal128(18)",
     "value out of range for Decimal128(18)"),
    (pa.array([dt.date(2200, 1, 1)]), "Date", "value out of range for Date"),
    (pa.array([1, None], pa.uint32()), "UInt32", "1 null value(s)"),
    (pa.array([["a", None]]), "Array(String)", "null element"),
    (pa.array(["1"]), "UInt8", "string cannot be stored as UInt8"),
    (pa.array([1.5]), "Decimal128(18)", "double cannot be stored as Decimal128(18)"),
])
def test_values_that_do_not_fit_are_refused(array, ch_type, reason):
    with pytest.raises(ColumnMismatch) as error:
        encode(conform(array, ch_type), ch_type)
    assert reason in str(error.value)


def test_tables_have_the_contract_columns():
    assert {name: len(t.columns) for name, t in SCHEMAS.items()} == {
        "raw_alerts": 16, "raw_features": 99, "raw_clusters": 16, "raw_address_labels": 12}
    sql, _ = statements.create_table("db", SCHEMAS["raw_alerts"])
    assert "`volume_usd` Decimal128(18) DEFAULT 0" in sql and "`created_at` DateTime DEFAULT now()" in sql
    assert "PARTITION BY (processing_date, window_days)" in sql and "LowCardinality" not in sql


def test_read_ahead_keeps_order_and_hands_over_errors():
    from workflows.insert import read_ahead

    assert list(read_ahead(iter(range(100)), 2)) == list(range(100))

    def failing():
        yield 1
        raise ValueError("corrupt page")

    items = read_ahead(failing(), 2)
    assert next(items) == 1
    with pytest.raises(ValueError, match="corrupt page"):
        next(items)


def test_read_ahead_stops_its_thread_when_the_consumer_stops():
    import threading

    from workflows.insert import read_ahead

    items = read_ahead(iter(range(10**6)), 2)
    assert next(items) == 0
    items.close()  # the consumer failed, e.g. the server went away
    assert not [t for t in threading.enumerate() if t.name == "insert-read-ahead"]


def test_env_example_lists_every_variable_with_its_default():
    import os

    from workflows.config import DEFAULTS, LUIGI_FROM_ENVIRONMENT

    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), ".env.example")
    listed = dict(line.split("=", 1) for line in open(path).read().splitlines() if line and not line.startswith("#"))
    expected = {**DEFAULTS, **dict(LUIGI_FROM_ENVIRONMENT.values()), "REDIS_URL": "redis://localhost:6379/0",
                "SOT_URL": "/srv/sot"}
    assert listed == expected


def test_sot_url_forms(tmp_path):
    from workflows.sources import open_source
    from workflows.sources.local import LocalSnapshotSource
    from workflows.sources.s3 import S3SnapshotSource
    from workflows.sources.sot_clickhouse import ClickHouseSnapshotSource

    def source(url, **env):
        return open_source(Settings.from_env({"SOT_URL": url, **env}))

    assert source(str(tmp_path)).root == str(tmp_path)
    # the producer's labels: beside the snapshots folder, or where SOT_LABELS_URL says
    assert source(f"{tmp_path}/snapshots/").labels.root == f"{tmp_path}/address-labels"
    assert source(str(tmp_path), SOT_LABELS_URL="/srv/labels").labels.root == "/srv/labels"
    labels = source("s3://risk-scoring/snapshots", SOT_S3_ANONYMOUS="1").labels
    assert (labels.bucket, labels.prefix) == ("risk-scoring", "address-labels")
    assert source("s3://bucket", SOT_S3_ANONYMOUS="1").labels.prefix == "address-labels"
    assert isinstance(source(str(tmp_path), SOT_LABELS_URL="s3://b/labels").labels, S3SnapshotSource)
    local = source(f"file://{tmp_path}/store%20a")
    assert isinstance(local, LocalSnapshotSource) and local.root == f"{tmp_path}/store a"
    s3 = source("s3://risk-scoring/snapshots/", SOT_S3_ANONYMOUS="1")
    assert isinstance(s3, S3SnapshotSource) and (s3.bucket, s3.prefix) == ("risk-scoring", "snapshots")
    assert s3.describe("ethereum/2024-10-30/195") == "s3://risk-scoring/snapshots/ethereum/2024-10-30/195"
    assert source("s3://bucket").describe("n/d/1") == "s3://bucket/n/d/1"
    assert isinstance(source("clickhouse://"), ClickHouseSnapshotSource)
    with pytest.raises(ConfigError, match="credentials go in AWS_ACCESS_KEY_ID"):
        source("s3://AKIA:secret@bucket/prefix")
    with pytest.raises(ConfigError, match="SOT_URL: ftp:// is not a snapshot store"):
        source("ftp://host/x")


def test_dictionary_and_timezone_columns_are_taken_as_their_values():
    categorical = pa.array(["USDT", "ETH", "USDT"]).dictionary_encode()
    assert native(categorical, "String") == b"\x04USDT\x03ETH\x04USDT"
    aware = pa.array([dt.datetime(2024, 10, 31, 0, 30)], pa.timestamp("ms", tz="UTC"))
    assert native(aware, "DateTime") == struct.pack("<I", 1730334600)


def test_strings_of_one_length_take_the_same_layout():
    addresses = ["0x" + f"{i:040x}" for i in range(5)]
    array = pa.array(["skipped"] + addresses).slice(1)
    assert native(array, "String") == b"".join(b"\x2a" + a.encode() for a in addresses)
    assert native(pa.array(["", ""]), "String") == b"\x00\x00"
    assert native(pa.array(["é" * 64] * 2), "String") == b"".join([leb128(128) + ("é" * 64).encode()] * 2)


def test_the_clickhouse_driver_internals_the_insert_relies_on_are_there():
    """workflows/insert.insert_blocks speaks the driver's packet layer:
    this fails when a driver upgrade moves what it relies on."""
    import inspect

    import clickhouse_driver
    from clickhouse_driver import defines
    from clickhouse_driver.client import Client
    from clickhouse_driver.connection import Connection

    from workflows.insert import DRIVER_INTERNALS

    assert clickhouse_driver.__version__ == "0.2.11"
    owners = {"Client": Client, "Connection": Connection}
    for name in DRIVER_INTERNALS:
        owner, attribute = name.split(".")
        assert callable(getattr(owners[owner], attribute, None)), name
    # the driver's own INSERT reads what the server sends after every block and after the last
    assert inspect.getsource(Client.send_data).count("self.receive_profile_events()") == 2
    assert defines.DBMS_MIN_PROTOCOL_VERSION_WITH_PROFILE_EVENTS_IN_INSERT == 54456
    assert defines.DBMS_MIN_REVISION_WITH_CUSTOM_SERIALIZATION == 54454
    assert defines.CLIENT_REVISION >= 54456  # so current servers do send ProfileEvents to us


def test_native_block_frames_columns_as_the_native_format():
    from workflows.native import native_block

    encoded = [("n", "UInt16", encode(conform(pa.array([1, 300], pa.int64()), "UInt16"), "UInt16")),
               ("s", "String", encode(conform(pa.array(["a", "Ω" * 100]), "String"), "String"))]
    plain = b"".join(bytes(b) for b in native_block(2, encoded))
    flagged = b"".join(bytes(b) for b in native_block(2, encoded, revision=54454))

    head = leb128(2) + leb128(2)
    n_column = leb128(1) + b"n" + leb128(6) + b"UInt16"
    s_column = leb128(1) + b"s" + leb128(6) + b"String"
    values = struct.pack("<HH", 1, 300)
    strings = leb128(1) + b"a" + leb128(200) + ("Ω" * 100).encode()
    assert plain == head + n_column + values + s_column + strings
    assert flagged == head + n_column + b"\0" + values + s_column + b"\0" + strings


def test_the_packages_luigi_settings_are_the_documented_defaults():
    """What a run gets when none of the variables luigi settings come from is set."""
    from luigi.configuration import LuigiConfigParser

    from workflows.config import LUIGI_DEFAULTS, LUIGI_FROM_ENVIRONMENT

    config = LuigiConfigParser()
    config.read([LUIGI_DEFAULTS])
    assert "${" not in open(LUIGI_DEFAULTS).read()  # a stock luigid must start with no variable set
    luigi_defaults = {("core", "scheduler_url"): "http://localhost:8082/", ("email", "receiver"): "",
                      ("smtp", "host"): "localhost", ("smtp", "port"): "25"}
    for (section, option), (variable, documented) in LUIGI_FROM_ENVIRONMENT.items():
        assert config.get(section, option, luigi_defaults.get((section, option))) == documented, variable
    assert config.getint("retcode", "task_failed") == 30 and config.getboolean("worker", "keep_alive")


def test_failures_counted_on_this_host_over_the_disable_window(tmp_path):
    from workflows.alerts import Attempts, disable_window

    here = Attempts(None, "unused", str(tmp_path / "failures" / "LoadTable_x"))
    window = disable_window()
    assert [here.count_here(now=t) for t in (100.0, 200.0, 300.0)] == [1, 2, 3]
    assert here.count_here(now=200.0 + window) == 2  # 100 and 200 have left the window; 300 has not


def test_failures_on_this_host_count_in_their_round_only(tmp_path):
    from workflows.alerts import Attempts

    here = Attempts(None, "unused", str(tmp_path / "failures" / "LoadTable_x"))
    assert [here.count_here(now=t, round_id="a") for t in (100.0, 200.0)] == [1, 2]
    assert here.count_here(now=300.0, round_id="b") == 1  # a reset elsewhere began round b
    assert here.count_here(now=400.0) == 4  # Redis did not answer: every failure in the window counts
    assert here.count_here(now=500.0, round_id="b") == 3  # b's two, and the one of no known round
    assert here.count_here(now=600.0, round_id="c", adopt=True) == 4  # c carries on b (Redis emptied): b, b, -, c


def test_a_clickhouse_server_error_becomes_its_code_and_first_sentence():
    from clickhouse_driver.errors import ServerException

    from workflows.errors import one_line

    trace = "\n".join(f"{i}. /usr/bin/clickhouse(DB::Something{i}()+0x{i:x}) [0x5]" for i in range(40))
    error = ServerException(f"DB::Exception: Table db.x doesn't exist.\nStack trace:\n\n{trace}", code=60)
    assert len(str(error)) > 2000
    assert one_line(error) == "ClickHouse error 60: DB::Exception: Table db.x doesn't exist."
    assert one_line(ValueError("a\nb  c")) == "ValueError: a b c"
    assert len(one_line(ValueError("x" * 5000))) == 500


def test_a_staging_table_is_abandoned_when_its_owners_lease_lapsed_or_it_is_old():
    from workflows import leases
    from workflows.clickhouse import abandoned, staging_name, staging_owner

    mine = staging_name("raw_alerts", Slice("ethereum", dt.date(2024, 10, 30), 195))
    assert staging_owner(mine) == leases.owner() and leases.owner().startswith("p")
    held = {leases.owner()}
    assert not abandoned(mine, 10, held) and abandoned(mine, 2 * 3600, held)
    assert abandoned(mine, 10, set())  # its owner's lease lapsed: a dead process, on any host or in any container
    handed_over = staging_name("raw_alerts", Slice("ethereum", dt.date(2024, 10, 30), 195), download_id="d" * 32)
    assert not abandoned(handed_over, 10, set()) and abandoned(handed_over, 2 * 3600, set())  # outlives its stager


def test_a_date_beyond_pythons_range_is_named_not_a_crash(tmp_path):
    """Found by test_properties: a bit flip in a date32 column."""
    import pyarrow.parquet as pq

    from devkit.sample import make_snapshot
    from workflows.loader import FileMismatch, check_parquet

    day = dt.date(2024, 10, 30)
    table = make_snapshot("ethereum", day, 195, 100)["raw_address_labels"]
    dates = pa.array([day] * (table.num_rows - 1), pa.date32()).cast(pa.int32()).to_pylist() + [2**30]
    table = table.set_column(table.schema.get_field_index("processing_date"), "processing_date",
                             pa.array(dates, pa.int32()).cast(pa.date32()))
    pq.write_table(table, tmp_path / "labels.parquet")
    with pytest.raises(FileMismatch, match=r"column processing_date: rows of date32\[day\] 1073741824 in a snapshot"):
        check_parquet(str(tmp_path / "labels.parquet"), SCHEMAS["raw_address_labels"], Slice("ethereum", day, 195))


class Unreachable(OneLineFailure):
    pass


def logged(filter_, log):
    """What `log(logger)` writes through a logger that has `filter_`."""
    stream = io.StringIO()
    logger = logging.Logger("under-test")
    logger.addHandler(logging.StreamHandler(stream))
    logger.addFilter(filter_)
    log(logger)
    return stream.getvalue()


def raised(exc):
    try:
        raise exc
    except Exception as caught:
        return caught


@pytest.mark.parametrize("one_line_filter", [WithoutTracebacks, OneLineTracebacks])
def test_a_one_line_failure_is_logged_as_its_line_without_a_traceback(one_line_filter):
    def log(logger):
        try:
            raise Unreachable("Redis 127.0.0.1:1: refused")
        except Unreachable:
            logger.exception("[pid %s] failed %s", 7, "Task()")
    assert logged(one_line_filter(), log) == "[pid 7] failed Task(): Redis 127.0.0.1:1: refused\n"


def test_other_failures_keep_their_traceback_unless_every_one_is_reported_again():
    def log(logger):
        try:
            raise KeyError("surprise")
        except KeyError:
            logger.exception("failed %s", "Task()")
    kept = logged(WithoutTracebacks(), log)
    assert kept.startswith("failed Task()\nTraceback (most recent call last):") and "KeyError: 'surprise'" in kept
    assert logged(OneLineTracebacks(), log) == "failed Task(): KeyError: 'surprise'\n"


def test_a_failed_complete_logged_with_its_trace_in_the_text_keeps_only_the_one_line():
    def complete_error(exc):
        trace = "".join(traceback.format_exception(raised(exc)))
        return lambda logger: logger.warning(f"Will not run Task() or any dependencies due to error in complete()"
                                             f" method:\n{trace}")
    assert logged(WithoutTracebacks(), complete_error(Unreachable("ClickHouse down"))) == \
        "Will not run Task() or any dependencies due to error in complete() method: ClickHouse down\n"
    assert "Traceback" in logged(WithoutTracebacks(), complete_error(KeyError("other")))


def test_a_compressed_frame_is_what_clickhouse_reads():
    """Checksum, method byte, sizes and LZ4 data, as the server's
    CompressedReadBuffer and clickhouse-driver's reader check them."""
    import lz4.block
    from clickhouse_cityhash.cityhash import CityHash128
    from clickhouse_driver.reader import read_binary_uint128

    from workflows.insert import compressed_frame

    data = b"".join(struct.pack("<I", i % 256) + b"\x2a0x" + b"ab" * 20 for i in range(20_000))  # column-like
    checksum, rest = compressed_frame(data)
    assert read_binary_uint128(io.BytesIO(checksum)) == CityHash128(rest)
    method, compressed_size, size = struct.unpack("<BII", rest[:9])
    assert (method, compressed_size, size) == (0x82, len(rest), len(data))
    assert lz4.block.decompress(rest[9:], uncompressed_size=size) == data
    assert len(checksum) + len(rest) < len(data) / 2


@pytest.mark.parametrize("value, expected", [("lz4", "lz4"), ("LZ4", "lz4"), ("none", None), ("auto", "auto"),
                                             (None, "auto")])
def test_compression_setting(value, expected):
    env = {"SOT_URL": "/x"} | ({"INGESTION_COMPRESSION": value} if value else {})
    assert Settings.from_env(env).compression == expected


def test_an_unknown_compression_is_refused():
    with pytest.raises(ConfigError, match="INGESTION_COMPRESSION: 'zstd' is not auto, lz4 or none"):
        Settings.from_env({"SOT_URL": "/x", "INGESTION_COMPRESSION": "zstd"})


@pytest.mark.parametrize("hosts, setting, sent", [
    ("127.0.0.1", "auto", False), ("localhost,127.0.0.2:9001", "auto", False),
    ("clickhouse.internal", "auto", "lz4"), ("127.0.0.1,10.0.0.7", "auto", "lz4"),  # one replica elsewhere
    ("127.0.0.1", "lz4", "lz4"), ("clickhouse.internal", "none", False)])
def test_auto_compression_sends_lz4_blocks_unless_clickhouse_is_this_machine(hosts, setting, sent):
    from workflows.clients import _client, clickhouse_server

    settings = Settings.from_env({"SOT_URL": "/x", "CLICKHOUSE_HOST": hosts, "INGESTION_COMPRESSION": setting})
    client = _client(clickhouse_server(settings))  # not connected: the setting is the client's own
    assert bool(client.connection.compression) == bool(sent)


def test_arrows_own_allocations_use_the_pool_that_returns_freed_memory():
    """The Parquet reader's pages come from Arrow's process-wide default
    pool, which is chosen at its first use: importing the loader first
    makes it jemalloc (pyarrow's default, mimalloc, keeps 75 MB more)."""
    import os
    import subprocess
    import sys

    code = "import workflows.loader, pyarrow; print(pyarrow.default_memory_pool().backend_name)"
    env = {k: v for k, v in os.environ.items() if k != "ARROW_DEFAULT_MEMORY_POOL"}
    shown = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert shown.stdout.strip() == "jemalloc"


def test_key_columns_reads_a_key_however_the_server_spells_it():
    from workflows.layout import key_columns
    assert key_columns("(processing_date, window_days)") == ("processing_date", "window_days")
    assert key_columns("processing_date, window_days") == ("processing_date", "window_days")
    assert key_columns("toYYYYMM(processing_date)") == ("toYYYYMM(processing_date)",)
    assert key_columns("(window_days, toYYYYMM(processing_date))") == ("window_days", "toYYYYMM(processing_date)")
    assert key_columns("(toYYYYMM(d), x) , 'a,b'") == ("(toYYYYMM(d), x)", "'a,b'")
    assert key_columns("") == ()


def test_layout_differences_name_what_keeps_a_table_from_a_day_swap():
    from workflows.layout import ServedTable, layout_differences, migrated_layout
    from workflows.schema import SCHEMAS
    features = SCHEMAS["raw_features"]
    ours = tuple((c.name, c.type.replace("Decimal128(18)", "Decimal(38, 18)")) for c in features.columns)
    served = ServedTable("MergeTree", "(processing_date, window_days)", "processing_date, window_days, address", ours)
    assert layout_differences(features, served) == []
    with_bool = tuple((n, "Bool" if n == "is_whale" else t) for n, t in ours)
    assert layout_differences(features, dataclasses.replace(served, columns=with_bool)) == []  # the same bytes
    original = ServedTable("ReplacingMergeTree", "(window_days, toYYYYMM(processing_date))",
                           "window_days, processing_date, address",
                           tuple((n, "String" if n == "kcore" else t) for n, t in with_bool if n != "pagerank")
                           + (("extra", "UInt8"),), ("INDEX idx_a address TYPE bloom_filter(0.01) GRANULARITY 4",))
    assert layout_differences(features, original) == [
        "engine ReplacingMergeTree, not MergeTree",
        "partition key (window_days, toYYYYMM(processing_date)), the pipeline's (processing_date, window_days)",
        "order (window_days, processing_date, address), the pipeline's (processing_date, window_days, address)",
        "no column pagerank", "columns the pipeline lacks: extra", "types kcore String (the pipeline's differ)"]
    rebuilt = migrated_layout(features, original)
    assert rebuilt.indexes == original.indexes and rebuilt.order_by == features.order_by
    assert {c.name: c.type for c in rebuilt.columns}["is_whale"] == "Bool"
    assert {c.name: c.type for c in rebuilt.columns}["kcore"] == "UInt32"  # not the same bytes: the pipeline's


def test_only_the_steps_that_read_the_store_need_sot_url():
    from workflows.config import require_sot_url

    settings = Settings.from_env({})  # status, reset, crontab and check read no snapshot
    with pytest.raises(ConfigError, match="SOT_URL is not set"):
        require_sot_url(settings)
    require_sot_url(Settings.from_env({"SOT_URL": "/x"}))


@pytest.mark.parametrize("message, args, shown", [
    ("Failed connecting to remote scheduler %r", ("http://admin:s3cr%2Ft@luigid:8082",),
     "Failed connecting to remote scheduler 'http://admin@luigid:8082'"),
    ("Errors (3 attempts) when connecting to remote scheduler 'https://u:p@h/'", (),
     "Errors (3 attempts) when connecting to remote scheduler 'https://u@h/'"),
    ("scheduled 9 tasks", (), "scheduled 9 tasks"),
])
def test_luigis_lines_never_show_a_urls_password(message, args, shown, caplog):
    """luigi prints its scheduler URL as given when luigid stops answering mid-run."""
    import logging

    import workflows.pipeline.base  # noqa: F401 (installs the filters on luigi's logger)

    luigi_logger = logging.getLogger("luigi-interface")
    with caplog.at_level(logging.WARNING, logger="luigi-interface"):
        try:
            raise RuntimeError(f"when connecting to remote scheduler {args[0] if args else 'x'}")
        except RuntimeError:
            luigi_logger.warning(message, *args, exc_info=True)
    [record] = caplog.records
    text = caplog.text
    assert record.getMessage().startswith(shown), record.getMessage()
    assert "s3cr" not in text and ":p@" not in text
