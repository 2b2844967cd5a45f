"""The SOT ClickHouse as it is (its own tables, ReplacingMergeTree(_version),
rows in several versions until a merge) as a source: SOT_URL=clickhouse://
exports each day into the download over its HTTP or its native port, and
`python -m workflows publish` writes a day in the producer's format (META
1.x, the labels file beside the snapshots) to a folder or an S3 prefix,
which RunDaily then loads."""
import datetime as dt
import hashlib
import json
import os
import socket
import subprocess
import sys

import pytest
from clickhouse_driver import Client

from devkit.local_servers import clickhouse_server, free_port
from devkit.sample import SUPERSEDED_COLUMNS, SUPERSEDED_ROWS, create_sot_tables, fill_sot_database, make_snapshot
from workflows.meta import META_FILENAME
from workflows.schema import SCHEMAS, TABLES
from workflows.sources.sot_clickhouse import SOT_TABLES
from workflows.sources.sot_http import HttpClickHouse, HttpServerError

from common import DATE, REPO, RUN_DAILY_LOCAL, WINDOW, expected_rows
from s3store import BUCKET, PREFIX

SOT_DATABASE = "sot_ethereum"
SOT_PASSWORD, WRONG_PASSWORD = "sot-secret-pw", "wrong-sot-pw"
PRODUCER_FILES = {"raw_alerts": "alerts.parquet", "raw_features": "features.parquet",
                  "raw_clusters": "clusters.parquet", "raw_address_labels": "address_labels.parquet"}
FEATURE_ROWS = 2_000


