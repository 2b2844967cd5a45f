"""The `luigi` command as cron runs it, through a real luigid."""
import os

from conftest import DATE, luigid_tasks

from workflows.meta import TABLES


def test_run_daily_through_luigid(pipeline, luigid):
    tables = pipeline.publish()

    result = pipeline.run_cli("RunDaily", "--date", DATE.isoformat(), "--networks", "ethereum")

    assert result.returncode == 0, result.stderr
    assert pipeline.counts() == {t: tables[t].num_rows for t in TABLES}
    done = {task["name"] for task in luigid_tasks(luigid, "DONE").values()}
    assert done == {"RunDaily", "Cleanup", "LoadTable", "VerifyChecksums", "ValidateMeta", "DownloadSOT"}


def test_failed_run_exits_non_zero_with_the_reason(pipeline, luigid):
    pipeline.publish()
    pipeline.tamper("raw_alerts.parquet")

    result = pipeline.run_cli("RunDaily", "--date", DATE.isoformat(), "--networks", "ethereum")

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
