"""`make demo` (python -m workflows.demo) on a machine where another process
holds one of its usual ports: it reports its own servers' data, never the
other process's, and --stop stops only its own servers."""
import json
import os
import socket
import subprocess
import sys

from conftest import REPO

from workflows.local_servers import free_port


def test_a_demo_whose_port_is_taken_runs_on_its_own_servers_and_stops_only_them(tmp_path):
    squatter = socket.socket()
    squatter.bind(("127.0.0.1", 0))
    squatter.listen()
    env = dict(os.environ, DEMO_DIR=str(tmp_path / "local"), INGESTION_NETWORKS="ethereum")
    ports_file = tmp_path / "local" / "ports.json"
    ports_file.parent.mkdir()
    # the other process holds the port this demo would use for Redis
    ports_file.write_text(json.dumps({"redis_port": squatter.getsockname()[1], "clickhouse_port": free_port(),
                                      "clickhouse_http_port": free_port(), "luigid_port": free_port()}))
    demo = [sys.executable, "-m", "workflows.demo"]
    try:
        run = subprocess.run(demo, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
        stopped = subprocess.run(demo + ["--stop"], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    finally:
        subprocess.run(demo + ["--stop"], cwd=REPO, env=env, capture_output=True, timeout=60)

    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    taken = squatter.getsockname()[1]
    assert f"port {taken} is in use by another process: this demo's redis listens on" in run.stdout
    demo_env = dict(line.split("=", 1) for line in (tmp_path / "local" / "demo.env").read_text().splitlines())
    assert f":{taken}/" not in demo_env["REDIS_URL"]
    summary = run.stdout[run.stdout.index("network "):].splitlines()
    assert summary[1].split() == ["ethereum", "2,000", "20,000", "200", "1,000"]
    assert stopped.returncode == 0
    squatter.settimeout(1)
    with socket.create_connection(squatter.getsockname(), timeout=1):  # the other process still listens
        pass
