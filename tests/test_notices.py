"""What luigid and the operators' channels get: progress and parameters in
the visualiser, metrics, and the notice of a task that failed for the last
time (log line, webhook, Luigi's e-mail)."""
import email
import json
import os
import socketserver
import subprocess
import sys
import threading
import urllib.parse
import urllib.request

import pytest

from workflows import scheduler
from workflows.alerts import Attempts
from workflows.pipeline.daily import day_tasks
from workflows.schema import TABLES
from workflows.slices import Slice

from common import DATE, REPO, RUN_DAILY, RUN_DAILY_LOCAL, WINDOW, luigid_tasks


@pytest.fixture
def smtp_sink():
    """A minimal SMTP server on loopback that keeps the messages it receives."""
    messages = []

    class Handler(socketserver.StreamRequestHandler):
        def handle(self):
            self.wfile.write(b"220 sink\r\n")
            while line := self.rfile.readline():
                verb = line[:4].upper()
                if verb == b"DATA":
                    self.wfile.write(b"354 go on\r\n")
                    data = b""
                    while not data.endswith(b"\r\n.\r\n"):
                        data += self.rfile.readline()
                    messages.append(data.decode(errors="replace"))
                    self.wfile.write(b"250 kept\r\n")
                elif verb == b"QUIT":
                    self.wfile.write(b"221 bye\r\n")
                    return
                else:
                    self.wfile.write(b"250 ok\r\n")

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1], messages
    server.shutdown()


def test_visualiser_shows_progress_and_no_secrets(pipeline, luigid):
    tables = pipeline.publish()

    result = pipeline.run_cli(*RUN_DAILY,
                              SOT_PASSWORD="s3cret-sot", CLICKHOUSE_PASSWORD="")

    assert result.returncode == 0, result.stderr[-2000:]
    done = luigid_tasks(luigid, "DONE")
    loads = {t["params"]["table"]: t for t in done.values() if t["name"] == "LoadTable"}
    for table in TABLES:
        rows = tables[table].num_rows
        assert loads[table]["status_message"] == f"{table}: {rows:,} rows loaded"
        assert loads[table]["progress_percentage"] == 100
    verify = next(t for t in done.values() if t["name"] == "VerifyChecksums")
    labels = tables["raw_address_labels"].num_rows  # the last file staged; the percentage is of all four
    assert (verify["status_message"], verify["progress_percentage"]) == \
        (f"raw_address_labels.parquet: {labels:,} / {labels:,} rows staged", 100)
    download = next(t for t in done.values() if t["name"] == "DownloadSOT")
    assert download["status_message"].startswith("raw_address_labels.parquet: ") and \
        download["status_message"].endswith(" MB") and download["progress_percentage"] == 100
    for task in done.values():
        assert set(task["params"]) <= {"network", "date", "window_days", "table", "networks"}
    assert "s3cret" not in json.dumps(done)


def test_the_visualiser_shows_a_failed_tasks_reason_not_its_last_progress(pipeline, luigid):
    pipeline.publish()
    pipeline.tamper("raw_features.parquet")

    result = pipeline.run_cli(*RUN_DAILY)

    assert result.returncode == 30, result.stderr[-2000:]
    [failed] = [t for status in ("FAILED", "DISABLED") for t in luigid_tasks(luigid, status).values()
                if t["name"] == "VerifyChecksums"]
    assert failed["status_message"].startswith("raw_features.parquet: sha256 checksum mismatch")  # the task has the day


def test_luigid_serves_prometheus_metrics(pipeline, luigid):
    pipeline.publish()
    assert pipeline.run_cli(*RUN_DAILY).returncode == 0

    with urllib.request.urlopen(f"{luigid}metrics") as response:
        metrics = response.read().decode()

    assert 'luigi_task_done_total{family="LoadTable"} 4.0' in metrics.splitlines()
    assert 'luigi_task_done_total{family="RunDaily"} 1.0' in metrics.splitlines()


def test_last_failure_gives_one_log_line_and_one_webhook_post(pipeline, webhook, caplog, monkeypatch):
    url, bodies = webhook
    monkeypatch.setenv("ALERT_WEBHOOK_URL", url)
    pipeline.publish()
    pipeline.tamper("raw_alerts.parquet")

    with caplog.at_level("ERROR", logger="workflows.alerts"):
        assert not pipeline.run()

    expected = {"event": "task_gave_up", "network": "ethereum", "date": DATE.isoformat(), "task": "VerifyChecksums",
                "table": None, "attempts": 1}
    assert len(bodies) == 1
    assert {k: bodies[0][k] for k in expected} == expected
    assert bodies[0]["reason"].startswith(f"ethereum {DATE} raw_alerts.parquet: sha256 checksum mismatch")
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "workflows.alerts"]
    assert lines == bodies


def tampered_day(pipeline):
    """A published day whose raw_alerts.parquet no longer matches its checksum: every attempt fails."""
    pipeline.publish()
    pipeline.tamper("raw_alerts.parquet")
    return RUN_DAILY


def test_no_notice_while_attempts_remain(pipeline, webhook, luigid):
    url, bodies = webhook

    result = pipeline.run_cli(*tampered_day(pipeline), INGESTION_RETRY_ATTEMPTS="2", ALERT_WEBHOOK_URL=url)

    assert result.returncode == 30
    assert result.stderr.count("bad input:") == 2
    assert [b["attempts"] for b in bodies] == [2]  # only the last of the two failures


