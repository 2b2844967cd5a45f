"""Real Redis, ClickHouse and luigid, started once per test session on free
loopback ports in a temporary directory, and a clean slate for every test."""
import json
import os
import shutil
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import luigi
import pytest
from clickhouse_driver import Client
from hypothesis import settings as hypothesis_settings
from redis import Redis

from devkit.local_servers import LocalServers, free_port, luigid_server
from devkit.sample import make_snapshot, write_snapshot
from workflows.pipeline.base import IngestionTask
from workflows.pipeline.daily import RunDaily
from workflows.schema import SCHEMAS, TABLES

# expected_rows and luigid_tasks too, for test modules that still import them from here
from common import (  # noqa: F401
    DATE,
    FEATURE_ROWS,
    REPO,
    WEBHOOK_TOKEN,
    WINDOW,
    close_clickhouse_connections,
    expected_rows,
    luigid_tasks,
)

# CI (CI=true) tries the same examples every time, so a landing never waits on
# a new random find; elsewhere every run explores new ones
hypothesis_settings.register_profile("ci", derandomize=True)
if os.environ.get("CI"):
    hypothesis_settings.load_profile("ci")

SERVER_FIXTURES = {"servers", "pipeline", "engine", "engine26", "server1816", "s3_store", "namespaces"}


def pytest_collection_modifyitems(items):
    """`servers` on every test that starts or uses a server (Redis, ClickHouse,
    luigid, S3, a subprocess of the pipeline), so that `pytest -m "not servers"`
    runs the unit layer alone. The 26.x engine (chdb) is in-process but heavy."""
    for item in items:
        if SERVER_FIXTURES & set(item.fixturenames):
            item.add_marker(pytest.mark.servers)


@pytest.fixture(scope="session")
def servers(tmp_path_factory):
    local = LocalServers(tmp_path_factory.mktemp("servers"), luigi_config=os.path.join(REPO, "luigi.cfg")).start()
    yield local
    close_clickhouse_connections()
    local.stop()


class Pipeline:
    """The pipeline pointed at the test servers, with helpers to publish
    snapshots, run it and read what it loaded."""

    def __init__(self, servers, root):
        self.servers = servers
        self.sot = os.path.join(root, "sot")
        self.downloads = os.path.join(root, "downloads")
        self.ch = Client("127.0.0.1", port=servers.clickhouse_port)
        self.redis = Redis.from_url(servers.env()["REDIS_URL"])
        self.env = dict(servers.env(), SOT_URL=self.sot, SOT_DOWNLOAD_DIR=self.downloads,
                        INGESTION_NETWORKS="ethereum,bitcoin", INGESTION_WINDOW_DAYS=str(WINDOW),
                        INGESTION_RETRY_ATTEMPTS="1", INGESTION_RETRY_DELAY="1")
        self.ran, self.failures = [], []

    def publish(self, network="ethereum", date=DATE, tables=None, **options):
        """Writes a snapshot to the SOT store; returns its tables."""
        tables = tables or make_snapshot(network, date, WINDOW, FEATURE_ROWS)
        write_snapshot(self.sot, network, date, WINDOW, tables, **options)
        return tables

    def snapshot_dir(self, network="ethereum", date=DATE):
        return os.path.join(self.sot, network, date.isoformat(), str(WINDOW))

    def download_dir(self, network="ethereum", date=DATE):
        return os.path.join(self.downloads, network, date.isoformat(), str(WINDOW))

    def run(self, date=DATE, networks="ethereum"):
        """RunDaily in this process with a local scheduler; True when all succeeded."""
        luigi.task_register.Register.clear_instance_cache()
        return luigi.build([RunDaily(date=date, networks=networks)], local_scheduler=True,
                           log_level="WARNING")

    def snapshot_file(self, filename, network="ethereum", date=DATE):
        return os.path.join(self.snapshot_dir(network, date), filename)

    def tamper(self, filename, data=b"tampered"):
        """Changes a published file after its checksum was written."""
        with open(self.snapshot_file(filename), "ab") as stream:
            stream.write(data)

    def withhold_meta(self):
        """The SOT has not finished its export: no META.json yet."""
        shutil.move(self.snapshot_file("META.json"), self.snapshot_file("META.json.later"))

    def release_meta(self):
        shutil.move(self.snapshot_file("META.json.later"), self.snapshot_file("META.json"))

    def _cli(self, args, env):
        command = [os.path.join(os.path.dirname(sys.executable), "luigi"), "--module", "workflows", *args]
        return command, {**os.environ, **self.env, **env}

    def run_cli(self, *args, **env):
        """The `luigi` command as an operator types it."""
        command, env = self._cli(args, env)
        return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)

    def start_cli(self, *args, **env):
        """The `luigi` command, started in the background; its stderr goes to its stdout."""
        command, env = self._cli(args, env)
        return subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)

    def database(self, network="ethereum"):
        return f"risk_assessment_{network}"

    def count(self, table, network="ethereum", date=DATE):
        return self.ch.execute(
            f"SELECT count() FROM {self.database(network)}.{table}"
            " WHERE processing_date = %(d)s AND window_days = %(w)s",
            {"d": date, "w": WINDOW})[0][0]

    def counts(self, network="ethereum", date=DATE):
        return {table: self.count(table, network, date) for table in TABLES}

    def rows(self, table, network="ethereum", date=DATE, columns=None):
        schema = SCHEMAS[table]
        columns = columns or schema.column_names
        return self.ch.execute(
            f"SELECT {', '.join(columns)} FROM {self.database(network)}.{table}"
            f" WHERE processing_date = %(d)s AND window_days = %(w)s ORDER BY {', '.join(schema.order_by)}",
            {"d": date, "w": WINDOW})

    def markers(self, network="ethereum"):
        return self.ch.execute(
            f"SELECT table_name, processing_date, loaded, rows, version FROM {self.database(network)}.ingestion_markers"
            " ORDER BY table_name, processing_date, version")


