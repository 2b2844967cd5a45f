"""Faults around the data: the machine, not the snapshot. Each case checks
the outcome, the one line, and that a plain rerun then loads exactly the
published rows."""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import luigi
import pytest
from clickhouse_driver import Client

from devkit.local_servers import clickhouse_server, free_port, redis_server
from devkit.sample import make_snapshot
from targets.redis_marker import marker_key
from workflows import cli, disk
from workflows.schema import TABLES
from workflows.sources.base import space_needed

from common import DATE, REPO, RUN_DAILY, RUN_DAILY_LOCAL, WINDOW, close_clickhouse_connections, luigid_tasks, poll


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MB tmpfs of the test's own, for the download directory."""
    mount = tmp_path / "small-disk"
    mount.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True)
    if mounted.returncode:
        pytest.skip(f"mounting a tmpfs is not allowed here: {mounted.stderr.decode().strip()}")
    yield str(mount)
    subprocess.run(["umount", "-l", str(mount)], check=True)


def test_a_snapshot_larger_than_the_free_space_is_refused_before_a_byte_is_copied(pipeline, small_disk,
                                                                                  monkeypatch):
    pipeline.publish(tables=make_snapshot("ethereum", DATE, WINDOW, 20_000))  # 11 MB
    monkeypatch.setenv("SOT_DOWNLOAD_DIR", small_disk)
    pipeline.downloads = small_disk

    assert not pipeline.run()

    [(task, reason)] = pipeline.failures
    assert type(task).__name__ == "DownloadSOT"
    assert reason == f"ethereum 2024-10-30 download to {small_disk}: 4 MB free, the snapshot needs" \
                     " 13 MB with its margin"
    copied = [name for _, _, files in os.walk(small_disk) for name in files if name.endswith(".parquet")]
    assert copied == []
    assert pipeline.counts() == {t: 0 for t in TABLES}

    tables = pipeline.publish()  # a day that fits: the same directory works again
    assert pipeline.run()
    assert pipeline.counts() == {t: tables[t].num_rows for t in TABLES}


def snapshot_bytes(pipeline):
    folder = pipeline.snapshot_dir()
    return sum(os.path.getsize(os.path.join(folder, name)) for name in os.listdir(folder) if name.endswith(".parquet"))


def test_the_room_check_counts_the_downloads_under_way_on_the_same_folder(pipeline, small_disk, monkeypatch):
    tables = pipeline.publish()
    monkeypatch.setenv("SOT_DOWNLOAD_DIR", small_disk)
    pipeline.downloads = small_disk
    free = shutil.disk_usage(small_disk).free
    under_way = free - space_needed(snapshot_bytes(pipeline)) + (1 << 20)  # alone, the day would fit

    with disk.reserved(small_disk, under_way):  # another network's download, as a worker holds it
        assert not pipeline.run()

    [(task, reason)] = pipeline.failures
    assert type(task).__name__ == "DownloadSOT"
    assert reason.startswith(f"ethereum 2024-10-30 download to {small_disk}: {free / 1e6:,.0f} MB free,"
                             f" {under_way / 1e6:,.0f} MB of it reserved by downloads under way; the snapshot needs")
    assert pipeline.run()  # that download done: the room is there
    assert pipeline.counts() == {t: tables[t].num_rows for t in TABLES}


def test_a_disk_that_fills_during_a_download_gives_the_same_one_line(pipeline, small_disk):
    tables = pipeline.publish()
    pipeline.env["SOT_DOWNLOAD_DIR"] = pipeline.downloads = small_disk

    full = run_with_fault(pipeline, "disk-filled-after-the-check", *RUN_DAILY_LOCAL)

    assert full.returncode == 30, full.stderr[-3000:]
    [line] = [line for line in full.stderr.splitlines() if " failed    DownloadSOT(" in line]
    assert f"): ethereum 2024-10-30 download to {small_disk}: no space left while writing " in line, line
    assert line.endswith(".parquet (0 MB free)"), line
    assert "Traceback" not in full.stderr
    os.remove(os.path.join(small_disk, "filler"))
    assert pipeline.run_cli(*RUN_DAILY_LOCAL).returncode == 0
    assert pipeline.counts() == {t: tables[t].num_rows for t in TABLES}


@pytest.fixture
def own_redis(tmp_path, monkeypatch, pipeline):
    """A Redis of this test's own, which the test may stop and start."""
    port = free_port()
    server = redis_server(str(tmp_path), port)
    server.start()
    url = f"redis://127.0.0.1:{port}/0"
    monkeypatch.setenv("REDIS_URL", url)
    pipeline.env["REDIS_URL"] = url
    yield server
    server.stop()