def test_luigi_email_is_sent_when_configured(pipeline, smtp_sink):
    port, messages = smtp_sink
    pipeline.publish()
    pipeline.tamper("raw_alerts.parquet")

    result = pipeline.run_cli(*RUN_DAILY_LOCAL,
                              ALERT_EMAIL_TO="ops@example.com", SMTP_HOST="127.0.0.1", SMTP_PORT=str(port))

    assert result.returncode == 30
    mails = [email.message_from_string(m.removesuffix("\r\n.\r\n")) for m in messages]
    assert all(m["To"] == "ops@example.com" for m in mails) and mails
    failure = next(m for m in mails if "FAILED" in m["Subject"])  # luigid's "disabled" notice may follow it
    assert "VerifyChecksums" in failure["Subject"]
    body = "".join(part.get_payload(decode=True).decode() for part in failure.walk() if not part.is_multipart())
    assert f"ethereum {DATE} raw_alerts.parquet: sha256 checksum mismatch" in body


def attempts_said(output):
    """The 'attempt N of M' of each failure a run logged, in order."""
    return [line.split(": attempt ", 1)[1].split(";")[0] for line in output.splitlines()
            if " VerifyChecksums: attempt " in line]


def test_a_reset_starts_the_attempts_again_at_1(pipeline, luigid):
    day = tampered_day(pipeline)

    first = pipeline.run_cli(*day, INGESTION_RETRY_ATTEMPTS="2")
    assert "; disabled in luigid (reset re-enables)" in status_of_the_day(pipeline)  # as luigid has it
    cli_reset = subprocess.run([sys.executable, "-m", "workflows", "reset", "--date", DATE.isoformat(), "--network",
                                "ethereum"], cwd=REPO, env={**os.environ, **pipeline.env}, capture_output=True,
                               text=True)
    again = pipeline.run_cli(*day, INGESTION_RETRY_ATTEMPTS="2")

    assert first.returncode == again.returncode == 30 and cli_reset.returncode == 0, cli_reset.stderr
    assert attempts_said(first.stderr) == attempts_said(again.stderr) == ["1 of 2", "2 of 2"]
    assert "failed: VerifyChecksums, attempt 2 of 2, gave up: " in status_of_the_day(pipeline)  # the second round's
    scheduler.re_enable(day_tasks(Slice("ethereum", DATE, WINDOW)), luigid)  # as luigid does after disable_persist
    assert "disabled in luigid" not in status_of_the_day(pipeline)


def test_a_reset_between_two_attempts_starts_the_next_at_1(pipeline):
    """A round cut short after its first attempt (the run killed while it
    waits for the retry) goes on in the next run, unless a reset comes
    between them: then the next failure is attempt 1 again."""
    pipeline.publish()
    pipeline.tamper("raw_alerts.parquet")

    def first_attempt_then_killed():
        run = pipeline.start_cli(*RUN_DAILY_LOCAL, INGESTION_RETRY_ATTEMPTS="3", INGESTION_RETRY_DELAY="600")
        for line in run.stdout:
            if " VerifyChecksums: attempt " in line:
                run.kill()
                run.wait(timeout=30)
                return attempts_said(line)
        raise AssertionError(f"the run ended with {run.wait()} before its first attempt failed")

    said = first_attempt_then_killed() + first_attempt_then_killed()
    reset = subprocess.run([sys.executable, "-m", "workflows", "reset", "--date", DATE.isoformat(), "--network",
                            "ethereum"], cwd=REPO, env={**os.environ, **pipeline.env}, capture_output=True, text=True)
    assert reset.returncode == 0, reset.stderr
    said += first_attempt_then_killed()
    assert said == ["1 of 3", "2 of 3", "1 of 3"]


def test_a_reset_on_one_host_starts_the_round_again_on_every_host(pipeline, tmp_path):
    """Each host keeps its own count beside Redis's (for when Redis is
    emptied); the round id in Redis keeps the other host's file from
    counting the failures of the round before the reset."""
    key = "ingestion:test:failures:VerifyChecksums_x"
    host_a = Attempts(pipeline.redis, key, str(tmp_path / "a" / "VerifyChecksums_x"))
    host_b = Attempts(pipeline.redis, key, str(tmp_path / "b" / "VerifyChecksums_x"))
    assert [host_b.add(), host_b.add()] == [1, 2]
    host_a.clear()  # `reset` on host A
    assert [host_b.add(), host_a.add(), host_b.add()] == [1, 2, 3]
    pipeline.redis.flushdb()  # emptied: this host's file still knows the round's failures
    assert host_b.add() == 3  # b's own two of this round, and this one


def status_of_the_day(pipeline):
    return subprocess.run([sys.executable, "-m", "workflows", "status", "--date", DATE.isoformat(), "--network",
                           "ethereum"], cwd=REPO, env={**os.environ, **pipeline.env}, capture_output=True,
                          text=True, check=True).stdout


def test_one_give_up_notice_when_redis_was_emptied_between_attempts(pipeline, luigid, webhook):
    url, bodies = webhook

    run = pipeline.start_cli(*tampered_day(pipeline), INGESTION_RETRY_ATTEMPTS="3", ALERT_WEBHOOK_URL=url)
    output = []
    for line in run.stdout:
        output.append(line)
        if " VerifyChecksums: attempt 1 of 3" in line:
            pipeline.redis.flushdb()  # an operator's FLUSHDB, or a Redis restarted without persistence
    run.wait(timeout=120)

    assert run.returncode == 30, "".join(output)[-3000:]
    assert attempts_said("".join(output)) == ["1 of 3", "2 of 3", "3 of 3"]
    assert [(b["event"], b["task"], b["attempts"]) for b in bodies] == [("task_gave_up", "VerifyChecksums", 3)]
    [disabled] = luigid_tasks(luigid, "DISABLED").values()  # and luigid gave up on it
    assert disabled["name"] == "VerifyChecksums"
