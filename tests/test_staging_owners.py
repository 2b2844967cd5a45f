"""Staging tables of live loads survive other workers' sweeps, whatever PID
namespace (container) each runs in: ownership is a lease in Redis, not a
process id, which is not unique across containers sharing a host name. The
lease is renewed while its process lives and lapses after it dies; a Redis
that does not answer drops nothing."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
from redis import Redis

from devkit.local_servers import free_port
from workflows import clickhouse, leases, sql
from workflows.schema import SCHEMAS, TABLES
from workflows.slices import Slice

from common import DATE, REPO, WINDOW, poll

DAY = Slice("ethereum", DATE, WINDOW)
EARLIER_PROCESSES = 8  # short-lived processes before the stager in its namespace: it runs as process 10

STAGER = f"""
import os, sys, datetime as dt
from clickhouse_driver import Client
from redis import Redis
from workflows import clickhouse, leases
from workflows.schema import SCHEMAS, TABLES
from workflows.slices import Slice
port, redis_url, database, lease_seconds = sys.argv[1:5]
leases.hold(Redis.from_url(redis_url), int(lease_seconds))
with clickhouse.staging_table(clickhouse.Destination(Client("127.0.0.1", port=int(port)), database,
                                                    SCHEMAS["raw_alerts"]),
                              Slice("ethereum", dt.date.fromisoformat("{DATE}"), {WINDOW})) as name:
    print(leases.owner(), name, os.getpid(), flush=True)
    sys.stdin.read()  # holds the table until the test closes stdin, or kills it
"""
SWEEPER = """
import json, os, sys
from clickhouse_driver import Client
from redis import Redis
from workflows import clickhouse, leases
port, redis_url, database, stager_pid = sys.argv[1:5]

def names_a_process_here(pid):
    # what an ownership check by process id asks
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True

client = Redis.from_url(redis_url)
swept = clickhouse.sweep_staging(Client("127.0.0.1", port=int(port)), database,
                                 lambda owners: leases.holders(client, owners))
