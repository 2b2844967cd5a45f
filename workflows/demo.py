"""`make demo`: Redis, ClickHouse and luigid under .local/, a sample snapshot
for yesterday for every configured network, RunDaily through luigid, and a
summary. Safe to run again: running servers and published snapshots are
reused, and a day already loaded is not loaded twice.

`python -m workflows.demo --stop` stops the servers."""
import argparse
import os
import subprocess
import sys
import time

from .clickhouse import count_rows
from .config import Settings
from .local_servers import LocalServers
from .meta import TABLES
from .resources import clickhouse_client
from .sample import make_snapshot, write_snapshot
from .tasks import yesterday

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOCAL = os.path.join(REPO, ".local")
FEATURE_ROWS = 20_000


def servers():
    return LocalServers(LOCAL, redis_port=16379, clickhouse_port=19000, clickhouse_http_port=18123,
                        luigid_port=18082, luigi_config=os.path.join(REPO, "luigi.cfg"))


def demo_env(local):
    return dict(local.env(), SOT_URL=os.path.join(LOCAL, "sot"), SOT_DOWNLOAD_DIR=os.path.join(LOCAL, "downloads"))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stop", action="store_true", help="stop the demo's servers")
    args = parser.parse_args(argv)
    local = servers()
    if args.stop:
        local.stop()
        return 0

    local.start(detach=True, reuse=True)
    env = demo_env(local)
    with open(os.path.join(LOCAL, "demo.env"), "w") as stream:
        stream.writelines(f"{k}={v}\n" for k, v in sorted(env.items()))
    settings = Settings.from_env({**os.environ, **env})
    date = yesterday()
    for network in settings.networks:
        if not os.path.exists(os.path.join(env["SOT_URL"], network, date.isoformat(), str(settings.window_days),
                                           "META.json")):
            write_snapshot(env["SOT_URL"], network, date, settings.window_days,
                           make_snapshot(network, date, settings.window_days, FEATURE_ROWS))

    started = time.monotonic()
    run = subprocess.run([os.path.join(os.path.dirname(sys.executable), "luigi"), "--module", "workflows",
                          "RunDaily", "--date", date.isoformat(), "--workers", "2"],
                         cwd=REPO, env={**os.environ, **env})
    seconds = time.monotonic() - started

    ch = clickhouse_client(settings)
    print(f"\nRunDaily {date} (window {settings.window_days} days): exit status {run.returncode}, {seconds:.1f} s")
    print(f"{'network':<12}" + "".join(f"{t:>20}" for t in TABLES))
    for network in settings.networks:
        counts = [count_rows(ch, settings.database_for(network), t, date, settings.window_days) for t in TABLES]
        print(f"{network:<12}" + "".join(f"{c:>20,}" for c in counts))
    print(f"\nvisualiser: {local.visualiser_url}")
    print(f"environment of this demo: {os.path.join(LOCAL, 'demo.env')}; stop the servers: "
          f"{sys.executable} -m workflows.demo --stop")
    return run.returncode


if __name__ == "__main__":
    sys.exit(main())
