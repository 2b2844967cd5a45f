"""What an operator relies on at night: retries through luigid, exit
statuses cron can see, backfill, status and reset, concurrent runs."""
import os
import subprocess
import sys
import threading
import time

from clickhouse_driver import Client

from devkit.sample import make_snapshot
from workflows import cli, clickhouse, sql
from workflows.schema import TABLES

from common import DATE, REPO, RUN_DAILY, RUN_DAILY_LOCAL, luigid_tasks, poll


def run_daily(pipeline, *extra, **env):
    return pipeline.run_cli(*RUN_DAILY, *extra, **env)


def wait_for_a_failure(luigid, seconds=60):
    poll(lambda: luigid_tasks(luigid, "FAILED"), seconds, "a failed task in luigid")


def test_failed_task_is_retried_by_luigid_then_given_up(pipeline, luigid):
    pipeline.publish()
    pipeline.tamper("raw_alerts.parquet")
    started = time.monotonic()

    result = run_daily(pipeline, INGESTION_RETRY_ATTEMPTS="3")

    elapsed = time.monotonic() - started
    assert result.returncode == 30, result.stderr[-3000:]
    attempts = result.stderr.count("bad input: ethereum 2024-10-30 raw_alerts.parquet: sha256 checksum mismatch")
    assert attempts == 3
    assert elapsed >= 2  # INGESTION_RETRY_DELAY=1 between the three attempts
    disabled = luigid_tasks(luigid, "DISABLED")
    assert [t["name"] for t in disabled.values()] == ["VerifyChecksums"]


def test_retry_succeeds_when_the_snapshot_arrives_late(pipeline, luigid):
    pipeline.publish()
    pipeline.withhold_meta()
    run = pipeline.start_cli(*RUN_DAILY, INGESTION_RETRY_ATTEMPTS="5")
    wait_for_a_failure(luigid)
    pipeline.release_meta()  # the SOT finishes its export

    output = run.communicate(timeout=300)[0]

    assert run.returncode == 0, output[-3000:]
    failed = [line for line in output.splitlines() if " failed    DownloadSOT(" in line]
    assert failed and all(line.endswith(f"): ethereum 2024-10-30: not published yet: no META.json at"
                                        f" {pipeline.snapshot_dir()}") for line in failed), failed
    assert "ethereum 2024-10-30 DownloadSOT: attempt 1 of 5; next in 1 s" in output  # INGESTION_RETRY_DELAY
    assert "bad input" not in output and "Traceback" not in output and "task_gave_up" not in output
    assert all(pipeline.counts().values())


def test_shipped_retry_policy_lets_the_3_am_run_try_again():
    from luigi.configuration import LuigiConfigParser
    config = LuigiConfigParser()
    config.read(os.path.join(REPO, "luigi.cfg"))
    window, persist = config.getint("scheduler", "disable_window"), config.getint("scheduler", "disable_persist")
    between_runs = 2 * 3600
    default_attempts, default_delay = 3, 300
    assert persist < between_runs and window < between_runs  # 1 AM failures neither count nor block at 3 AM
    assert window > default_attempts * default_delay  # one run's failures all count: luigid does give up
    assert config.getboolean("worker", "keep_alive") and config.getboolean("scheduler", "prune_on_get_work")
    for outcome in ("task_failed", "not_run", "scheduling_error", "missing_data", "already_running",
                    "unhandled_exception"):
        assert config.getint("retcode", outcome) > 0, outcome  # cron must see every run that did not finish


