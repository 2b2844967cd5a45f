"""python -m workflows status | reset | crontab, and backfill with RangeDaily."""
import datetime as dt
import os
import shutil
import subprocess
import sys
import time

from conftest import DATE, REPO

from workflows import cli
from workflows.meta import TABLES


def loaded_versions(pipeline):
    """{table: version} of the tables whose latest marker row says loaded."""
    latest = {table: (loaded, version) for table, _, loaded, _, version in pipeline.markers()}
    return {table: version for table, (loaded, version) in latest.items() if loaded}


def test_status_shows_steps_and_rows(pipeline, capsys):
    tables = pipeline.publish()
    assert pipeline.run()

    assert cli.main(["status", "--date", DATE.isoformat(), "--network", "ethereum", "--network", "bitcoin"]) == 0

    header, ethereum, bitcoin = capsys.readouterr().out.splitlines()
    assert header.split() == ["network", "date", "download", "validate", "checksums", *TABLES, "cleanup"]
    assert ethereum.split() == ["ethereum", DATE.isoformat(), "-", "-", "-",
                                *[f"{tables[t].num_rows:,}" for t in TABLES], "done"]
    assert bitcoin.split() == ["bitcoin", DATE.isoformat()] + ["-"] * 8


def test_reset_one_table_redoes_that_table_and_cleanup(pipeline, capsys):
    pipeline.publish()
    assert pipeline.run()
    before = loaded_versions(pipeline)

    assert cli.main(["reset", "--date", DATE.isoformat(), "--network", "ethereum", "--table", "raw_features"]) == 0

    assert capsys.readouterr().out.count("removed") == 2  # the table's marker and the cleanup marker
    cli.main(["status", "--date", DATE.isoformat(), "--network", "ethereum"])
    assert capsys.readouterr().out.splitlines()[1].split()[-1] == "-"
    assert pipeline.run()
    after = loaded_versions(pipeline)
    assert [t for t in TABLES if after[t] != before[t]] == ["raw_features"]


def test_a_reset_from_a_host_whose_clock_is_behind_still_wins(pipeline):
    """Marker versions come from the server, in the order of writes: a reset
    made two minutes "earlier" than the load it resets still resets it."""
    pipeline.publish()
    assert pipeline.run()

    reset = subprocess.run(
        ["faketime", "-f", "-2m", sys.executable, "-m", "workflows", "reset", "--date", DATE.isoformat(),
         "--network", "ethereum", "--table", "raw_alerts"],
        cwd=REPO, env={**os.environ, **pipeline.env}, capture_output=True, text=True, timeout=120)

    assert reset.returncode == 0, reset.stderr
    assert "raw_alerts" not in loaded_versions(pipeline)
    assert pipeline.run()
    assert "raw_alerts" in loaded_versions(pipeline)


def test_reset_download_redoes_every_step(pipeline, capsys):
    pipeline.publish()
    assert pipeline.run()
    before = loaded_versions(pipeline)

    assert cli.main(["reset", "--date", DATE.isoformat(), "--network", "ethereum", "--step", "download"]) == 0

    assert not os.path.exists(pipeline.download_dir())
    pipeline.ran.clear()
    assert pipeline.run()
    assert {type(t).__name__ for t in pipeline.ran} >= {"DownloadSOT", "ValidateMeta", "VerifyChecksums", "Cleanup"}
    after = loaded_versions(pipeline)
    assert all(after[t] > before[t] for t in TABLES)


def test_crontab_is_the_commands_default_output(monkeypatch, capsys):
    monkeypatch.delenv("INGESTION_NETWORKS", raising=False)
    monkeypatch.chdir(REPO)

    assert cli.main(["crontab"]) == 0

    printed = capsys.readouterr().out
    assert printed == open(os.path.join(REPO, "crontab")).read()
    jobs = [line.split() for line in printed.splitlines() if line[:1].isdigit()]
    assert [(j[0], j[1], j[j.index("--networks") + 1]) for j in jobs] == [
        ("0", "1", "ethereum"), ("15", "1", "bitcoin"), ("30", "1", "torus"),
        ("0", "3", "ethereum"), ("15", "3", "bitcoin"), ("30", "3", "torus")]
    for job in jobs:
        network = job[job.index("--networks") + 1]
        assert "flock" in job and "-n" in job and job[-3:] == [">>", f"/var/log/sot-ingestion/{network}.log", "2>&1"]


def test_crontab_follows_the_configured_networks(monkeypatch, capsys):
    monkeypatch.setenv("INGESTION_NETWORKS", "ethereum,bitcoin,torus,solana")
    cli.main(["crontab"])
    jobs = [line.split() for line in capsys.readouterr().out.splitlines() if line[:1].isdigit()]
    assert ("45", "1") in [(j[0], j[1]) for j in jobs if "solana" in j]


def test_backfill_fills_missing_dates_then_returns_fast_without_the_sot(pipeline):
    dates = [DATE - dt.timedelta(days=2), DATE - dt.timedelta(days=1)]
    for date in dates:
        pipeline.publish(date=date)
    args = ["RangeDaily", "--of", "RunDaily", "--start", dates[0].isoformat(), "--stop", DATE.isoformat(),
            "--local-scheduler", "--RunDaily-networks", "ethereum"]

    first = pipeline.run_cli(*args)

    assert first.returncode == 0, first.stderr[-2000:]
    assert all(all(pipeline.counts(date=d).values()) for d in dates)
    shutil.rmtree(pipeline.sot)  # a date already done must not touch the SOT
    started = time.monotonic()
    second = pipeline.run_cli(*args)
    assert second.returncode == 0, second.stderr[-2000:]
    assert time.monotonic() - started < 10
    assert not any(os.path.exists(pipeline.download_dir(date=d)) for d in dates)
