"""`make demo` stopped and started again keeps its state: the same ports
(.local/ports.json), Redis's markers (append-only file in .local), the
loaded day; `--stop` says what it stopped."""
import json
import os
import subprocess
import sys

import pytest
from redis import Redis

from common import REPO

pytestmark = pytest.mark.servers  # the demo starts its own


def test_a_restarted_demo_keeps_its_ports_and_its_loaded_day(tmp_path):
    local = tmp_path / "local"
    env = dict(os.environ, DEMO_DIR=str(local), INGESTION_NETWORKS="ethereum")
    demo = [sys.executable, "-m", "devkit.demo", "--date", "2024-10-30"]
    try:
        first = subprocess.run(demo, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
        ports = json.loads((local / "ports.json").read_text())
        stopped = subprocess.run(demo + ["--stop"], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
        again = subprocess.run(demo, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
        demo_env = dict(line.split("=", 1) for line in (local / "demo.env").read_text().splitlines())
        marker = Redis.from_url(demo_env["REDIS_URL"]).get("sot_ingestion:ethereum:2024-10-30:195:cleanup")
    finally:
        subprocess.run(demo + ["--stop"], cwd=REPO, env=env, capture_output=True, timeout=60)

    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-2000:]
    assert sorted(line.split(" (pid")[0] for line in stopped.stdout.splitlines() if line.startswith("stopped")) == \
        ["stopped the demo's clickhouse", "stopped the demo's luigid", "stopped the demo's redis"]
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    assert json.loads((local / "ports.json").read_text()) == ports
    assert marker == b"done"  # Redis came back with its markers
    assert "published ethereum" not in again.stdout  # the snapshot was kept
    assert "DownloadSOT" not in again.stderr and "complete ones were encountered" in again.stderr  # nothing redone
