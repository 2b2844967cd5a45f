"""python -m workflows status | reset | crontab, and backfill with RangeDaily."""
import argparse
import datetime as dt
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from devkit.local_servers import free_port
from workflows import cli
from workflows.crontab import crontab
from workflows.schema import TABLES

from common import DATE, REPO


def loaded_versions(pipeline):
    """{table: version} of the tables whose latest marker row says loaded."""
    latest = {table: (loaded, version) for table, _, loaded, _, version in pipeline.markers()}
    return {table: version for table, (loaded, version) in latest.items() if loaded}


def test_status_shows_steps_and_rows(pipeline, capsys):
    tables = pipeline.publish()
    assert pipeline.run()

    assert cli.main(["status", "--date", DATE.isoformat(), "--network", "ethereum", "--network", "bitcoin"]) == 0

    header, ethereum, bitcoin, blank, *legend = capsys.readouterr().out.splitlines()
    assert header.split() == ["network", "date", "download", "validate", "checksums", *TABLES, "cleanup", "state"]
    assert ethereum.split() == ["ethereum", DATE.isoformat(), "-", "-", "-",
                                *[f"{tables[t].num_rows:,}" for t in TABLES], "done", "done"]
    assert bitcoin.split() == ["bitcoin", DATE.isoformat()] + ["-"] * 9
    assert blank == "" and legend[1].startswith("-         not done")


def test_status_shows_a_failed_day_with_its_reason_over_a_range(pipeline, capsys):
    pipeline.publish()
    pipeline.tamper("raw_alerts.parquet")
    assert not pipeline.run()

    assert cli.main(["status", "--from", (DATE - dt.timedelta(days=1)).isoformat(), "--to", DATE.isoformat(),
                     "--network", "ethereum"]) == 0

    rows = capsys.readouterr().out.splitlines()[1:3]
    assert [row.split()[1] for row in rows] == [(DATE - dt.timedelta(days=1)).isoformat(), DATE.isoformat()]
    assert rows[0].split()[-1] == "-"
    state = rows[1][rows[1].index("failed: "):]
    assert state.startswith("failed: VerifyChecksums, attempt 1 of 1, gave up: ethereum 2024-10-30"
                            " raw_alerts.parquet: sha256 checksum mismatch"), state
    pipeline.publish()  # fixed: the day done clears its failure
    assert pipeline.run()
    cli.main(["status", "--date", DATE.isoformat(), "--network", "ethereum"])
    assert capsys.readouterr().out.splitlines()[1].split()[-1] == "done"


@pytest.mark.parametrize("command", ["status", "reset"])
def test_a_typo_in_a_network_is_refused_and_creates_nothing(pipeline, capsys, command):
    pipeline.publish()
    assert pipeline.run()
    databases = pipeline.ch.execute("SHOW DATABASES")

    assert cli.main([command, "--date", DATE.isoformat(), "--network", "etherum"]) == 2
    assert capsys.readouterr().err.strip() == "configuration error: network 'etherum' is not in INGESTION_NETWORKS" \
                                              " (ethereum, bitcoin); --force to use it anyway"
    assert cli.main([command, "--date", DATE.isoformat(), "--network", "solana", "--force"]) == 0
    out = capsys.readouterr().out
    assert pipeline.ch.execute("SHOW DATABASES") == databases  # forced, and still nothing created
    if command == "reset":
        assert out.startswith("nothing to remove: no target of solana 2024-10-30 from step download on")