@pytest.fixture
def webhook():
    """An HTTP server on loopback that keeps the JSON bodies posted to it; its
    URL holds a token, as real webhook URLs do."""
    bodies = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/hook?token={WEBHOOK_TOKEN}", bodies
    server.shutdown()


@pytest.fixture
def pipeline(servers, tmp_path, monkeypatch):
    p = Pipeline(servers, str(tmp_path))
    for name, value in p.env.items():
        monkeypatch.setenv(name, value)
    p.redis.flushdb()
    for (database,) in p.ch.execute("SHOW DATABASES"):
        if database.startswith("risk_assessment_"):
            p.ch.execute(f"DROP DATABASE {database}")
    IngestionTask._schemas_ready.clear()
    luigi.task_register.Register.clear_instance_cache()  # tasks hold the settings they were made with

    @luigi.Task.event_handler(luigi.Event.SUCCESS)
    def record_success(task):
        p.ran.append(task)

    @luigi.Task.event_handler(luigi.Event.FAILURE)
    def record_failure(task, exception):
        p.failures.append((task, str(exception)))

    yield p
    luigi.Task.remove_event_handler(luigi.Event.SUCCESS, record_success)
    luigi.Task.remove_event_handler(luigi.Event.FAILURE, record_failure)
    p.ch.disconnect()  # ClickHouse stops at once with no connection open (close_clickhouse_connections)


@pytest.fixture
def start_luigid(pipeline, tmp_path):
    """Starts a luigid of this test's own, so no state of another test's runs
    (a task given up on stays so for an hour) reaches it; the pipeline's
    commands report to it."""
    started = []

    def start(config=os.path.join(REPO, "luigi.cfg")):
        port = free_port()
        server = luigid_server(str(tmp_path), port, config)
        server.start()
        started.append(server)
        pipeline.env["LUIGI_SCHEDULER_URL"] = f"http://127.0.0.1:{port}/"
        return pipeline.env["LUIGI_SCHEDULER_URL"]

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def luigid(start_luigid):
    return start_luigid()


@pytest.fixture(scope="session")
def s3_store(tmp_path_factory):
    """moto's S3 server for the session (tests/s3store.py)."""
    from s3store import S3Store
    store = S3Store(str(tmp_path_factory.mktemp("s3")), free_port())
    store.server.start()
    yield store
    store.server.stop()


@pytest.fixture
def s3(s3_store, pipeline, monkeypatch):
    """An empty bucket, and the pipeline reading snapshots from it."""
    from s3store import BUCKET, PREFIX
    s3_store.reset()
    env = {"SOT_URL": f"s3://{BUCKET}/{PREFIX}", "SOT_S3_ENDPOINT": s3_store.endpoint, "SOT_S3_REGION": "us-east-1",
           "AWS_ACCESS_KEY_ID": "setup", "AWS_SECRET_ACCESS_KEY": "setup", "AWS_EC2_METADATA_DISABLED": "true"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    pipeline.env.update(env)
    return s3_store