def stop_when(server, task_family, table=None):
    """Stops `server` when that task has done its work, before its on_success."""
    def handler(task, _seconds):
        if type(task).__name__ == task_family and getattr(task, "table", None) == table:
            server.stop()
    luigi.Task.event_handler(luigi.Event.PROCESSING_TIME)(handler)
    return handler


def test_redis_lost_right_after_a_load_keeps_the_load_a_success(pipeline, own_redis, caplog):
    tables = pipeline.publish()
    handler = stop_when(own_redis, "LoadTable", "raw_alerts")
    try:
        assert not pipeline.run()  # the steps after it need Redis
    finally:
        luigi.Task.remove_event_handler(luigi.Event.PROCESSING_TIME, handler)

    failed = {type(task).__name__ + str(getattr(task, "table", "")) for task, _ in pipeline.failures}
    assert "LoadTableraw_alerts" not in failed
    assert "LoadTableraw_alerts" in {type(t).__name__ + str(getattr(t, "table", "")) for t in pipeline.ran}
    notices = [json.loads(r.message) for r in caplog.records if r.name == "workflows.alerts" and r.message[:1] == "{"]
    gave_up = [n for n in notices if n["event"] == "task_gave_up"]
    assert sorted((n["task"], n["table"]) for n in gave_up) == \
        sorted((type(t).__name__, getattr(t, "table", None)) for t, _ in pipeline.failures)
    assert [n["event"] for n in notices].count("cannot_check") <= 1  # one per process, not one per check

    own_redis.start()  # back, empty: nothing was saved
    assert pipeline.run()
    assert pipeline.counts() == {t: tables[t].num_rows for t in TABLES}


@pytest.mark.parametrize("server", ["Redis", "ClickHouse"])
def test_a_server_that_refuses_connections_gives_one_line_naming_it_and_a_notice(pipeline, server):
    tables = pipeline.publish()
    closed = free_port()
    wrong = {"REDIS_URL": f"redis://:secret-pw@127.0.0.1:{closed}/0"} if server == "Redis" else \
        {"CLICKHOUSE_PORT": str(closed), "CLICKHOUSE_PASSWORD": "secret-pw"}

    result = pipeline.run_cli(*RUN_DAILY_LOCAL, **wrong)

    assert result.returncode == 35, result.stderr[-2000:]  # [retcode] scheduling_error
    said = [line for line in result.stderr.splitlines() if "cannot check" in line and "{" not in line]
    assert said and said[0].endswith(f"127.0.0.1:{closed}. Connection refused." if server == "Redis"
                                      else f"Connection refused (127.0.0.1:{closed})"), said
    assert said[0].split(" - ")[-1].startswith("ethereum 2024-10-30: cannot check Cleanup: ")
    assert "Traceback" not in result.stderr
    notices = [json.loads(line[line.index("{"):]) for line in result.stderr.splitlines() if '"cannot_check"' in line]
    assert len(notices) == 1 and notices[0]["network"] == "ethereum"
    assert "secret-pw" not in result.stderr + result.stdout

    assert pipeline.run_cli(*RUN_DAILY_LOCAL).returncode == 0
    assert pipeline.counts() == {t: tables[t].num_rows for t in TABLES}


def wait_for_raw_features_being_staged(luigid, seconds=120):
    def staging():
        return [task for task in luigid_tasks(luigid, "RUNNING").values()
                if task["name"] == "VerifyChecksums" and
                (task.get("status_message") or "").startswith("raw_features.parquet: ")]
    poll(staging, seconds, "raw_features being staged", interval=0.05)


def test_sigterm_ends_a_load_cleanly_and_an_immediate_rerun_goes_straight_on(pipeline, luigid):
    tables = pipeline.publish(tables=make_snapshot("ethereum", DATE, WINDOW, 300_000))
    pipeline.env["INGESTION_RETRY_ATTEMPTS"] = "3"  # a stopped attempt is one failure of three
    run = pipeline.start_cli(*RUN_DAILY)
    wait_for_raw_features_being_staged(luigid)

    run.send_signal(signal.SIGTERM)  # as systemd and `docker stop` do
    output = run.communicate(timeout=60)[0]

    assert run.returncode == 30, output[-3000:]  # [retcode] task_failed: luigid was told
    assert "Terminated: stopped by SIGTERM" in output
    assert luigid_tasks(luigid, "RUNNING") == {}
    # the staging tables went, raw_features' half-filled one and those staged before it
    assert pipeline.ch.execute("SELECT name FROM system.tables WHERE startsWith(name, '_staging_')") == []
    assert pipeline.count("raw_features") == 0  # the day never saw half a load

    started = time.monotonic()
    rerun = pipeline.run_cli(*RUN_DAILY)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert time.monotonic() - started < 60  # no waiting for luigid to give up on a vanished worker
    assert pipeline.counts() == {t: tables[t].num_rows for t in TABLES}


