"""What the operator sees (issue "The operator's view"): the day grid in
text and HTML, the metrics file, the freshness check, a failed step in the
visualiser, and a quiet run."""
import datetime as dt
import os
import re
import subprocess
import sys

import luigi
import luigi.configuration
from prometheus_client.parser import text_string_to_metric_families

from workflows.schema import TABLES

from common import DATE, REPO, luigid_tasks

EVERY_STATE = [DATE - dt.timedelta(days=n) for n in (4, 3, 2, 1, 0)]  # done, failed, gave up, unpublished, partial


def python_m_workflows(pipeline, *args, **env):
    environment = {**os.environ, **pipeline.env, **env}
    environment.pop("SOT_URL")  # status and check only read: they need no SOT_URL
    return subprocess.run([sys.executable, "-m", "workflows", *args], cwd=REPO, env=environment,
                          capture_output=True, text=True, timeout=120)


def run_without_retries_waiting(pipeline, date):
    """RunDaily in this process, its worker not waiting for retries: a failure keeps its attempts left."""
    config = luigi.configuration.get_config()
    config.set("worker", "keep_alive", "false")
    try:
        return pipeline.run(date=date)
    finally:
        config.set("worker", "keep_alive", "true")


def metrics_samples(path):
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(open(path).read()) for sample in family.samples}


def prepare_every_state(pipeline, monkeypatch):
    """ethereum's days, one in each state (EVERY_STATE); bitcoin has nothing."""
    done, failed, gave_up, unpublished, partial = EVERY_STATE
    tables = pipeline.publish(date=done)
    assert pipeline.run(date=done)
    for date in (failed, gave_up):
        pipeline.publish(date=date)
        with open(pipeline.snapshot_file("raw_alerts.parquet", date=date), "ab") as stream:
            stream.write(b"tampered")
    monkeypatch.setenv("INGESTION_RETRY_ATTEMPTS", "3")
    assert not run_without_retries_waiting(pipeline, failed)  # attempt 1 of 3
    monkeypatch.setenv("INGESTION_RETRY_ATTEMPTS", "1")
    assert not pipeline.run(date=gave_up)  # attempt 1 of 1: gave up
    assert not pipeline.run(date=unpublished)  # nothing published that day
    pipeline.publish(date=partial)
    luigi.task_register.Register.clear_instance_cache()
    from workflows.pipeline.steps import DownloadSOT
    assert luigi.build([DownloadSOT("ethereum", partial, 195)], local_scheduler=True, log_level="WARNING")
    return tables


def test_the_grid_metrics_and_freshness_of_a_prepared_set_of_days(pipeline, monkeypatch, tmp_path):
    textfile = str(tmp_path / "metrics" / "sot_ingestion.prom")
    os.makedirs(os.path.dirname(textfile))
    monkeypatch.setenv("INGESTION_METRICS_TEXTFILE", textfile)
    pipeline.env["INGESTION_METRICS_TEXTFILE"] = textfile
    tables = prepare_every_state(pipeline, monkeypatch)
    first, last = EVERY_STATE[0].isoformat(), EVERY_STATE[-1].isoformat()
    page = tmp_path / "grid.html"

    shown = python_m_workflows(pipeline, "status", "--grid", "--from", first, "--to", last, "--html", str(page))

    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert max(len(line) for line in lines) <= 100
    rows = {name: symbols for name, symbols in (line.split() for line in lines if re.fullmatch(r"\w+ +\S{5}", line))}
    assert rows == {"ethereum": "#!X?~", "bitcoin": "....."}
    for meaning in ("done", "partial", "failed", "gave_up", "unpublished", "nothing"):
        assert meaning in shown.stdout
    assert f"ethereum {EVERY_STATE[2]}: VerifyChecksums, attempt 1 of 1, gave up: raw_alerts.parquet: sha256" \
        in shown.stdout
    html = page.read_text()
    assert "http" not in html.replace("http-equiv", "") and "<script" not in html
    assert len(re.findall(r'class="cell ', html)) == 10
    assert re.search(rf'class="cell gave_up"[^>]*data-network="ethereum"[^>]*data-date="{EVERY_STATE[2]}"', html)
    assert f"raw_features: {tables['raw_features'].num_rows:,}" in html  # the done day's rows on hover

    samples = metrics_samples(textfile)
    ethereum = (("network", "ethereum"),)
    assert samples[("sot_ingestion_last_success_day_timestamp_seconds", ethereum)] == \
        dt.datetime.combine(EVERY_STATE[0], dt.time(), dt.timezone.utc).timestamp()
    for table in TABLES:
        assert samples[("sot_ingestion_rows_loaded", (("network", "ethereum"), ("table", table)))] == \
            tables[table].num_rows
    assert samples[("sot_ingestion_failures_total", (("network", "ethereum"), ("step", "checksums")))] == 2
    assert samples[("sot_ingestion_failures_total", (("network", "ethereum"), ("step", "download")))] == 1
    assert samples[("sot_ingestion_step_duration_seconds", (("network", "ethereum"), ("step", "download")))] > 0

    stale = python_m_workflows(pipeline, "check", "--max-age", "36")
    assert stale.returncode == 1
    age = (dt.datetime.now(dt.timezone.utc) - dt.datetime.combine(EVERY_STATE[0] + dt.timedelta(days=1), dt.time(),
                                                                   dt.timezone.utc)).total_seconds() / 3600
    ethereum_line, bitcoin_line = stale.stdout.splitlines()
    assert ethereum_line.startswith(f"ethereum: last complete day {EVERY_STATE[0]}, ")
    assert ethereum_line.endswith(" h old (limit 36 h)") and bitcoin_line == "bitcoin: no complete day"
    fresh = python_m_workflows(pipeline, "check", "--max-age", str(age + 24), INGESTION_NETWORKS="ethereum")
    assert fresh.returncode == 0, fresh.stdout
    assert fresh.stdout == f"fresh: ethereum {EVERY_STATE[0]}\n"


