"""What the tests share besides fixtures (those are in conftest.py): the day
they load, the command lines that load it, the helpers that read what the
servers hold, and one way to wait for something."""
import datetime as dt
import os
import time

from clickhouse_driver import Client

from workflows import clients, scheduler
from workflows.schema import SCHEMAS

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATE = dt.date(2024, 10, 30)
OTHER_DATE = DATE - dt.timedelta(days=1)
WINDOW = 195
FEATURE_ROWS = 500
WEBHOOK_TOKEN = "webhook-secret-tok"

# the day's run of one network, through luigid (LUIGI_SCHEDULER_URL) or with a scheduler of its own
RUN_DAILY = ("RunDaily", "--date", DATE.isoformat(), "--networks", "ethereum")
RUN_DAILY_LOCAL = RUN_DAILY + ("--local-scheduler",)


def poll(check, seconds, what, interval=0.2, ignoring=()):
    """Calls check() until it returns something true, and returns that; fails
    the test when `seconds` pass first. An exception of a type in `ignoring`
    counts as not yet; any other (an assertion in check, say) fails at once."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            last = check()
        except ignoring as exc:
            last = exc
        else:
            if last:
                return last
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what} not within {seconds} s (last: {last!r})")
        time.sleep(interval)


def close_clickhouse_connections(*extra):
    """Closes the ClickHouse connections that in-process runs keep
    (workflows.clients holds one per process and server), and `extra`
    clients; a client connects again when next used. Before a ClickHouse
    is stopped: at SIGTERM it waits up to 5 s for open connections, devkit's
    stop kills it at 5 s, and a replica killed so cannot start again until
    its ZooKeeper session has expired, 30 s later."""
    for client in [*clients._clients.values(), *extra]:
        if isinstance(client, Client):
            client.disconnect()


def luigid_tasks(url, status):
    """luigid's tasks of one status, as its visualiser lists them."""
    return scheduler.call("task_list", url, status=status)


def expected_rows(arrow_table, table, columns=None):
    """The generated rows as ClickHouse returns them, in table order."""
    schema = SCHEMAS[table]
    columns = columns or schema.column_names
    ordered = arrow_table.sort_by([(key, "ascending") for key in schema.order_by]).select(columns)
    return [tuple(row[c] for c in columns) for row in ordered.to_pylist()]