def wait_for_the_features_insert(pipeline, run, seconds=120):
    """Until the run's INSERT into a raw_features staging table is under way on the server."""
    def inserting():
        if pipeline.ch.execute("SELECT count() FROM system.processes"
                               " WHERE query LIKE 'INSERT INTO%\\\\_staging\\\\_raw\\\\_features%'")[0][0]:
            return True
        assert run.poll() is None, "no raw_features insert seen: the run ended"
        return False
    poll(inserting, seconds, "a raw_features insert", interval=0.02)


@pytest.fixture
def own_clickhouse(tmp_path, monkeypatch, pipeline):
    """A ClickHouse of this test's own, which the test may kill and start again on the same data."""
    port = free_port()
    server = clickhouse_server(str(tmp_path), port, free_port())
    server.start()
    monkeypatch.setenv("CLICKHOUSE_PORT", str(port))
    pipeline.env["CLICKHOUSE_PORT"] = str(port)
    pipeline.ch = Client("127.0.0.1", port=port)
    yield server
    close_clickhouse_connections(pipeline.ch)
    server.stop()


def test_clickhouse_killed_mid_load_leaves_readers_the_old_day_and_a_rerun_loads_the_new(pipeline, own_clickhouse):
    pipeline.publish(tables=make_snapshot("ethereum", DATE, WINDOW, 300_000))
    assert pipeline.run_cli(*RUN_DAILY_LOCAL).returncode == 0
    old = pipeline.counts()
    republished = pipeline.publish(tables=make_snapshot("ethereum", DATE, WINDOW, 250_000, seed=1))
    cli.main(["reset", "--date", DATE.isoformat(), "--network", "ethereum", "--step", "download"])

    run = pipeline.start_cli(*RUN_DAILY_LOCAL)
    wait_for_the_features_insert(pipeline, run)
    own_clickhouse.process.kill()  # SIGKILL, mid-insert
    own_clickhouse.process.wait()
    output = run.communicate(timeout=120)[0]
    own_clickhouse.start()  # the same data directory

    assert run.returncode == 30, output[-3000:]
    assert pipeline.count("raw_features") == old["raw_features"]  # readers still have the old day
    assert pipeline.run_cli(*RUN_DAILY_LOCAL).returncode == 0
    assert pipeline.counts() == {t: republished[t].num_rows for t in TABLES}
    assert pipeline.ch.execute("SELECT name FROM system.tables WHERE startsWith(name, '_staging_')") == []


@pytest.mark.parametrize("server", ["Redis", "ClickHouse"])
def test_a_server_that_accepts_and_never_answers_fails_the_run_within_the_connect_timeout(
        pipeline, server, request):
    tables = pipeline.publish()
    hung = request.getfixturevalue("own_redis" if server == "Redis" else "own_clickhouse")
    hung.process.send_signal(signal.SIGSTOP)  # the kernel still accepts its connections
    try:
        started = time.monotonic()
        result = pipeline.run_cli(*RUN_DAILY_LOCAL, INGESTION_CONNECT_TIMEOUT="1")
        elapsed = time.monotonic() - started
    finally:
        hung.process.send_signal(signal.SIGCONT)

    assert result.returncode == 35, result.stderr[-2000:]
    assert elapsed < 30
    said = [line for line in result.stderr.splitlines() if "cannot check" in line and "{" not in line]
    port = pipeline.env["REDIS_URL"].split(":")[-1].split("/")[0] if server == "Redis" else \
        pipeline.env["CLICKHOUSE_PORT"]
    assert said and f"cannot check Cleanup: {server} 127.0.0.1:{port}: " in said[0], said
    assert "timed out" in said[0].lower() or "timeout" in said[0].lower(), said
    assert pipeline.run_cli(*RUN_DAILY_LOCAL).returncode == 0
    assert pipeline.counts() == {t: tables[t].num_rows for t in TABLES}


def test_the_worker_sigkilled_mid_load_leaves_the_day_whole_and_a_rerun_loads_it(pipeline):
    tables = pipeline.publish(tables=make_snapshot("ethereum", DATE, WINDOW, 300_000))
    run = pipeline.start_cli(*RUN_DAILY_LOCAL)
    wait_for_the_features_insert(pipeline, run)
    run.kill()  # SIGKILL: no cleanup of any kind
    run.communicate(timeout=60)

    assert pipeline.count("raw_features") == 0  # a new day: no half of it visible
    assert pipeline.ch.execute(
        "SELECT count() FROM system.tables WHERE startsWith(name, '_staging_raw_features')")[0][0]
    rerun = pipeline.run_cli(*RUN_DAILY_LOCAL)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert pipeline.counts() == {t: tables[t].num_rows for t in TABLES}
    # the dead worker's staging table went with the rerun's first load
    assert pipeline.ch.execute("SELECT name FROM system.tables WHERE startsWith(name, '_staging_')") == []


