"""Every run ends, and a configuration that would mix networks never starts:
a server, luigid or the download folder that cannot be used ends the run in
one line naming it, whatever state is on disk."""
import os
import subprocess
import time

import pytest

from devkit.local_servers import free_port
from workflows.schema import TABLES

from common import DATE, RUN_DAILY, RUN_DAILY_LOCAL, WINDOW

HANG_SECONDS = 60  # far beyond any of these runs: a run still going then is waiting forever


def run_to_the_end(pipeline, *args, **env):
    """The `luigi` command; fails the test when it has not ended within HANG_SECONDS."""
    run = pipeline.start_cli(*args, **env)
    started = time.monotonic()
    try:
        output = run.communicate(timeout=HANG_SECONDS)[0]
    except subprocess.TimeoutExpired:
        run.kill()
        tail = run.communicate()[0][-2000:]
        pytest.fail(f"the run was still going after {HANG_SECONDS} s:\n{tail}")
    return run.returncode, output, time.monotonic() - started


def our_lines(output):
    """What the run said itself: not luigi's INFO/DEBUG, its summary, or the JSON notices."""
    return [line for line in output.splitlines()
            if line and not line.startswith(("DEBUG", "INFO", " ", "*", "=", "{", "Scheduled", "Did not", "This"))]


def downloaded_only(pipeline):
    """The documented recovery state: the download on disk, nothing after it."""
    assert pipeline.run_cli("DownloadSOT", "--network", "ethereum", "--date", DATE.isoformat(),
                            "--window-days", str(WINDOW), "--local-scheduler").returncode == 0
    assert os.path.isdir(pipeline.download_dir())


@pytest.mark.parametrize("server", ["ClickHouse", "Redis"])
@pytest.mark.parametrize("scheduler", ["--local-scheduler", "luigid"])
def test_a_server_down_with_a_download_on_disk_ends_the_run_in_one_line(pipeline, luigid, server, scheduler):
    pipeline.publish()
    downloaded_only(pipeline)
    closed = free_port()
    down = {"CLICKHOUSE_PORT": str(closed)} if server == "ClickHouse" else \
        {"REDIS_URL": f"redis://127.0.0.1:{closed}/0"}

    status, output, seconds = run_to_the_end(pipeline, *RUN_DAILY, *[a for a in [scheduler] if a != "luigid"],
                                             **down)

    assert status == 35, output[-3000:]  # [retcode] scheduling_error
    said = [line for line in our_lines(output) if "cannot check" in line and not line.startswith("WARNING")]
    assert len(said) == 1 and f"{server} 127.0.0.1:{closed}: " in said[0], said
    assert "Traceback" not in output
    assert seconds < 30

    assert pipeline.run_cli(*RUN_DAILY_LOCAL).returncode == 0  # the servers back: it loads
    assert all(pipeline.counts()[t] > 0 for t in TABLES)


def test_a_download_folder_that_is_a_file_is_named_not_blamed_on_clickhouse(pipeline, tmp_path):
    pipeline.publish()
    downloaded_only(pipeline)
    not_a_folder = tmp_path / "a-file"
    not_a_folder.write_text("")

    status, output, _ = run_to_the_end(pipeline, *RUN_DAILY_LOCAL, SOT_DOWNLOAD_DIR=str(not_a_folder))

    assert status == 35, output[-3000:]
    said = [line for line in our_lines(output) if "cannot check" in line and not line.startswith("WARNING")]
    assert len(said) == 1, said
    assert f"download folder SOT_DOWNLOAD_DIR={not_a_folder}: Not a directory" in said[0]
    assert "ClickHouse" not in said[0]


def test_a_download_folder_that_cannot_be_written_fails_the_download_in_one_line(pipeline, tmp_path):
    pipeline.publish()
    read_only = tmp_path / "read-only"
    read_only.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(read_only)],
                             capture_output=True)
    if mounted.returncode:
        pytest.skip(f"mounting a tmpfs is not allowed here: {mounted.stderr.decode().strip()}")
    try:
        status, output, _ = run_to_the_end(pipeline, *RUN_DAILY_LOCAL,
                                           SOT_DOWNLOAD_DIR=str(read_only))
    finally:
        subprocess.run(["umount", "-l", str(read_only)], check=True)

    assert status == 30, output[-3000:]  # [retcode] task_failed
    assert f"DownloadSOT(network=ethereum, date={DATE}, window_days={WINDOW}): ethereum {DATE}: download folder" \
           f" SOT_DOWNLOAD_DIR={read_only}: Read-only file system: {read_only}/ethereum" in output
    assert "Traceback" not in output


def test_luigid_unreachable_ends_the_run_in_one_line(pipeline):
    pipeline.publish()
    url = f"http://127.0.0.1:{free_port()}/"

    status, output, seconds = run_to_the_end(pipeline, *RUN_DAILY, LUIGI_SCHEDULER_URL=url)

    assert status == 35, output[-3000:]
    assert our_lines(output) == [f"luigid at {url} does not answer (3 attempts, 2 s apart): <urlopen error"
                                 " [Errno 111] Connection refused>"]
    assert seconds < 15
    assert not os.path.exists(pipeline.downloads)


def test_two_networks_in_one_database_are_refused_before_any_io(pipeline):
    pipeline.publish("ethereum")
    pipeline.publish("bitcoin")

    result = pipeline.run_cli("RunDaily", "--date", DATE.isoformat(), "--local-scheduler",
                              CLICKHOUSE_DATABASE="risk_assessment_shared")

    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1] == (
        "configuration error: CLICKHOUSE_DATABASE: 'risk_assessment_shared' would put ethereum and bitcoin into"
        " the same tables, where each network's day replaces the other's; give {network} in the name")
    assert not os.path.exists(pipeline.downloads)
    assert ("risk_assessment_shared",) not in pipeline.ch.execute("SHOW DATABASES")

    one = pipeline.run_cli("RunDaily", "--date", DATE.isoformat(), "--local-scheduler",  # one network: its own
                           CLICKHOUSE_DATABASE="risk_assessment_shared", INGESTION_NETWORKS="ethereum")
    assert one.returncode == 0, one.stderr[-3000:]
    rows = pipeline.ch.execute("SELECT count() FROM risk_assessment_shared.raw_alerts")

    # a step of a network not listed, run on its own, would replace ethereum's day in the same tables
    other = pipeline.run_cli("Cleanup", "--network", "bitcoin", "--date", DATE.isoformat(), "--local-scheduler",
                             CLICKHOUSE_DATABASE="risk_assessment_shared", INGESTION_NETWORKS="ethereum")
    assert other.returncode == 1, other.stderr[-3000:]
    assert other.stderr.strip().splitlines()[-1] == (
        "configuration error: CLICKHOUSE_DATABASE: 'risk_assessment_shared' would put ethereum and bitcoin into"
        " the same tables, where each network's day replaces the other's; give {network} in the name")
    assert pipeline.ch.execute("SELECT count() FROM risk_assessment_shared.raw_alerts") == rows
    assert not os.path.exists(os.path.join(pipeline.downloads, "bitcoin"))


def test_a_network_that_is_not_configured_is_refused_before_any_io(pipeline):
    pipeline.publish()
    databases = pipeline.ch.execute("SHOW DATABASES")

    result = pipeline.run_cli("RunDaily", "--date", DATE.isoformat(), "--networks", "bitcon", "--local-scheduler")

    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1] == \
        "configuration error: network 'bitcon' is not in INGESTION_NETWORKS (ethereum, bitcoin)"
    assert pipeline.ch.execute("SHOW DATABASES") == databases
    assert not os.path.exists(pipeline.downloads)
