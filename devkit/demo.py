"""`make demo`: Redis, ClickHouse and luigid under .local/, a sample day for
yesterday for every configured network put into the demo's SOT ClickHouse
database (sot_{network}, the SOT's own tables) and published from there over
its HTTP port by `python -m workflows publish` in the producer's layout
(.local/sot/snapshots/, the labels in .local/sot/address-labels/), RunDaily
through luigid, and a summary. Safe to run again: running servers and
published snapshots are reused, and a day already loaded is not loaded twice.

`python -m devkit.demo --date 2024-10-30` does the same for another day;
`python -m devkit.demo --stop` stops the servers."""
import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import time

from devkit.local_servers import LocalServers, free_port, port_free
from devkit.sample import fill_sot_database, make_snapshot
from workflows.clickhouse import Destination, count_day_rows
from workflows.clients import clickhouse_client
from workflows.config import Settings
from workflows.meta import META_FILENAME
from workflows.pipeline.params import yesterday
from workflows.publish import publish
from workflows.schema import SCHEMAS, TABLES
from workflows.slices import Slice

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOCAL = os.environ.get("DEMO_DIR") or os.path.join(REPO, ".local")  # DEMO_DIR: for the demo's own test
FEATURE_ROWS = 20_000
USUAL_PORTS = {"redis_port": 16379, "clickhouse_port": 19000, "clickhouse_http_port": 18123, "luigid_port": 18082}
RETRY_DELAY_SECONDS = "10"  # the demo's: a retry comes while you watch


def servers(ports):
    # Redis appends to a file in .local, so a restarted demo keeps its markers
    return LocalServers(LOCAL, luigi_config=os.path.join(REPO, "luigi.cfg"), redis_appendonly="yes", **ports)


def saved_ports():
    try:
        with open(os.path.join(LOCAL, "ports.json")) as stream:
            return json.load(stream)
    except FileNotFoundError:
        return dict(USUAL_PORTS)


def choose_ports():
    """The ports of this checkout's demo: those of its servers that are
    running, else those it had last time (.local/ports.json) where they are
    free, so open tabs and the README's links keep working, else the usual
    ones, else, where another process holds one (another checkout's demo,
    say), a free one. Saved in .local/ports.json."""
    ports = saved_ports()
    local = servers(ports)
    owned = {"redis": ("redis_port",), "clickhouse": ("clickhouse_port", "clickhouse_http_port"),
             "luigid": ("luigid_port",)}
    for server in local.servers:
        if server.running_pid():
            continue
        for name in owned[server.name]:
            if port_free(ports[name]):
                continue
            taken = ports[name]
            ports[name] = USUAL_PORTS[name] if port_free(USUAL_PORTS[name]) else free_port()
            print(f"port {taken} is in use by another process: this demo's {server.name} listens on"
                  f" {ports[name]} instead (see {os.path.join(LOCAL, 'demo.env')})")
    os.makedirs(LOCAL, exist_ok=True)
    with open(os.path.join(LOCAL, "ports.json"), "w") as stream:
        json.dump(ports, stream)
    return ports


def demo_env(local):
    # SOT_PORT: the SOT ClickHouse's HTTP port, as the original deployment's .env had it
    return dict(local.env(), SOT_URL=os.path.join(LOCAL, "sot", "snapshots"),
                SOT_DOWNLOAD_DIR=os.path.join(LOCAL, "downloads"), SOT_HOST="127.0.0.1",
                SOT_PORT=str(local.clickhouse_http_port), INGESTION_RETRY_DELAY=RETRY_DELAY_SECONDS)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stop", action="store_true", help="stop the demo's servers")
    parser.add_argument("--date", type=dt.date.fromisoformat, default=None, help="the day to publish and load;"
                                                                                 " default yesterday")
    args = parser.parse_args(argv)
    if args.stop:  # only this checkout's: the servers whose pid files are in its .local
        stopped = servers(saved_ports()).stop()
        for name, pid in stopped:
            print(f"stopped the demo's {name} (pid {pid})")
        if not stopped:
            print(f"no demo server of {LOCAL} was running")
        print(f"its data stays in {LOCAL}: make demo starts it again where it was")
        return 0

    os.environ["INGESTION_RETRY_DELAY"] = RETRY_DELAY_SECONDS  # for the luigid it starts
    local = servers(choose_ports())
    local.start(detach=True, reuse=True)
    env = demo_env(local)
    with open(os.path.join(LOCAL, "demo.env"), "w") as stream:
        stream.writelines(f"{k}={v}\n" for k, v in sorted(env.items()))
    settings = Settings.from_env({**os.environ, **env})
    date = args.date or yesterday()
    for network in settings.networks:
        if not os.path.exists(os.path.join(env["SOT_URL"], Slice(network, date, settings.window_days).path,
                                           META_FILENAME)):
            # the SOT's database is on the demo's ClickHouse: filled over the native port, published over HTTP
            fill_sot_database(clickhouse_client(settings), settings.sot_database_for(network),
                              make_snapshot(network, date, settings.window_days, FEATURE_ROWS))
            snapshot, labels = publish(settings, Slice(network, date, settings.window_days), env["SOT_URL"])
            print(f"published {network} {date}: {snapshot}, its labels to {labels}")

    started = time.monotonic()
    run = subprocess.run([os.path.join(os.path.dirname(sys.executable), "luigi"), "--module", "workflows",
                          "RunDaily", "--date", date.isoformat(), "--workers", "2", "--log-level", "INFO"],
                         cwd=REPO, env={**os.environ, **env})
    seconds = time.monotonic() - started

    ch = clickhouse_client(settings)
    print(f"\nRunDaily {date} (window {settings.window_days} days): exit status {run.returncode}, {seconds:.1f} s")
    print(f"{'network':<12}" + "".join(f"{t:>20}" for t in TABLES))
    for network in settings.networks:
        day = Slice(network, date, settings.window_days)
        counts = [count_day_rows(Destination(ch, settings.database_for(network), SCHEMAS[t]), day) for t in TABLES]
        print(f"{network:<12}" + "".join(f"{c:>20,}" for c in counts))
    print(f"\nvisualiser: {local.visualiser_url}")
    print(f"environment of this demo: {os.path.join(LOCAL, 'demo.env')}; stop the servers: "
          f"cd {REPO} && {sys.executable} -m devkit.demo --stop")
    return run.returncode


if __name__ == "__main__":
    sys.exit(main())
