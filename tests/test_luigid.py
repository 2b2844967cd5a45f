"""The `luigi` command as cron runs it, through a real luigid."""
import os
import re
import subprocess
import sys
import time
import urllib.request

from devkit.local_servers import Server, free_port, luigid_server
from workflows.config import DEFAULTS, LUIGI_FROM_ENVIRONMENT
from workflows.schema import TABLES

from common import DATE, REPO, RUN_DAILY, luigid_tasks


def test_run_daily_through_luigid(pipeline, luigid):
    tables = pipeline.publish()

    result = pipeline.run_cli(*RUN_DAILY)

    assert result.returncode == 0, result.stderr
    assert pipeline.counts() == {t: tables[t].num_rows for t in TABLES}
    done = {task["name"] for task in luigid_tasks(luigid, "DONE").values()}
    assert done == {"RunDaily", "Cleanup", "LoadTable", "VerifyChecksums", "ValidateMeta", "DownloadSOT"}


def test_failed_run_exits_non_zero_with_the_reason(pipeline, luigid):
    pipeline.publish()
    pipeline.tamper("raw_alerts.parquet")

    result = pipeline.run_cli(*RUN_DAILY)

    assert result.returncode == 30, result.stderr  # [retcode] task_failed
    assert f"ethereum {DATE} raw_alerts.parquet: sha256 checksum mismatch" in result.stderr
    failed = luigid_tasks(luigid, "FAILED") or luigid_tasks(luigid, "DISABLED")
    assert [t["name"] for t in failed.values()] == ["VerifyChecksums"]


def test_bad_setting_stops_before_any_io(pipeline):
    pipeline.publish()

    result = pipeline.run_cli("RunDaily", "--date", DATE.isoformat(), "--local-scheduler", CLICKHOUSE_PORT="nine")

    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1] == \
        "configuration error: CLICKHOUSE_PORT: 'nine' is not a whole number"
    assert not os.path.exists(pipeline.downloads)


def test_bad_network_name_is_refused_before_any_io(pipeline):
    pipeline.publish()

    result = pipeline.run_cli("RunDaily", "--date", DATE.isoformat(), "--networks", "ethereum,Eth-2",
                              "--local-scheduler")

    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1] == \
        "configuration error: network: 'Eth-2' is not a network name ([a-z0-9_]+)"
    assert not os.path.exists(pipeline.downloads)


def without_our_variables(environ):
    names = set(DEFAULTS) | {variable for variable, _ in LUIGI_FROM_ENVIRONMENT.values()} | {"LUIGI_CONFIG_PATH"}
    return {name: value for name, value in environ.items() if name not in names}


def test_a_stock_luigid_in_the_project_directory_starts_with_no_variable_set(tmp_path):
    server = luigid_server(str(tmp_path), free_port(), stock=True, env=without_our_variables(os.environ), cwd=REPO)
    server.start()  # waits until it answers
    try:
        time.sleep(1)
        assert server.process.poll() is None and server.ready()
    finally:
        server.stop()


def test_a_failing_day_run_from_another_directory_through_a_stock_luigid_makes_every_attempt(pipeline, tmp_path):
    """No luigi.cfg where the worker runs: the package's own settings still
    give luigid's retries (keep_alive) and a non-zero exit ([retcode])."""
    config = tmp_path / "operator-luigi.cfg"  # the shipped policy, with a retry delay of 1 s instead of 300
    config.write_text(open(os.path.join(REPO, "luigi.cfg")).read().replace("retry_delay = 300", "retry_delay = 1"))
    port = free_port()
    server = luigid_server(str(tmp_path), port, str(config), stock=True, env=without_our_variables(os.environ),
                           cwd=str(tmp_path))
    server.start()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    pipeline.publish()
    pipeline.tamper("raw_alerts.parquet")
    try:
        env = {**os.environ, **pipeline.env, "LUIGI_SCHEDULER_URL": f"http://127.0.0.1:{port}/",
               "INGESTION_RETRY_ATTEMPTS": "2"}
        env.pop("LUIGI_CONFIG_PATH", None)
        result = subprocess.run([os.path.join(os.path.dirname(sys.executable), "luigi"), "--module", "workflows",
                                 *RUN_DAILY],
                                cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300)
        disabled = luigid_tasks(f"http://127.0.0.1:{port}/", "DISABLED")
    finally:
        server.stop()

    assert result.returncode == 30, result.stderr[-3000:]
    assert result.stderr.count("bad input: ethereum 2024-10-30 raw_alerts.parquet: sha256 checksum mismatch") == 2
    assert [t["name"] for t in disabled.values()] == ["VerifyChecksums"]
    assert not os.path.exists(elsewhere / "luigi.cfg")


def test_luigid_started_by_the_package_keeps_its_state_in_a_writable_place(tmp_path):
    """Without --state-path luigid would try /var/lib/luigi-server and lose its state at stop."""
    port = free_port()
    env = dict(os.environ, HOME=str(tmp_path), XDG_STATE_HOME="")
    server = Server("luigid", str(tmp_path), [sys.executable, "-m", "workflows", "luigid", "--address", "127.0.0.1",
                                              "--port", str(port)],
                    lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/api/task_list?data=%7B%7D",
                                                   timeout=1).status == 200, env=env, cwd=REPO)
    server.start()
    server.stop()

    state = tmp_path / ".local" / "state" / "sot-ingestion"
    assert (state / "luigid-state.pickle").is_file()


def test_the_history_page_keeps_a_recovered_failure(pipeline, luigid, tmp_path):
    """python -m workflows luigid records task history (SQLite beside its state): after a failure and its
    recovery, VerifyChecksums' runs list the failure and the success."""
    pipeline.publish()
    pipeline.tamper("raw_alerts.parquet")
    day = RUN_DAILY
    assert pipeline.run_cli(*day).returncode == 30
    pipeline.publish()  # the SOT republishes the day
    subprocess.run([sys.executable, "-m", "workflows", "reset", "--date", DATE.isoformat(), "--network", "ethereum"],
                   cwd=REPO, env={**os.environ, **pipeline.env}, check=True, capture_output=True)
    assert pipeline.run_cli(*day).returncode == 0

    runs = history_page(luigid, "history/by_name/VerifyChecksums")
    [record] = re.findall(r'href="/history/by_id/(\d+)">VerifyChecksums<', runs)  # one task, one record
    events = re.findall(r"<td>(PENDING|RUNNING|FAILED|DISABLED|DONE)</td>",
                        history_page(luigid, f"history/by_id/{record}"))
    # newest first: the recovery, and the failure before it still there
    assert events[0] == "DONE" and "FAILED" in events[1:], events
    assert os.path.exists(tmp_path / "task-history.sqlite")


def history_page(luigid, path):
    with urllib.request.urlopen(f"{luigid}{path}", timeout=10) as response:
        return response.read().decode()
