"""Scale-out against the real thing: a ZooKeeper and two clickhouse-server
18.16 replicas of one shard (cluster `sot`), started for this module on free
loopback ports, and workers that stand for two hosts (their own download
directories and INGESTION_WORKER_HOST) under one luigid."""
import io
import os
import re
import threading
import time
import uuid

import pytest
from clickhouse_driver import Client

from devkit.local_servers import clickhouse_server, free_port, zookeeper_server
from workflows.config import Settings
from workflows.schema import SCHEMAS, TABLES
from workflows.slices import Slice
from workflows.status import print_status

from common import DATE, REPO, RUN_DAILY_LOCAL, WINDOW, close_clickhouse_connections, expected_rows, luigid_tasks, poll

CLUSTER = "sot"
CATCH_UP_SECONDS = 60


class Replicas:
    def __init__(self, root):
        self.zookeeper_port, self.ports = free_port(), [free_port(), free_port()]
        os.makedirs(os.path.join(root, "zookeeper"))
        self.zookeeper = zookeeper_server(os.path.join(root, "zookeeper"), self.zookeeper_port)
        self.servers = []
        for name, port in zip(("r1", "r2"), self.ports):
            os.makedirs(os.path.join(root, name))
            self.servers.append(clickhouse_server(
                os.path.join(root, name), port, free_port(),
                replica={"name": name, "cluster": CLUSTER, "interserver_port": free_port(),
                         "zookeeper_port": self.zookeeper_port, "ports": self.ports}))

    def client(self, i):
        return Client("127.0.0.1", port=self.ports[i])

    def address(self, *indexes):
        return ",".join(f"127.0.0.1:{self.ports[i]}" for i in indexes)


@pytest.fixture(scope="module")
def replicas(tmp_path_factory):
    cluster = Replicas(str(tmp_path_factory.mktemp("cluster")))
    cluster.zookeeper.start()
    for server in cluster.servers:
        server.start()
    yield cluster
    close_clickhouse_connections()
    for server in cluster.servers + [cluster.zookeeper]:
        server.stop()


@pytest.fixture
def on_cluster(pipeline, replicas, monkeypatch):
    """The pipeline loading into the cluster through replica 1, into databases of this test's own."""
    database = f"c{uuid.uuid4().hex[:8]}_{{network}}"

    def use(*indexes):
        env = {"CLICKHOUSE_HOST": replicas.address(*indexes), "CLICKHOUSE_PORT": "",
               "CLICKHOUSE_CLUSTER": CLUSTER, "CLICKHOUSE_DATABASE": database}
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        pipeline.env.update(env)
    use(0)
    pipeline.use_replicas = use
    pipeline.cluster_database = database.replace("{network}", "ethereum")
    yield pipeline
    for server in replicas.servers:
        if server.process and server.process.poll() is not None:
            server.start()  # a test that stopped one leaves the next a whole cluster


def day_rows(client, database, table):
    schema = SCHEMAS[table]
    return client.execute(f"SELECT {', '.join(schema.column_names)} FROM {database}.{table}"
                          " WHERE processing_date = %(d)s AND window_days = %(w)s"
                          f" ORDER BY {', '.join(schema.order_by)}", {"d": DATE, "w": WINDOW})


def counts(client, database):
    return {t: client.execute(f"SELECT count() FROM {database}.{t} WHERE processing_date = %(d)s"
                              " AND window_days = %(w)s", {"d": DATE, "w": WINDOW})[0][0] for t in TABLES}


def wait_for_rows(client, database, expected, seconds=CATCH_UP_SECONDS):
    # an exception: the replica is still starting, or has not got the table yet
    poll(lambda: counts(client, database) == expected, seconds, "the replica caught up", interval=0.5,
         ignoring=Exception)


def status_text(pipeline):
    out = io.StringIO()
    print_status(Settings.from_env(), [Slice("ethereum", DATE, WINDOW)], out=out)
    return out.getvalue()


