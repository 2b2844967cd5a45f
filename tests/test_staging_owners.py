"""Staging tables of live loads survive other workers' sweeps, whatever PID
namespace (container) each runs in: ownership is a lease in Redis, not a
process id, which is not unique across containers sharing a host name."""
import os
import shutil
import signal
import subprocess
import sys

import pytest

from workflows import clickhouse, leases
from workflows.schema import TABLES

from common import DATE, REPO, WINDOW

STAGER = f"""
import sys, datetime as dt
from clickhouse_driver import Client
from redis import Redis
from workflows import clickhouse, leases
from workflows.schema import SCHEMAS, TABLES
from workflows.slices import Slice
port, redis_url, database = sys.argv[1:4]
leases.hold(Redis.from_url(redis_url))
with clickhouse.staging_table(clickhouse.Destination(Client("127.0.0.1", port=int(port)), database,
                                                    SCHEMAS["raw_alerts"]),
                              Slice("ethereum", dt.date.fromisoformat("{DATE}"), {WINDOW})) as name:
    print(leases.owner(), name, flush=True)
    sys.stdin.read()  # holds the table until the test closes stdin, or kills it
"""
SWEEPER = """
import sys
from clickhouse_driver import Client
from redis import Redis
from workflows import clickhouse, leases
port, redis_url, database = sys.argv[1:4]
client = Redis.from_url(redis_url)
print(clickhouse.sweep_staging(Client("127.0.0.1", port=int(port)), database,
                               lambda owners: leases.holders(client, owners)))
"""


def in_own_pid_namespace(code, *args):
    """python -c code, as process 2 of a new PID namespace (a container's view: its ids mean nothing outside)."""
    return ["unshare", "--pid", "--fork", "--mount-proc", "sh", "-c", '"$0" "$@"; true', sys.executable, "-c", code,
            *args]


@pytest.fixture
def namespaces():
    probe = subprocess.run(in_own_pid_namespace("import os; print(os.getpid())"), capture_output=True, text=True)
    if not shutil.which("unshare") or probe.returncode or probe.stdout.strip() != "2":
        pytest.skip(f"no PID namespaces here: {probe.stderr.strip()}")


def test_a_live_loads_staging_table_survives_a_sweep_from_another_pid_namespace(pipeline, namespaces):
    database = pipeline.database()
    clickhouse.ensure_schema(pipeline.ch, database)
    args = [str(pipeline.servers.clickhouse_port), pipeline.env["REDIS_URL"], database]
    env = {**os.environ, **pipeline.env, "PYTHONPATH": REPO}
    stager = subprocess.Popen(in_own_pid_namespace(STAGER, *args), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True, env=env)
    try:
        owner, staged = stager.stdout.readline().split()

        def sweep():
            result = subprocess.run(in_own_pid_namespace(SWEEPER, *args), capture_output=True, text=True, env=env,
                                    check=True)
            return result.stdout.strip()

        assert sweep() == "[]"  # the other worker's sweep: its process 2 is not the stager, its lease is held
        assert staged in [name for (name,) in pipeline.ch.execute(
            f"SELECT name FROM system.tables WHERE database = '{database}'")]

        stager.send_signal(signal.SIGKILL)  # the load dies with its table
        stager.wait(timeout=30)
        pipeline.redis.delete(leases.KEY_PREFIX + owner)  # as its lease lapses, LEASE_SECONDS later
        assert sweep() == str([staged])
    finally:
        stager.kill()
        stager.wait()
    assert [t for (t,) in pipeline.ch.execute(f"SELECT name FROM system.tables WHERE database = '{database}'")
            if t.startswith("_staging_")] == []
    assert set(TABLES) <= {t for (t,) in pipeline.ch.execute(f"SELECT name FROM system.tables WHERE database ="
                                                              f" '{database}'")}