def test_a_later_run_tries_again_after_a_run_gave_up(pipeline, start_luigid, tmp_path):
    """The 1 AM and 3 AM runs, with the hour of disable_persist scaled down to 3 seconds."""
    text = open(os.path.join(REPO, "luigi.cfg")).read()
    assert "disable_persist = 3600" in text
    scaled = tmp_path / "luigi-scaled.cfg"
    scaled.write_text(text.replace("disable_persist = 3600", "disable_persist = 3"))
    start_luigid(str(scaled))
    pipeline.publish()
    pipeline.withhold_meta()

    first = run_daily(pipeline, INGESTION_RETRY_ATTEMPTS="1")
    soon_after = run_daily(pipeline, INGESTION_RETRY_ATTEMPTS="1")
    pipeline.release_meta()  # the SOT publishes at last
    time.sleep(3.5)
    later = run_daily(pipeline, INGESTION_RETRY_ATTEMPTS="1")

    assert first.returncode == 30, first.stderr[-2000:]
    # the task is still given up on: the run does nothing, and says so with its exit status
    assert soon_after.returncode != 0, soon_after.stderr[-2000:]
    assert later.returncode == 0, later.stderr[-2000:]
    assert all(pipeline.counts().values())


def test_two_runs_at_once_load_each_table_once(pipeline, luigid):
    """Two different RunDaily commands for the same date (an operator's next
    to cron's): luigid gives each task to one worker, the other waits."""
    tables = {network: pipeline.publish(network) for network in ("ethereum", "bitcoin")}
    runs = [pipeline.start_cli("RunDaily", "--date", DATE.isoformat(), "--networks", networks)
            for networks in ("ethereum,bitcoin", "ethereum")]
    outputs = [run.communicate(timeout=300)[0] for run in runs]

    # A process some of whose tasks luigid gave to the other one ends with
    # exit 10 ([retcode] already_running: "were being run by another worker")
    # or 25 (not_run: "not granted run permission"), depending on when it
    # asked: never a success for work it did not see done.
    said = {0: "", 10: "being run by another worker", 25: "not granted run permission"}
    for run, output in zip(runs, outputs):
        assert run.returncode in said and said[run.returncode] in output, output[-2000:]
    for network in tables:
        assert pipeline.counts(network) == {t: tables[network][t].num_rows for t in TABLES}
        loads = [(table, loaded) for table, _, loaded, _, _ in pipeline.markers(network)]
        assert sorted(loads) == sorted((t, 1) for t in TABLES)  # one marker row per table: loaded once


def test_the_same_command_while_it_runs_is_refused_visibly(pipeline, luigid):
    pipeline.publish()
    pipeline.withhold_meta()  # the first run waits for the SOT, retrying
    first = pipeline.start_cli(*RUN_DAILY, INGESTION_RETRY_ATTEMPTS="10")
    wait_for_a_failure(luigid)

    second = run_daily(pipeline, INGESTION_RETRY_ATTEMPTS="10")
    pipeline.release_meta()
    output = first.communicate(timeout=300)[0]

    assert second.returncode == 10, second.stderr[-2000:]  # [retcode] already_running
    assert "already running" in second.stdout
    assert first.returncode == 0, output[-2000:]
    assert sorted(t for t, *_ in pipeline.markers()) == sorted(TABLES)


def test_two_local_scheduler_runs_at_once_leave_exactly_one_copy_of_the_day(pipeline):
    """No shared luigid: both runs download, check and load the same day at
    the same time. Each load has its own staging table and counts the day
    after its swap, so the day ends with one copy and no marker says loaded
    for rows that are not there."""
    tables = pipeline.publish(tables=make_snapshot("ethereum", DATE, 195, 20_000))
    published = {t: tables[t].num_rows for t in TABLES}
    for attempt in range(3):
        # two different command lines: luigi's own lock refuses a second identical one
        runs = [pipeline.start_cli(*RUN_DAILY_LOCAL, *extra) for extra in ((), ("--workers", "2"))]
        outputs = [run.communicate(timeout=300)[0] for run in runs]

        errors = [line for output in outputs for line in output.splitlines() if "ERROR" in line or "Error" in line]
        assert [run.returncode for run in runs] == [0, 0], errors
        assert pipeline.counts() == published
        for table, _, loaded, rows, _ in pipeline.markers():
            assert not loaded or rows == published[table], (table, rows)
        assert pipeline.ch.execute("SELECT name FROM system.tables WHERE startsWith(name, '_staging_')") == []
        assert pipeline.run_cli(*RUN_DAILY_LOCAL).returncode == 0
        assert pipeline.counts() == published
        cli.main(["reset", "--date", DATE.isoformat(), "--network", "ethereum", "--step", "download"])