def test_a_day_loaded_through_one_replica_is_on_both_exactly_and_done_for_a_worker_of_the_other(
        on_cluster, replicas):
    pipeline, database = on_cluster, on_cluster.cluster_database
    tables = pipeline.publish()

    assert pipeline.run()

    expected = {t: tables[t].num_rows for t in TABLES}
    wait_for_rows(replicas.client(1), database, expected)
    for i in (0, 1):
        client = replicas.client(i)
        for table in TABLES:
            assert day_rows(client, database, table) == expected_rows(tables[table], table), (i, table)
        engines = dict(client.execute("SELECT name, engine FROM system.tables WHERE database = %(d)s",
                                      {"d": database}))
        assert {engines[t] for t in TABLES} == {"ReplicatedMergeTree"}
        assert engines["ingestion_markers"] == "ReplicatedReplacingMergeTree"
        assert not [name for name in engines if name.startswith("_staging_")]
    # the markers are replicated: a worker that talks to replica 2 finds the day done
    pipeline.use_replicas(1)
    pipeline.ran.clear()
    assert pipeline.run()
    assert [type(task).__name__ for task in pipeline.ran] == []
    pipeline.use_replicas(0, 1)
    shown = status_text(pipeline)
    for port in replicas.ports:
        assert f"127.0.0.1:{port}  ethereum  {DATE}  arrived" in shown, shown


def test_with_one_replica_down_a_day_loads_through_the_other_and_it_catches_up(on_cluster, replicas):
    pipeline, database = on_cluster, on_cluster.cluster_database
    pipeline.publish(date=DATE.replace(day=29))
    assert pipeline.run(date=DATE.replace(day=29))  # the schema is there, as on any day but the first
    tables = pipeline.publish()
    down = replicas.servers[1]
    close_clickhouse_connections()
    down.stop()

    started = time.monotonic()
    assert pipeline.run()
    assert time.monotonic() - started < 60

    expected = {t: tables[t].num_rows for t in TABLES}
    assert counts(replicas.client(0), database) == expected
    pipeline.use_replicas(0, 1)
    shown = status_text(pipeline)
    assert f"127.0.0.1:{replicas.ports[0]}  ethereum  {DATE}  arrived" in shown
    assert f"127.0.0.1:{replicas.ports[1]}  ethereum  down: " in shown, shown
    down.start()  # on its own data: it fetches what it missed
    wait_for_rows(replicas.client(1), database, expected)
    for table in TABLES:
        assert day_rows(replicas.client(1), database, table) == expected_rows(tables[table], table), table
    assert f"127.0.0.1:{replicas.ports[1]}  ethereum  {DATE}  arrived" in status_text(pipeline)


def test_a_worker_turns_to_the_next_replica_when_the_first_is_down(on_cluster, replicas):
    pipeline, database = on_cluster, on_cluster.cluster_database
    pipeline.publish(date=DATE.replace(day=29))
    assert pipeline.run(date=DATE.replace(day=29))
    tables = pipeline.publish()
    close_clickhouse_connections()
    replicas.servers[0].stop()
    pipeline.use_replicas(0, 1)

    result = pipeline.run_cli(*RUN_DAILY_LOCAL)

    assert result.returncode == 0, result.stderr[-3000:]
    expected = {t: tables[t].num_rows for t in TABLES}
    assert counts(replicas.client(1), database) == expected
    replicas.servers[0].start()
    wait_for_rows(replicas.client(0), database, expected)


def written_markers(redis_url, stop):
    """The SET commands on validation markers while `stop` is not set, from Redis's MONITOR."""
    import redis
    seen = []

    def watch():
        with redis.Redis.from_url(redis_url).monitor() as monitor:
            for command in monitor.listen():
                if stop.is_set():
                    return
                words = command["command"].split()
                if words and words[0].upper() == "SET" and (":validate:" in words[1] or ":checksums:" in words[1]):
                    seen.append((words[1], words[2]))
    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return seen, thread


