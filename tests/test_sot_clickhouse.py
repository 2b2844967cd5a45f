"""The SOT ClickHouse as a source: SOT_URL=clickhouse:// exports each day
into the download, and `python -m workflows publish` writes a day as a
snapshot to a folder or an S3 prefix, which RunDaily then loads."""
import json
import os
import subprocess
import sys

import pytest
from conftest import DATE, REPO, WINDOW, expected_rows
from s3store import BUCKET, PREFIX

from workflows.meta import META_FILENAME, TABLES, file_digest
from workflows.sample import fill_sot_database, make_snapshot

SOT_DATABASE = "sot_ethereum"


@pytest.fixture
def sot(pipeline, monkeypatch):
    """The SOT's database in the test ClickHouse, and the pipeline's SOT_* pointing at it."""
    pipeline.ch.execute(f"DROP DATABASE IF EXISTS {SOT_DATABASE}")
    env = {"SOT_HOST": "127.0.0.1", "SOT_PORT": str(pipeline.servers.clickhouse_port), "SOT_DATABASE": "sot_{network}"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    pipeline.env.update(env)
    yield
    pipeline.ch.execute(f"DROP DATABASE IF EXISTS {SOT_DATABASE}")


def fill(pipeline, date=DATE):
    """A day in the SOT database, with another network's labels beside it."""
    tables = make_snapshot("ethereum", date, WINDOW, 2_000)
    fill_sot_database(pipeline.ch, SOT_DATABASE, "ethereum", date, WINDOW, tables)
    labels = make_snapshot("bitcoin", date, WINDOW, 200)["raw_address_labels"]
    pipeline.ch.execute(f"INSERT INTO {SOT_DATABASE}.raw_address_labels ({', '.join(labels.column_names)}) VALUES",
                        [tuple(row.values()) for row in labels.to_pylist()])
    return tables


def assert_loaded_row_by_row(pipeline, tables):
    for table in TABLES:
        assert pipeline.rows(table) == expected_rows(tables[table], table), table


def publish_cli(pipeline, *args):
    return subprocess.run([sys.executable, "-m", "workflows", "publish", *args], cwd=REPO,
                          env={**os.environ, **pipeline.env}, capture_output=True, text=True, timeout=300)


def test_a_day_exported_from_the_sot_clickhouse_loads_row_by_row(pipeline, sot, monkeypatch):
    tables = fill(pipeline)
    monkeypatch.setenv("SOT_URL", "clickhouse://")

    assert pipeline.run()

    assert_loaded_row_by_row(pipeline, tables)  # of this network only: no bitcoin labels
    assert not os.path.exists(pipeline.download_dir())  # cleaned up as any download


def test_a_day_the_sot_clickhouse_does_not_hold_is_not_published_yet(pipeline, sot, monkeypatch):
    fill(pipeline, date=DATE.replace(day=29))
    monkeypatch.setenv("SOT_URL", "clickhouse://")

    assert not pipeline.run()

    [(task, reason)] = pipeline.failures
    assert type(task).__name__ == "DownloadSOT"
    assert reason == f"ethereum {DATE}: not published yet: no rows of {DATE} (window {WINDOW}) in the SOT" \
                     f" database {SOT_DATABASE}"


def test_a_sot_port_that_answers_http_gets_one_line_naming_the_native_port(pipeline, sot):
    http_port = pipeline.servers.clickhouse_http_port
    result = pipeline.run_cli("RunDaily", "--date", DATE.isoformat(), "--networks", "ethereum", "--local-scheduler",
                              SOT_URL="clickhouse://", SOT_PORT=str(http_port))

    assert result.returncode == 30, result.stderr[-3000:]
    [line] = [line for line in result.stderr.splitlines() if " failed    DownloadSOT(" in line]
    assert line.endswith(f"): ethereum {DATE} download: SOT ClickHouse 127.0.0.1:{http_port} answers HTTP:"
                         " SOT_PORT must be its native protocol port (9000, or 9440 with SOT_SECURE=1)"), line
    assert "Traceback" not in result.stderr


def test_published_to_a_folder_then_loaded_row_by_row(pipeline, sot):
    tables = fill(pipeline)
    published = publish_cli(pipeline, "--date", DATE.isoformat(), "--network", "ethereum", "--to", pipeline.sot)

    assert published.returncode == 0, published.stderr
    assert published.stdout.strip() == f"published ethereum {DATE} (window {WINDOW} days) to {pipeline.snapshot_dir()}"
    folder = pipeline.snapshot_dir()
    meta = json.load(open(os.path.join(folder, META_FILENAME)))
    assert meta["files"] == [{"filename": f"{t}.parquet",
                              "checksum": "sha256:" + file_digest(os.path.join(folder, f"{t}.parquet"), "sha256")}
                             for t in TABLES]
    # META.json last: no reader sees it before the files it lists
    assert os.stat(os.path.join(folder, META_FILENAME)).st_mtime_ns >= \
        max(os.stat(os.path.join(folder, f"{t}.parquet")).st_mtime_ns for t in TABLES)
    assert pipeline.run()
    assert_loaded_row_by_row(pipeline, tables)

    nothing = publish_cli(pipeline, "--date", "2024-10-01", "--network", "ethereum", "--to", pipeline.sot)
    assert nothing.returncode == 1
    assert nothing.stderr.strip() == f"ethereum 2024-10-01: nothing to publish: no rows of 2024-10-01 (window" \
                                     f" {WINDOW}) in the SOT database {SOT_DATABASE}"


def test_published_to_an_s3_prefix_then_loaded_row_by_row(pipeline, sot, s3):
    tables = fill(pipeline)
    published = publish_cli(pipeline, "--date", DATE.isoformat(), "--network", "ethereum",
                            "--to", f"s3://{BUCKET}/{PREFIX}")

    assert published.returncode == 0, published.stderr
    assert published.stdout.strip().endswith(f"to s3://{BUCKET}/{PREFIX}/ethereum/{DATE}/{WINDOW}")
    assert pipeline.run()  # SOT_URL is the same prefix
    assert_loaded_row_by_row(pipeline, tables)