def run_with_fault(pipeline, point, *args, **env):
    """The `luigi` command with a fault at a known point (tests/fault_points.py)."""
    command = [sys.executable, os.path.join(REPO, "tests", "fault_points.py"), point, "--module", "workflows", *args]
    return subprocess.run(command, cwd=REPO, env={**os.environ, **pipeline.env, **env, "PYTHONPATH": REPO},
                          capture_output=True, text=True, timeout=300)


def test_the_worker_sigkilled_mid_download_leaves_no_download_and_a_rerun_loads_the_day(pipeline):
    tables = pipeline.publish()
    killed = run_with_fault(pipeline, "mid-download", *RUN_DAILY_LOCAL)

    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    parent = os.path.dirname(pipeline.download_dir())
    assert not os.path.exists(pipeline.download_dir())  # half a copy never looks like a download
    [partial] = [name for name in os.listdir(parent) if ".partial-" in name]
    assert len(os.listdir(os.path.join(parent, partial))) == 2  # META.json and the first listed file
    rerun = pipeline.run_cli(*RUN_DAILY_LOCAL)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert pipeline.counts() == {t: tables[t].num_rows for t in TABLES}
    assert [name for name in os.listdir(parent) if ".partial-" in name] == []


def test_a_crash_between_a_swap_and_its_marker_reloads_that_table_on_the_rerun(pipeline):
    tables = pipeline.publish()
    killed = run_with_fault(pipeline, "between-swap-and-marker", *RUN_DAILY_LOCAL)

    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    [swapped] = [t for t in TABLES if pipeline.count(t)]
    assert pipeline.count(swapped) == tables[swapped].num_rows  # the whole day, never a part of it
    assert pipeline.markers() == []  # so no reader's complete_days lists it
    rerun = pipeline.run_cli(*RUN_DAILY_LOCAL)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert pipeline.counts() == {t: tables[t].num_rows for t in TABLES}
    assert sorted((table, rows) for table, _, loaded, rows, _ in pipeline.markers() if loaded) == \
        sorted((t, tables[t].num_rows) for t in TABLES)
    assert pipeline.ch.execute("SELECT name FROM system.tables WHERE startsWith(name, '_staging_')") == []


def test_redis_killed_mid_run_fails_in_one_line_and_a_rerun_loads_the_day(pipeline, own_redis):
    tables = pipeline.publish()
    result = run_with_fault(pipeline, "redis-killed-after-validation", *RUN_DAILY_LOCAL,
                            FAULT_REDIS_PID=str(own_redis.process.pid))

    assert result.returncode == 30, result.stderr[-3000:]  # the step after validation failed
    port = pipeline.env["REDIS_URL"].split(":")[-1].split("/")[0]
    said = [line for line in result.stderr.splitlines() if "cannot check" in line and "{" not in line]
    assert len(said) == 2, said
    reason = said[0]
    # Refused if the kill came before the check's connection, reset or closed if it came while it was open.
    assert re.fullmatch(rf"ethereum 2024-10-30: cannot check VerifyChecksums: Redis 127\.0\.0\.1:{port}:"
                        rf" ConnectionError: (Error 111 connecting to 127\.0\.0\.1:{port}\. Connection refused\."
                        rf"|Error while reading from .+: \(104, 'Connection reset by peer'\)"
                        rf"|Connection closed by server\.)", reason), reason
    assert said[1].endswith(f" failed    VerifyChecksums(network=ethereum, date=2024-10-30, window_days=195): {reason}")
    assert "Traceback" not in result.stderr
    notices = [json.loads(line[line.index("{"):]) for line in result.stderr.splitlines() if '{"attempts"' in line]
    assert [(n["event"], n["task"]) for n in notices] == [("cannot_check", "VerifyChecksums"),
                                                           ("task_gave_up", "VerifyChecksums")]
    assert pipeline.counts() == {t: 0 for t in TABLES}
    own_redis.start()  # back, empty: nothing was saved
    rerun = pipeline.run_cli(*RUN_DAILY_LOCAL)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert pipeline.counts() == {t: tables[t].num_rows for t in TABLES}


def test_redis_flushed_after_success_neither_downloads_nor_loads_again(pipeline):
    tables = pipeline.publish()
    assert pipeline.run()
    markers = pipeline.markers()
    pipeline.redis.flushall()
    shutil.rmtree(pipeline.snapshot_dir())  # the SOT has moved on: nothing may need it

    rerun = pipeline.run_cli(*RUN_DAILY_LOCAL)

    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert pipeline.markers() == markers  # no table loaded again
    assert pipeline.counts() == {t: tables[t].num_rows for t in TABLES}
    assert pipeline.redis.exists(marker_key("ethereum", DATE, WINDOW, "cleanup"))