@pytest.fixture
def sot(pipeline, monkeypatch):
    """The SOT's database in the test ClickHouse, and the pipeline's SOT_*
    pointing at it; returns the server's {protocol: port}."""
    pipeline.ch.execute(f"DROP DATABASE IF EXISTS {SOT_DATABASE}")
    env = {"SOT_HOST": "127.0.0.1", "SOT_PORT": str(pipeline.servers.clickhouse_port), "SOT_DATABASE": "sot_{network}"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    pipeline.env.update(env)
    yield {"native": pipeline.servers.clickhouse_port, "http": pipeline.servers.clickhouse_http_port}
    pipeline.ch.execute(f"DROP DATABASE IF EXISTS {SOT_DATABASE}")


def use_port(pipeline, monkeypatch, port):
    monkeypatch.setenv("SOT_PORT", str(port))
    pipeline.env["SOT_PORT"] = str(port)


def fill(ch, date=DATE):
    """A day in the SOT's tables, SUPERSEDED_ROWS rows of each also in an
    older version (merges stopped, so both stay until the export), and
    another network's labels beside it."""
    create_sot_tables(ch, SOT_DATABASE)
    for name in SOT_TABLES.values():
        ch.execute(f"SYSTEM STOP MERGES {SOT_DATABASE}.{name}")
    tables = make_snapshot("ethereum", date, WINDOW, FEATURE_ROWS)
    fill_sot_database(ch, SOT_DATABASE, tables)
    bitcoin_labels = make_snapshot("bitcoin", date, WINDOW, 200)["raw_address_labels"]
    fill_sot_database(ch, SOT_DATABASE, {"raw_address_labels": bitcoin_labels})
    held = {t: ch.execute(f"SELECT count() FROM {SOT_DATABASE}.{name}")[0][0] for t, name in SOT_TABLES.items()}
    assert held == {t: tables[t].num_rows + SUPERSEDED_ROWS for t in TABLES} | {
        "raw_address_labels": tables["raw_address_labels"].num_rows + bitcoin_labels.num_rows + 2 * SUPERSEDED_ROWS}
    return tables


def loaded_columns(table):
    """What the SOT's tables hold of ours: all but created_at (the load's own)."""
    return [c for c in SCHEMAS[table].column_names if c != "created_at"]


def assert_loaded_row_by_row(pipeline, tables):
    """Exactly the newest version of each row, and this network's labels only."""
    for table in TABLES:
        columns = loaded_columns(table)
        assert pipeline.rows(table, columns=columns) == expected_rows(tables[table], table, columns), table
        superseded = SUPERSEDED_COLUMNS[table]
        assert pipeline.ch.execute(f"SELECT count() FROM {pipeline.database()}.{table}"
                                   f" WHERE {superseded} = 'superseded'") == [(0,)]


def publish_cli(pipeline, *args, **env):
    return subprocess.run([sys.executable, "-m", "workflows", "publish", *args], cwd=REPO,
                          env={**os.environ, **pipeline.env, **env}, capture_output=True, text=True, timeout=300)


def sha256(data):
    return hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("protocol", ["http", "native"])
def test_a_day_exported_from_the_sot_clickhouse_loads_only_its_newest_versions(pipeline, sot, monkeypatch, protocol):
    tables = fill(pipeline.ch)
    use_port(pipeline, monkeypatch, sot[protocol])
    monkeypatch.setenv("SOT_URL", "clickhouse://")

    assert pipeline.run()

    assert_loaded_row_by_row(pipeline, tables)
    assert not os.path.exists(pipeline.download_dir())  # cleaned up as any download


def test_a_day_the_sot_clickhouse_does_not_hold_is_not_published_yet(pipeline, sot, monkeypatch):
    fill(pipeline.ch, date=DATE.replace(day=29))  # the labels, of no day, are there
    use_port(pipeline, monkeypatch, sot["http"])
    monkeypatch.setenv("SOT_URL", "clickhouse://")

    assert not pipeline.run()

    [(task, reason)] = pipeline.failures
    assert type(task).__name__ == "DownloadSOT"
    assert reason == f"ethereum {DATE}: not published yet: no rows of {DATE} (window {WINDOW}) in the SOT" \
                     f" database {SOT_DATABASE}"


@pytest.fixture
def guarded_sot(tmp_path, pipeline):
    """A SOT ClickHouse of this test's own whose user needs a password, with a day in it."""
    ports = {"native": free_port(), "http": free_port()}
    server = clickhouse_server(str(tmp_path), ports["native"], ports["http"], password=SOT_PASSWORD)
    server.start()
    pipeline.env.update(SOT_HOST="127.0.0.1", SOT_DATABASE="sot_{network}")
    fill(Client("127.0.0.1", port=ports["native"], password=SOT_PASSWORD))
    yield ports
    server.stop()


@pytest.mark.parametrize("protocol", ["http", "native"])
def test_a_wrong_sot_password_is_one_line_saying_authentication_failed(pipeline, guarded_sot, protocol):
    port = guarded_sot[protocol]
    refused = f"SOT ClickHouse 127.0.0.1:{port}: authentication failed for user 'default' (SOT_USER, SOT_PASSWORD)"

    run = pipeline.run_cli(*RUN_DAILY_LOCAL,
                           SOT_URL="clickhouse://", SOT_PORT=str(port), SOT_PASSWORD=WRONG_PASSWORD)
    published = publish_cli(pipeline, "--date", DATE.isoformat(), "--network", "ethereum", "--to", pipeline.sot,
                            SOT_PORT=str(port), SOT_PASSWORD=WRONG_PASSWORD)
    right = publish_cli(pipeline, "--date", DATE.isoformat(), "--network", "ethereum", "--to", pipeline.sot,
                        SOT_PORT=str(port), SOT_PASSWORD=SOT_PASSWORD)

    assert run.returncode == 30, run.stderr[-3000:]
    [line] = [line for line in run.stderr.splitlines() if " failed    DownloadSOT(" in line]
    assert line.endswith(f"): ethereum {DATE} download: {refused}"), line
    assert (published.returncode, published.stderr) == (1, f"ethereum {DATE}: {refused}\n")
    assert right.returncode == 0, right.stderr  # the password right, the same server exports
    everything = run.stdout + run.stderr + published.stdout + published.stderr + right.stdout + right.stderr
    assert "Traceback" not in everything
    for password in (SOT_PASSWORD, WRONG_PASSWORD):
        assert password not in everything


def test_a_sot_port_nothing_listens_on_is_one_line_naming_it(pipeline, monkeypatch):
    """Neither HTTP's /ping nor the native protocol gets an answer: one line
    that names the SOT ClickHouse's host:port and says the connection was
    refused, in the run and in publish."""
    closed = free_port()
    for name, value in {"SOT_HOST": "127.0.0.1", "SOT_PORT": str(closed), "SOT_URL": "clickhouse://"}.items():
        monkeypatch.setenv(name, value)
        pipeline.env[name] = value

    assert not pipeline.run()
    published = publish_cli(pipeline, "--date", DATE.isoformat(), "--network", "ethereum", "--to", pipeline.sot)

    [(task, reason)] = pipeline.failures
    assert type(task).__name__ == "DownloadSOT"
    # said as what it is, not as a ClickHouse error ("Code: 210") of the native protocol tried after HTTP
    assert reason == f"ethereum {DATE} download: SOT ClickHouse 127.0.0.1:{closed}: connection refused" \
                     " (SOT_HOST, SOT_PORT)", reason
    assert published.returncode == 1, published.stderr
    [line] = published.stderr.splitlines()
    assert line == f"ethereum {DATE}: SOT ClickHouse 127.0.0.1:{closed}: connection refused (SOT_HOST, SOT_PORT)", line


def test_a_sot_port_that_never_answers_is_one_line_after_one_connect_timeout(pipeline, monkeypatch):
    """Accepted (the kernel's backlog) and never answered: the line says so
    from the HTTP probe's timeout; the native protocol is not tried after it
    (its line would be "SocketTimeoutError: Code: 209", a second timeout later)."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    port = silent.getsockname()[1]
    for name, value in {"SOT_HOST": "127.0.0.1", "SOT_PORT": str(port), "SOT_URL": "clickhouse://",
                        "INGESTION_CONNECT_TIMEOUT": "2"}.items():
        monkeypatch.setenv(name, value)
        pipeline.env[name] = value
    try:
        published = publish_cli(pipeline, "--date", DATE.isoformat(), "--network", "ethereum", "--to", pipeline.sot)
    finally:
        silent.close()
    assert published.returncode == 1, published.stderr
    [line] = published.stderr.splitlines()
    assert line == f"ethereum {DATE}: SOT ClickHouse 127.0.0.1:{port}: no answer within 2 s" \
                   " (INGESTION_CONNECT_TIMEOUT)", line


def test_an_error_the_server_meets_mid_export_over_http_is_its_own(pipeline):
    """An error after the server's first megabyte has gone out (its HTTP
    buffer) comes at the end of the body, after status 200: the reader finds
    it there, with its code, after the rows sent before it."""
    client = HttpClickHouse(f"http://127.0.0.1:{pipeline.servers.clickhouse_http_port}", ("default", ""), 10).connect()
    rows = []
    with pytest.raises(HttpServerError) as failed:
        for row in client.execute_iter("SELECT number, throwIf(number = 500000) FROM system.numbers LIMIT 600000",
                                        settings={"max_block_size": 1000}):
            rows.append(row)
    assert failed.value.code == 395  # FUNCTION_THROW_IF_VALUE_IS_NON_ZERO
    assert "throwIf" in failed.value.message
    assert 0 < len(rows) <= 500_000 and rows == [(n, 0) for n in range(len(rows))]


def assert_published_in_the_producers_format(meta, files, tables):
    """META.json of schema 1.x: counts per file, bare sha256 of each file's bytes."""
    assert set(meta) == {"schema_version", "batch_id", "network", "processing_date", "window_days", "generated_at",
                         "counts", "sha256"}
    assert (meta["schema_version"], meta["batch_id"], meta["network"], meta["processing_date"],
            meta["window_days"]) == ("1.0.0", f"ethereum-{DATE}-{WINDOW}d", "ethereum", DATE.isoformat(), WINDOW)
    generated = dt.datetime.fromisoformat(meta["generated_at"].replace("Z", "+00:00"))
    assert meta["generated_at"].endswith("Z")
    assert abs(dt.datetime.now(dt.timezone.utc) - generated) < dt.timedelta(minutes=5)
    assert meta["counts"] == {PRODUCER_FILES[t].removesuffix(".parquet"): tables[t].num_rows for t in TABLES}
    assert meta["sha256"] == {PRODUCER_FILES[t]: sha256(files[t]) for t in TABLES}