def test_a_good_day_for_three_networks_is_quiet_and_debug_brings_the_chatter_back(pipeline):
    networks = ("ethereum", "bitcoin", "torus")
    for network in networks:
        pipeline.publish(network)
    three = {"INGESTION_NETWORKS": ",".join(networks)}

    run = pipeline.run_cli("RunDaily", "--date", DATE.isoformat(), "--local-scheduler", **three)

    assert run.returncode == 0, run.stderr
    output = (run.stdout + run.stderr).splitlines()
    assert len(output) <= 45, "\n".join(output)
    assert not [line for line in output if line.startswith(("DEBUG", "INFO: Informed scheduler"))]
    assert "===== Luigi Execution Summary =====" in output
    for network in networks:  # our line per step, then our table
        assert f"{network} {DATE} LoadTable raw_features: 500 rows" in run.stderr
        assert re.search(rf"^{network} +{DATE} +\d+ +500 +\d+ +\d+ +done$", run.stderr, re.M)
    assert "UserWarning" not in run.stderr

    pipeline.run_cli("reset", "--date", DATE.isoformat(), "--network", "ethereum")  # not a luigi command: ignored
    chatty = pipeline.run_cli("RunDaily", "--date", DATE.isoformat(), "--local-scheduler", "--log-level", "DEBUG",
                              **three)
    assert chatty.returncode == 0
    assert "DEBUG: Checking if RunDaily" in chatty.stderr and "Informed scheduler" in chatty.stderr
    by_environment = pipeline.run_cli("RunDaily", "--date", DATE.isoformat(), "--local-scheduler",
                                      INGESTION_LOG_LEVEL="DEBUG", **three)
    assert "DEBUG: Checking if RunDaily" in by_environment.stderr


def test_a_failed_step_shows_its_reason_cut_short_and_no_full_bar(pipeline, luigid):
    pipeline.publish()
    pipeline.tamper("raw_alerts.parquet")

    assert pipeline.run_cli("RunDaily", "--date", DATE.isoformat(), "--networks", "ethereum").returncode == 30

    [task] = [t for t in {**luigid_tasks(luigid, "FAILED"), **luigid_tasks(luigid, "DISABLED")}.values()]
    assert task["name"] == "VerifyChecksums"
    assert task["status_message"].startswith("raw_alerts.parquet: sha256 checksum mismatch: META.json")
    assert len(task["status_message"]) == 64 and task["status_message"].endswith("…")  # the task says the day
    assert task["progress_percentage"] == 0


def test_a_backfill_over_disabled_days_says_so_in_one_line(pipeline, luigid):
    days = [DATE - dt.timedelta(days=1), DATE]
    for date in days:
        pipeline.publish(date=date)
        with open(pipeline.snapshot_file("raw_alerts.parquet", date=date), "ab") as stream:
            stream.write(b"tampered")
    backfill = ("RangeDaily", "--of", "RunDaily", "--start", days[0].isoformat(), "--stop",
                (DATE + dt.timedelta(days=1)).isoformat(), "--of-params", '{"networks": "ethereum"}')
    assert pipeline.run_cli(*backfill).returncode == 30  # each day's VerifyChecksums gave up: disabled

    again = pipeline.run_cli(*backfill)

    explained = [line for line in again.stderr.splitlines() if "disabled in luigid" in line]
    assert len(explained) == 1, again.stderr
    assert explained[0].startswith("2 tasks of 2 network-days are disabled in luigid"), explained
    assert "UserWarning" not in again.stderr