def test_reset_re_enables_a_day_luigid_gave_up_on_so_a_manual_rerun_runs(pipeline, luigid):
    pipeline.publish()
    pipeline.withhold_meta()
    assert run_daily(pipeline, INGESTION_RETRY_ATTEMPTS="1").returncode == 30
    pipeline.release_meta()  # fixed upstream, within luigid's hour of disable_persist

    blocked = run_daily(pipeline, INGESTION_RETRY_ATTEMPTS="1")
    assert blocked.returncode == 25, blocked.stderr[-2000:]  # [retcode] not_run
    [why] = [line for line in blocked.stderr.splitlines() if "is disabled in luigid" in line]
    assert why.endswith("DownloadSOT(network=ethereum, date=2024-10-30, window_days=195) is disabled in luigid: its"
                        " retries were used up. It runs again after [scheduler] disable_persist (3600 s), or at once"
                        " after `python -m workflows reset --date 2024-10-30 --network ethereum`"), why

    reset = subprocess.run([sys.executable, "-m", "workflows", "reset", "--date", DATE.isoformat(), "--network",
                            "ethereum"], cwd=REPO, env={**os.environ, **pipeline.env}, capture_output=True, text=True)
    assert reset.returncode == 0, reset.stderr
    assert "re-enabled in luigid: DownloadSOT(network=ethereum, date=2024-10-30, window_days=195)" in reset.stdout, \
        reset.stdout
    rerun = run_daily(pipeline, INGESTION_RETRY_ATTEMPTS="1")
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert all(pipeline.counts().values())


def test_a_reset_and_a_rerun_right_after_a_run_through_luigid_redo_the_step(pipeline, luigid):
    pipeline.publish()
    assert run_daily(pipeline).returncode == 0
    before = {table: version for table, _, loaded, _, version in pipeline.markers() if loaded}

    assert cli.main(["reset", "--date", DATE.isoformat(), "--network", "ethereum", "--table", "raw_features"]) == 0
    rerun = run_daily(pipeline)  # within luigid's former 10 s of stable_done_cooldown_secs

    assert rerun.returncode == 0, rerun.stderr[-2000:]
    after = {table: version for table, _, loaded, _, version in pipeline.markers() if loaded}
    assert [t for t in TABLES if after[t] != before[t]] == ["raw_features"]


def test_listing_staging_tables_while_other_loads_make_and_drop_theirs_never_fails(pipeline):
    """ClickHouse 18.16 fails a read of system.tables with UNKNOWN_TABLE when a
    table it lists goes while it reads: found by the test above, as a load's
    claim of its staged table failing now and then."""
    database = "risk_assessment_churn"
    pipeline.ch.execute(f"CREATE DATABASE {database}")
    stop = threading.Event()

    def churn():  # as concurrent loads stage, claim and drop
        ch, i = Client("127.0.0.1", port=pipeline.servers.clickhouse_port), 0
        while not stop.is_set():
            i += 1
            ch.execute(f"CREATE TABLE {database}._staging_a_{i} (x UInt8) ENGINE = MergeTree ORDER BY x")
            ch.execute(f"RENAME TABLE {database}._staging_a_{i} TO {database}._staging_b_{i}")
            ch.execute(f"DROP TABLE {database}._staging_b_{i}")
    thread = threading.Thread(target=churn)
    thread.start()
    try:
        deadline, reads = time.monotonic() + 5, 0
        while time.monotonic() < deadline:  # about 1,000 reads; without the retry, about 1 in 150 fails
            clickhouse.query_tables_retrying(pipeline.ch, sql.staging_tables(database))
            reads += 1
    finally:
        stop.set()
        thread.join()
    assert reads > 100
