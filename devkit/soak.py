"""`make soak`: RunDaily through luigid, SIGKILLed at a random moment of each
of SOAK_RUNS runs (20 by default), then one clean rerun, which must leave
exactly the published rows, no staging table and markers that agree with
the tables. Prints what each run did and the verdict; exits 1 on a fault.

Not part of `make test`: it takes minutes, and its kills land where chance
puts them."""
import configparser
import datetime as dt
import os
import random
import signal
import subprocess
import sys
import tempfile
import time

from clickhouse_driver import Client
from redis import Redis

from devkit.local_servers import LocalServers
from devkit.sample import make_snapshot, write_snapshot
from workflows import scheduler
from workflows.schema import TABLES
from workflows.slices import Slice
from workflows.state import cleanup_marker, loaded_days

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NETWORKS = ("ethereum", "bitcoin")
DATE, WINDOW = dt.date(2024, 10, 30), 195
FEATURE_ROWS = 200_000  # each run takes seconds: a kill lands in the download, the staging or a swap
# a column whose values differ between the networks' samples: rows that crossed from one network to the
# other, or were loaded twice, show in the values, where equal row counts would hide them
IDENTITY = {"raw_features": "address", "raw_alerts": "alert_id", "raw_clusters": "cluster_id",
            "raw_address_labels": "address"}


def luigi_command(date):
    return [os.path.join(os.path.dirname(sys.executable), "luigi"), "--module", "workflows", "RunDaily",
            "--date", date.isoformat(), "--networks", ",".join(NETWORKS), "--workers", "2"]


def main():
    runs = int(os.environ.get("SOAK_RUNS", "20"))
    seed = int(os.environ.get("SOAK_SEED", str(int(time.time()))))
    chance = random.Random(seed)
    work = tempfile.mkdtemp(prefix="sot-soak-")
    os.environ["INGESTION_RETRY_DELAY"] = "1"  # luigid's, through python -m workflows luigid
    servers = LocalServers(os.path.join(work, "servers"), luigi_config=quick_to_notice_the_dead(work))
    servers.start()
    try:
        sot, published = os.path.join(work, "sot"), {}
        for network in NETWORKS:
            tables = make_snapshot(network, DATE, WINDOW, FEATURE_ROWS)
            write_snapshot(sot, network, DATE, WINDOW, tables)
            published[network] = {t: sorted(tables[t].column(IDENTITY[t]).to_pylist()) for t in TABLES}
        env = {**os.environ, **servers.env(), "SOT_URL": sot, "SOT_DOWNLOAD_DIR": os.path.join(work, "downloads"),
               "INGESTION_NETWORKS": ",".join(NETWORKS), "INGESTION_WINDOW_DAYS": str(WINDOW),
               "INGESTION_RETRY_ATTEMPTS": "3", "INGESTION_RETRY_DELAY": "1"}
        print(f"soak: {runs} runs killed at random, seed {seed}, {FEATURE_ROWS:,} feature rows per network")
        for run in range(1, runs + 1):
            reset_day(env)
            process = subprocess.Popen(luigi_command(DATE), cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL, start_new_session=True)
            after = chance.uniform(0.2, 6.0)
            try:
                status = process.wait(timeout=after)
                print(f"  run {run:2}: ended by itself after {after:.1f} s at most, exit {status}")
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)  # the worker and its task processes
                process.wait()
                print(f"  run {run:2}: SIGKILLed after {after:.1f} s")
        time.sleep(10)  # luigid takes the last killed worker for gone (worker_disconnect_delay, 5 s here)
        # each killed worker's running task counts as a failed attempt once luigid notices it is gone: a
        # task killed in three runs in a row is disabled, as an operator would find it. Re-enable (the
        # markers and the half-done state stay), as `reset` does first
        for task_id in scheduler.call("task_list", servers.scheduler_url, status="DISABLED"):
            scheduler.call("re_enable_task", servers.scheduler_url, task_id=task_id)
            print(f"  re-enabled in luigid: {task_id}")
        clean = subprocess.run(luigi_command(DATE), cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
        faults = verdict(servers, published, clean)
    finally:
        servers.stop()
    for fault in faults:
        print(f"FAULT: {fault}")
    print("soak: " + ("passed" if not faults else f"{len(faults)} fault(s)"))
    return 1 if faults else 0


def quick_to_notice_the_dead(work):
    """The repository's luigi.cfg, but luigid takes a worker for gone 5 s
    after its last ping instead of 60: each run after a kill would wait out
    the killed worker's tasks, still RUNNING in luigid, before its own."""
    config = configparser.ConfigParser(interpolation=None)
    config.read(os.path.join(REPO, "luigi.cfg"))
    config.set("scheduler", "worker_disconnect_delay", "5")
    path = os.path.join(work, "luigi.cfg")
    with open(path, "w") as stream:
        config.write(stream)
    return path


def reset_day(env):
    """Each run redoes the day from its download, so a kill lands in a download, a stage or a swap that
    replaces rows."""
    for network in NETWORKS:
        subprocess.run([sys.executable, "-m", "workflows", "reset", "--date", DATE.isoformat(), "--network",
                        network], cwd=REPO, env=env, capture_output=True, timeout=120)


def verdict(servers, published, clean):
    """What the clean rerun left that it should not have."""
    faults = [] if clean.returncode == 0 else [f"the clean rerun exited {clean.returncode}: {clean.stderr[-500:]}"]
    ch = Client("127.0.0.1", port=servers.clickhouse_port)
    for network, expected in published.items():
        database = f"risk_assessment_{network}"
        held = {t: sorted(value for (value,) in ch.execute(
            f"SELECT {IDENTITY[t]} FROM {database}.{t} WHERE processing_date = %(d)s AND window_days = %(w)s",
            {"d": DATE, "w": WINDOW})) for t in TABLES}
        for table in TABLES:
            if held[table] != expected[table]:
                faults.append(f"{network}.{table}: holds {len(held[table]):,} rows whose {IDENTITY[table]}s are"
                              f" not the snapshot's {len(expected[table]):,}")
        rows = {t: len(values) for t, values in held.items()}
        marked = loaded_days(ch, database, network, [DATE], WINDOW).get(DATE, {})
        if marked != rows:
            faults.append(f"{network}: the markers vouch for {marked}, the tables hold {rows}")
        staging = ch.execute(f"SELECT name FROM system.tables WHERE database = '{database}'"
                             " AND startsWith(name, '_staging_')")
        if staging:
            faults.append(f"{network}: staging tables left: {[name for (name,) in staging]}")
        # the download's own markers count only while it is on disk; the cleanup marker is what stays
        if not cleanup_marker(Redis.from_url(servers.env()["REDIS_URL"]), Slice(network, DATE, WINDOW)).exists():
            faults.append(f"{network}: no cleanup marker after the clean rerun")
    return faults


if __name__ == "__main__":
    sys.exit(main())