def test_published_to_a_folder_in_the_producers_format_then_loaded_row_by_row(pipeline, sot):
    tables = fill(pipeline.ch)
    published = publish_cli(pipeline, "--date", DATE.isoformat(), "--network", "ethereum", "--to", pipeline.sot,
                            SOT_PORT=str(sot["http"]))

    assert published.returncode == 0, published.stderr
    folder = pipeline.snapshot_dir()
    labels = os.path.join(os.path.dirname(pipeline.sot), "address-labels", "ethereum_address_labels.parquet")
    assert published.stdout == f"published ethereum {DATE} (window {WINDOW} days) to {folder}, its labels to {labels}\n"
    assert sorted(os.listdir(folder)) == sorted([META_FILENAME, *list(PRODUCER_FILES.values())[:3]])
    paths = {t: os.path.join(folder, name) for t, name in PRODUCER_FILES.items()} | {"raw_address_labels": labels}
    files = {t: open(path, "rb").read() for t, path in paths.items()}
    assert_published_in_the_producers_format(json.load(open(os.path.join(folder, META_FILENAME))), files, tables)
    # META.json last: no reader sees it before the files it lists
    assert os.stat(os.path.join(folder, META_FILENAME)).st_mtime_ns >= \
        max(os.stat(path).st_mtime_ns for path in paths.values())
    assert pipeline.run()  # SOT_URL is the folder; the labels are beside it, where it looks by default
    assert_loaded_row_by_row(pipeline, tables)

    nothing = publish_cli(pipeline, "--date", "2024-10-01", "--network", "ethereum", "--to", pipeline.sot)
    assert nothing.returncode == 1
    assert nothing.stderr.strip() == f"ethereum 2024-10-01: nothing to publish: no rows of 2024-10-01 (window" \
                                     f" {WINDOW}) in the SOT database {SOT_DATABASE}"


def test_published_to_an_s3_prefix_in_the_producers_format_then_loaded_row_by_row(pipeline, sot, s3):
    tables = fill(pipeline.ch)
    published = publish_cli(pipeline, "--date", DATE.isoformat(), "--network", "ethereum",
                            "--to", f"s3://{BUCKET}/{PREFIX}")

    assert published.returncode == 0, published.stderr
    labels = f"{BUCKET}/address-labels/ethereum_address_labels.parquet"
    assert published.stdout.strip().endswith(f"to s3://{BUCKET}/{PREFIX}/ethereum/{DATE}/{WINDOW},"
                                             f" its labels to s3://{labels}")
    keys = {t: labels if t == "raw_address_labels" else f"{BUCKET}/{s3.key(name)}"
            for t, name in PRODUCER_FILES.items()}
    files = {t: s3.filesystem.open_input_stream(key).readall() for t, key in keys.items()}
    meta = json.loads(s3.filesystem.open_input_stream(f"{BUCKET}/{s3.key(META_FILENAME)}").readall())
    assert_published_in_the_producers_format(meta, files, tables)
    assert pipeline.run()  # SOT_URL is the same prefix; the labels beside it
    assert_loaded_row_by_row(pipeline, tables)
