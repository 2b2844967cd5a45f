"""`make demo` (python -m devkit.demo) on a machine where another process
holds one of its usual ports: it reports its own servers' data, never the
other process's, and --stop stops only its own servers."""
import os
import socket
import subprocess
import sys

import pytest

from devkit.demo import USUAL_PORTS
from devkit.local_servers import port_free

from common import REPO

pytestmark = pytest.mark.servers  # the demo starts its own


def test_a_demo_whose_port_is_taken_runs_on_its_own_servers_and_stops_only_them(tmp_path):
    taken = USUAL_PORTS["redis_port"]
    squatter = socket.socket()  # another process holds the demo's usual Redis port (or one already does)
    squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if port_free(taken):
        squatter.bind(("127.0.0.1", taken))
        squatter.listen()
    env = dict(os.environ, DEMO_DIR=str(tmp_path / "local"), INGESTION_NETWORKS="ethereum")
    demo = [sys.executable, "-m", "devkit.demo"]
    try:
        run = subprocess.run(demo, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
        stopped = subprocess.run(demo + ["--stop"], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    finally:
        subprocess.run(demo + ["--stop"], cwd=REPO, env=env, capture_output=True, timeout=60)

    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert f"port {taken} is in use by another process: this demo's redis listens on" in run.stdout
    demo_env = dict(line.split("=", 1) for line in (tmp_path / "local" / "demo.env").read_text().splitlines())
    assert f":{taken}/" not in demo_env["REDIS_URL"]
    summary = run.stdout[run.stdout.index("network "):].splitlines()
    assert summary[1].split() == ["ethereum", "2,000", "20,000", "200", "1,000"]
    assert stopped.returncode == 0
    with socket.create_connection(("127.0.0.1", taken), timeout=1):  # the other process still listens
        pass
    squatter.close()