print(json.dumps({"swept": swept, "pid": os.getpid(), "stager_pid_here": names_a_process_here(int(stager_pid))}))
"""


def in_own_pid_namespace(code, *args, earlier_processes=0):
    """python -c code in a new PID namespace (a container's view: its ids mean
    nothing outside), as process 2 + earlier_processes: each earlier one is a
    short-lived /bin/true (an external command, so sh forks for it)."""
    earlier = "/bin/true; " * earlier_processes
    return ["unshare", "--pid", "--fork", "--mount-proc", "sh", "-c", earlier + '"$0" "$@"; true', sys.executable,
            "-c", code, *args]


@pytest.fixture
def namespaces():
    probe = subprocess.run(in_own_pid_namespace("import os; print(os.getpid())", earlier_processes=1),
                           capture_output=True, text=True)
    if not shutil.which("unshare") or probe.returncode or probe.stdout.strip() != "3":
        pytest.skip(f"no PID namespaces here: {probe.stderr.strip()}")


def table_names(pipeline, database):
    return {name for (name,) in pipeline.ch.execute(f"SELECT name FROM system.tables WHERE database = '{database}'")}


def start_stager(pipeline, command_of, lease_seconds=leases.LEASE_SECONDS):
    """A load holding a staging table of raw_alerts; returns (process, its owner, the table, its pid)."""
    args = [str(pipeline.servers.clickhouse_port), pipeline.env["REDIS_URL"], pipeline.database(), str(lease_seconds)]
    stager = subprocess.Popen(command_of(STAGER, *args), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                              env={**os.environ, **pipeline.env, "PYTHONPATH": REPO})
    owner, staged, pid = stager.stdout.readline().split()
    return stager, owner, staged, int(pid)


def in_this_namespace(code, *args):
    return [sys.executable, "-c", code, *args]


def destination(pipeline, table):
    return clickhouse.Destination(pipeline.ch, pipeline.database(), SCHEMAS[table])


def test_a_live_loads_staging_table_survives_a_sweep_from_another_pid_namespace(pipeline, namespaces):
    database = pipeline.database()
    clickhouse.ensure_schema(pipeline.ch, database)

    def stager_command(code, *args):
        return in_own_pid_namespace(code, *args, earlier_processes=EARLIER_PROCESSES)

    stager, owner, staged, stager_pid = start_stager(pipeline, stager_command)
    try:
        def sweep():
            args = [str(pipeline.servers.clickhouse_port), pipeline.env["REDIS_URL"], database, str(stager_pid)]
            result = subprocess.run(in_own_pid_namespace(SWEEPER, *args), capture_output=True, text=True, check=True,
                                    env={**os.environ, **pipeline.env, "PYTHONPATH": REPO})
            return json.loads(result.stdout)

        swept = sweep()
        # The case that matters: the stager's pid names no process in the
        # sweeper's namespace (there are only its sh, 1, and itself, 2), so
        # an ownership check by pid would call the live stager dead and drop
        # its table. Were both process 2, such a check would find the
        # sweeper itself alive and pass.
        assert stager_pid == 2 + EARLIER_PROCESSES and swept["pid"] == 2 and not swept["stager_pid_here"]
        assert swept["swept"] == []  # its lease is held
        assert staged in table_names(pipeline, database)

        stager.send_signal(signal.SIGKILL)  # the load dies with its table
        stager.wait(timeout=30)
        pipeline.redis.delete(leases.KEY_PREFIX + owner)  # as its lease lapses, LEASE_SECONDS later
        assert sweep()["swept"] == [staged]
    finally:
        stager.kill()
        stager.wait()
    assert [t for t in table_names(pipeline, database) if t.startswith("_staging_")] == []
    assert set(TABLES) <= table_names(pipeline, database)


def test_a_lease_is_renewed_past_its_length_while_its_process_lives_and_lapses_after(pipeline):
    clickhouse.ensure_schema(pipeline.ch, pipeline.database())
    lease_seconds = 1
    stager, owner, _, _ = start_stager(pipeline, in_this_namespace, lease_seconds)
    key = leases.KEY_PREFIX + owner
    try:
        for _ in range(10):  # 2.5 lease lengths, never a moment without the lease
            assert leases.holders(pipeline.redis, [owner]) == {owner}
            assert 0 < pipeline.redis.pttl(key) <= 1000 * lease_seconds  # kept by renewals, not a longer lease
            time.sleep(lease_seconds / 4)
        stager.send_signal(signal.SIGKILL)
        stager.wait(timeout=30)
        # a sweep in the dead owner's PID namespace knows at once; anywhere else, once the lease lapses
        assert leases.holders(pipeline.redis, [owner]) == set()
        poll(lambda: not pipeline.redis.exists(key), 3 * lease_seconds, "the dead owner's lease lapsing")
    finally:
        stager.kill()
        stager.wait()


def test_nothing_is_dropped_while_redis_does_not_answer(pipeline):
    database = pipeline.database()
    clickhouse.ensure_schema(pipeline.ch, database)
    stager, _, staged, _ = start_stager(pipeline, in_this_namespace)
    stager.kill()  # a load that died: its lease is in Redis, its process gone
    stager.wait()
    down = Redis(host="127.0.0.1", port=free_port(), retry=None)  # nothing listens; refused at once, not retried

    assert clickhouse.sweep_staging(pipeline.ch, database, lambda owners: leases.holders(down, owners)) == []
    assert staged in table_names(pipeline, database)
    # the same sweep with Redis answering drops it: the lease's process is gone
    assert clickhouse.sweep_staging(pipeline.ch, database,
                                    lambda owners: leases.holders(pipeline.redis, owners)) == [staged]


def test_a_cleanup_on_a_host_of_the_same_name_leaves_a_loads_claimed_table(pipeline):
    """Containers that share a host name share the staging tables' host tag,
    so one's Cleanup (drop_staged) drops the other's copies staged ahead of
    their loads. Those belong to no process, and Cleanup runs only once the
    day's four tables are loaded; a load that then finds its copy gone loads
    its file. A copy a load has claimed is its own (leased), and stays."""
    database = pipeline.database()
    clickhouse.ensure_schema(pipeline.ch, database)
    other_download = "b" * 32  # the other container's download of the day
    for table in ("raw_alerts", "raw_clusters"):
        handed_over = clickhouse.staging_name(table, DAY, other_download)
        pipeline.ch.execute(*sql.create_table(database, SCHEMAS[table], handed_over))
    claimed = clickhouse.claim_staged(destination(pipeline, "raw_alerts"), DAY, other_download, rows=0)
    assert claimed is not None and clickhouse.staging_owner(claimed) == leases.owner()

    dropped = clickhouse.drop_staged(pipeline.ch, database, DAY)  # this container's Cleanup

    assert [clickhouse.staging_owner(name) for name in dropped] == [f"d{other_download[:12]}"]
    assert claimed in table_names(pipeline, database)
    assert clickhouse.claim_staged(destination(pipeline, "raw_clusters"), DAY, other_download, rows=0) is None
    clickhouse.drop_table(pipeline.ch, database, claimed)