def test_two_worker_hosts_under_one_luigid_download_once_each_and_load_each_table_once(
        on_cluster, replicas, start_luigid, tmp_path):
    pipeline, database = on_cluster, on_cluster.cluster_database
    config = tmp_path / "luigi.cfg"
    config.write_text(open(os.path.join(REPO, "luigi.cfg")).read().replace("clickhouse_loads = 2",
                                                                           "clickhouse_loads = 1"))
    luigid = start_luigid(str(config))
    published = {network: pipeline.publish(network) for network in ("ethereum", "bitcoin")}
    stop = threading.Event()
    writes, watcher = written_markers(pipeline.env["REDIS_URL"], stop)
    hosts = {name: {"INGESTION_WORKER_HOST": name, "SOT_DOWNLOAD_DIR": str(tmp_path / name)}
             for name in ("host-a", "host-b")}
    # --no-lock: luigi's lock is per machine, and these stand for two
    runs = {name: pipeline.start_cli("RunDaily", "--date", DATE.isoformat(), "--networks", "ethereum,bitcoin",
                                     "--no-lock", **env) for name, env in hosts.items()}
    most_loads = 0
    while any(run.poll() is None for run in runs.values()):
        running = luigid_tasks(luigid, "RUNNING").values()
        most_loads = max(most_loads, sum(task["name"] in ("VerifyChecksums", "LoadTable") for task in running))
        time.sleep(0.05)
    outputs = {name: run.communicate()[0] for name, run in runs.items()}
    stop.set()
    pipeline.redis.set("wake-the-monitor", 1)
    watcher.join(10)

    # 25, luigi's "not granted run permission", is what a worker exits with
    # when another one did tasks it had found to do, and with interleaved
    # tasks both can: luigi cannot tell that from a task luigid gave up on
    # (README, "Workers on several hosts"); luigid shows no task failed or given up
    assert {run.returncode for run in runs.values()} <= {0, 25}, {n: out[-3000:] for n, out in outputs.items()}
    assert luigid_tasks(luigid, "FAILED") == {} and luigid_tasks(luigid, "DISABLED") == {}
    assert not [out for out in outputs.values() if re.search(r"\* \d+ failed", out)]
    for network, tables in published.items():
        db = database.replace("ethereum", network)
        markers = replicas.client(0).execute(f"SELECT table_name, loaded, version FROM {db}.ingestion_markers")
        assert sorted(markers) == sorted((t, 1, 1) for t in TABLES), markers  # each table loaded once
        assert counts(replicas.client(0), db) == {t: tables[t].num_rows for t in TABLES}
    # each host downloaded each network once: each download is validated under an id of its own, so a
    # second would show as a second id for the host. (luigi's "done DownloadSOT" lines overcount: luigid
    # may hand the step again to a host that has its copy, which then returns at once.)
    for name in hosts:
        for network in published:
            ids = {value for key, value in writes if key.endswith(f":validate:{name}") and f":{network}:" in key}
            assert len(ids) <= 1, (name, network, writes)
    # each host's markers are its own: none was written twice, so none flipped between hosts
    assert writes and len({key for key, _ in writes}) == len(writes), writes
    assert {key.rsplit(":", 1)[1] for key, _ in writes} <= set(hosts)
    assert most_loads == 1  # [resources] clickhouse_loads = 1, whatever the number of workers
    # a host whose copy outlived the day's cleanup elsewhere removes it at its next run
    for name, env in hosts.items():
        assert pipeline.run_cli("RunDaily", "--date", DATE.isoformat(), "--networks", "ethereum,bitcoin",
                                **env).returncode == 0
        for network in published:
            assert not os.path.exists(os.path.join(env["SOT_DOWNLOAD_DIR"], network, DATE.isoformat(), str(WINDOW)))