def test_reset_says_what_it_removed_and_when_there_was_nothing(pipeline, capsys):
    pipeline.publish()
    assert pipeline.run()

    assert cli.main(["reset", "--date", DATE.isoformat(), "--network", "ethereum", "--step", "load"]) == 0
    removed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("removed ")]
    assert len(removed) == 5 and removed[-1].startswith("removed RedisMarkerTarget(")  # four tables, cleanup
    assert cli.main(["reset", "--date", DATE.isoformat(), "--network", "ethereum", "--step", "load"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == \
        "nothing to remove: no target of ethereum 2024-10-30 from step load on"


def test_every_option_of_the_cli_says_what_it_is():
    subcommands = next(a for a in cli.command_line()._actions if isinstance(a, argparse._SubParsersAction))
    for name, parser in subcommands.choices.items():
        for action in parser._actions:
            assert action.help, f"{name} {action.option_strings} has no help"
            if action.default not in (None, False, argparse.SUPPRESS) and action.option_strings:
                assert str(action.default) in action.help, f"{name} {action.option_strings}: default not said"
    assert {"status", "reset", "publish", "crontab", "luigid"} <= set(subcommands.choices)


@pytest.mark.parametrize("argv", [["status", "--date", "2024-13-01"], ["reset", "--date", "yesterday",
                                                                        "--network", "ethereum"]])
def test_a_bad_date_gives_one_line(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv)
    assert exit_.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.endswith("is not a date (YYYY-MM-DD)") and "Traceback" not in error


def test_a_bad_date_on_the_luigi_command_gives_one_line(pipeline):
    result = pipeline.run_cli("RunDaily", "--date", "2024-13-01", "--local-scheduler")
    assert result.returncode == 40  # [retcode] unhandled_exception
    assert result.stderr.strip() == "ERROR: Uncaught exception in luigi: '2024-13-01' is not a date (YYYY-MM-DD)"


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
    assert "CRON_TZ=UTC" in printed.splitlines()
    jobs = [line.split() for line in printed.splitlines() if line[:1].isdigit()]
    assert [(j[0], j[1], j[j.index("--networks") + 1]) for j in jobs] == [
        ("0", "1", "ethereum"), ("15", "1", "bitcoin"), ("30", "1", "torus"),
        ("0", "3", "ethereum"), ("15", "3", "bitcoin"), ("30", "3", "torus")]
    for job in jobs:
        network = job[job.index("--networks") + 1]
        assert "flock" in job and "-n" in job and job[-3:] == [">>", f"/var/log/sot-ingestion/{network}.log", "2>&1"]


def test_networks_that_would_reach_the_3_am_slot_are_spread_over_the_two_hours():
    eight, nine = (tuple(f"n{i}" for i in range(n)) for n in (8, 9))

    def starts(text):
        return [(int(line.split()[1]), int(line.split()[0])) for line in text.splitlines() if line[:1].isdigit()]

    assert starts(crontab(eight))[:8] == [(1, 0), (1, 15), (1, 30), (1, 45), (2, 0), (2, 15), (2, 30), (2, 45)]
    assert "spread" not in crontab(eight)
    night = starts(crontab(nine))[:9]
    assert night == [(1 + m // 60, m % 60) for m in range(0, 9 * 13, 13)] and night[-1] < (3, 0)
    assert "# 9 networks 15 minutes apart would run into the 3:00 slot: spread 13 minutes apart instead." in \
        crontab(nine).splitlines()


@pytest.mark.parametrize("local_time, day", [("2024-10-31 02:00:00", "2024-10-30"),  # 1:00 UTC
                                             ("2024-10-31 00:30:00", "2024-10-29")])  # 23:30 UTC the day before
def test_the_crontabs_date_is_yesterday_in_utc_in_any_time_zone(local_time, day):
    line = next(line for line in crontab(("ethereum",)).splitlines() if line[:1].isdigit())
    expression = line[line.index("--date ") + 7:line.index(" --networks")].replace("\\%", "%")
    printed = subprocess.run(["faketime", local_time, "sh", "-c", f"echo {expression}"], capture_output=True,
                             text=True, env=dict(os.environ, TZ="Europe/Amsterdam"), check=True).stdout.strip()
    assert printed == day


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


def test_a_backfill_over_unpublished_days_ends_with_one_line_per_missing_day(pipeline):
    published = DATE - dt.timedelta(days=2)
    pipeline.publish(date=published)
    missing = [DATE - dt.timedelta(days=3), DATE - dt.timedelta(days=1), DATE]

    result = pipeline.run_cli("RangeDaily", "--of", "RunDaily", "--start", missing[0].isoformat(),
                              "--stop", (DATE + dt.timedelta(days=1)).isoformat(), "--local-scheduler",
                              "--RunDaily-networks", "ethereum")

    assert result.returncode == 30, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    summary = [line.split(" - ")[-1] for line in result.stderr.splitlines()
               if ": failed: DownloadSOT, attempt 1 of 1, gave up: " in line]
    assert sorted(summary) == [f"ethereum {day}: failed: DownloadSOT, attempt 1 of 1, gave up: ethereum {day}: not"
                               f" published yet: no META.json at {pipeline.snapshot_dir(date=day)}"
                               for day in missing], summary
    assert all(pipeline.counts(date=published).values())


@pytest.mark.parametrize("command", ["status", "reset"])
def test_status_and_reset_work_with_redis_full(pipeline, command):
    """Reads and deletes are what Redis still allows when it is full (maxmemory, noeviction)."""
    pipeline.publish()
    assert pipeline.run()
    pipeline.redis.config_set("maxmemory-policy", "noeviction")
    pipeline.redis.config_set("maxmemory", 1)
    try:
        result = cli_command(pipeline, command, "--date", DATE.isoformat(), "--network", "ethereum")
    finally:
        pipeline.redis.config_set("maxmemory", 0)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert ("removed " if command == "reset" else "ethereum  2024-10-30") in result.stdout


def cli_command(pipeline, *args, **env):
    return subprocess.run([sys.executable, "-m", "workflows", *args], cwd=REPO,
                          env={**os.environ, **pipeline.env, **env}, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("fault", ["redis down", "clickhouse down", "table dropped by hand"])
@pytest.mark.parametrize("command", ["status", "reset"])
def test_read_only_and_reset_commands_say_in_one_line_which_server_or_table_failed(pipeline, command, fault):
    pipeline.publish()
    assert pipeline.run()
    env = {}
    if fault == "redis down":
        env["REDIS_URL"] = f"redis://127.0.0.1:{free_port()}/0"
    elif fault == "clickhouse down":
        env["CLICKHOUSE_PORT"] = str(free_port())
    else:
        pipeline.ch.execute(f"DROP TABLE {pipeline.database()}.raw_clusters")
    args = ["--date", DATE.isoformat(), "--network", "ethereum"] + (["--step", "load"] if command == "reset" else [])

    result = cli_command(pipeline, command, *args, **env)

    if command == "reset" and fault == "table dropped by hand":  # reset makes the schema whole, as a run does
        assert result.returncode == 0, result.stderr
        assert pipeline.count("raw_clusters") == 0
        return
    assert result.returncode == 1, result.stdout + result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"{command}: "), line
    assert {"redis down": f"Redis 127.0.0.1:{env.get('REDIS_URL', '::').split(':')[-1].split('/')[0]}: ",
            "clickhouse down": f"ClickHouse 127.0.0.1:{env.get('CLICKHOUSE_PORT')}: ",
            "table dropped by hand": "raw_clusters"}[fault] in line, line
    assert "Traceback" not in result.stderr


def test_status_into_a_pipe_whose_reader_has_gone_ends_quietly(pipeline):
    """`status --grid | head -1`: head leaves before the grid is written; that is no server's failure."""
    pipeline.publish()
    assert pipeline.run()
    reader, writer = os.pipe()
    os.close(reader)  # the reader has gone before the first line
    try:
        result = subprocess.run([sys.executable, "-m", "workflows", "status", "--grid", "--to", DATE.isoformat()],
                                cwd=REPO, env={**os.environ, **pipeline.env}, stdout=writer, stderr=subprocess.PIPE,
                                text=True, timeout=120)
    finally:
        os.close(writer)
    assert result.returncode == 128 + signal.SIGPIPE, result.stderr
    assert result.stderr == ""
