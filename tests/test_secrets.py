"""No password, secret token or credentialed URL in anything the pipeline
lets out: the output of succeeding and failing runs and of the CLI, the
notices it posts, and luigid's task list and log."""
import glob
import json
import os
import re
import subprocess
import sys

import pytest
from clickhouse_driver import Client

from devkit.local_servers import clickhouse_server, free_port, redis_server
from workflows import scheduler
from workflows.schema import TABLES

from common import DATE, REPO, RUN_DAILY, WEBHOOK_TOKEN, close_clickhouse_connections, luigid_tasks

REDIS_PASSWORD, CLICKHOUSE_PASSWORD = "redis-secret-pw", "clickhouse-secret-pw"
WRONG_PASSWORD = "wrong-secret-pw"
SCHEDULER_PASSWORD, PUSHGATEWAY_PASSWORD = "luigid-secret-pw", "pushgateway-secret-pw"
SECRETS = (REDIS_PASSWORD, CLICKHOUSE_PASSWORD, WEBHOOK_TOKEN, WRONG_PASSWORD, SCHEDULER_PASSWORD, PUSHGATEWAY_PASSWORD)
CREDENTIALED_URL = re.compile(r"[a-z][a-z0-9+.-]*://[^\s/@'\"]*:[^\s/@'\"]*@", re.IGNORECASE)
LUIGID_STATUSES = ("PENDING", "RUNNING", "DONE", "FAILED", "DISABLED")


def with_password(url, user, password):
    """`url` (http://host:port/...) with user:password@ before its host."""
    return url.replace("://", f"://{user}:{password}@", 1)


def nothing_listens(user, password):
    """A credentialed URL of a loopback port nothing listens on."""
    return with_password(f"http://127.0.0.1:{free_port()}/", user, password)


@pytest.fixture
def guarded_servers(tmp_path, pipeline, monkeypatch):
    """A Redis and a ClickHouse of this test's own that want passwords."""
    redis_port, clickhouse_port = free_port(), free_port()
    servers = [redis_server(str(tmp_path), redis_port, password=REDIS_PASSWORD),
               clickhouse_server(str(tmp_path), clickhouse_port, free_port(), password=CLICKHOUSE_PASSWORD)]
    for server in servers:
        server.start()
    env = {"REDIS_URL": f"redis://:{REDIS_PASSWORD}@127.0.0.1:{redis_port}/0",
           "CLICKHOUSE_PORT": str(clickhouse_port), "CLICKHOUSE_PASSWORD": CLICKHOUSE_PASSWORD}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    pipeline.env.update(env)
    pipeline.ch = Client("127.0.0.1", port=clickhouse_port, password=CLICKHOUSE_PASSWORD)
    yield
    close_clickhouse_connections(pipeline.ch)
    for server in reversed(servers):
        server.stop()


def test_no_output_of_any_run_holds_a_secret(pipeline, guarded_servers, start_luigid, webhook, tmp_path):
    webhook_url, notices = webhook
    pipeline.env["ALERT_WEBHOOK_URL"] = webhook_url
    luigid = start_luigid()
    bad_day = DATE.replace(day=29)
    tables = pipeline.publish()
    pipeline.publish(date=bad_day)
    with open(pipeline.snapshot_file("raw_alerts.parquet", date=bad_day), "ab") as stream:
        stream.write(b"tampered")
    said = []

    def run(*args, **env):
        result = pipeline.run_cli(*args, **env)
        said.append(result.stdout + result.stderr)
        return result.returncode

    def day(date):
        return "RunDaily", "--date", date.isoformat(), "--networks", "ethereum"

    # luigid's URL with a password (luigi sends it as basic auth, and so must the reachability check), and a
    # Pushgateway with a password that does not answer: its warning names it without the password
    assert run(*day(DATE), LUIGI_SCHEDULER_URL=with_password(luigid, "admin", SCHEDULER_PASSWORD),
               PROMETHEUS_PUSHGATEWAY_URL=nothing_listens("pusher", PUSHGATEWAY_PASSWORD)) == 0, said[-1][-2000:]
    assert "metrics: Pushgateway http://pusher@127.0.0.1:" in said[-1]
    assert pipeline.counts() == {t: tables[t].num_rows for t in TABLES}
    assert run(*day(DATE), LUIGI_SCHEDULER_URL=nothing_listens("admin", SCHEDULER_PASSWORD)) == 35
    assert "luigid at http://admin@127.0.0.1:" in said[-1] and "does not answer" in said[-1]
    assert run(*day(bad_day)) == 30  # bad input, given up on: a notice
    assert run(*day(bad_day), "--local-scheduler", CLICKHOUSE_PASSWORD=WRONG_PASSWORD) == 35
    assert run(*day(bad_day), "--local-scheduler", REDIS_URL=pipeline.env["REDIS_URL"].replace(
        REDIS_PASSWORD, WRONG_PASSWORD)) == 35
    status = subprocess.run([sys.executable, "-m", "workflows", "status", "--date", DATE.isoformat(),
                             "--date", bad_day.isoformat(), "--network", "ethereum"],
                            cwd=REPO, env={**os.environ, **pipeline.env}, capture_output=True, text=True)
    assert status.returncode == 0 and f"{tables['raw_features'].num_rows:,}" in status.stdout, status.stderr
    said.append(status.stdout + status.stderr)

    # the notices were posted: the bad day's, and one per wrong password
    assert [body["event"] for body in notices] == ["task_gave_up", "cannot_check", "cannot_check"]
    listed = {status: luigid_tasks(luigid, status) for status in LUIGID_STATUSES}
    errors = [scheduler.call("fetch_error", luigid, task_id=task_id)
              for status in ("FAILED", "DISABLED") for task_id in listed[status]]
    luigid_view = [json.dumps(listed), json.dumps(errors)]
    assert "checksum mismatch" in "".join(luigid_view)  # the failure's reason did reach luigid
    logs = [open(path, errors="replace").read() for path in glob.glob(os.path.join(tmp_path, "luigi*"))]
    everything = "\n".join(said + [json.dumps(body) for body in notices] + luigid_view + logs)
    for secret in SECRETS:
        assert secret not in everything
    assert CREDENTIALED_URL.findall(everything) == []


SECRET = "s3cr3t-in-a-setting"
MALFORMED = [  # (variable, value, what the one line says)
    ("REDIS_URL", f"redis://:pa/{SECRET}@127.0.0.1:6379/0", "does not parse"),  # an unencoded '/'
    ("REDIS_URL", f"redis://:{SECRET}@127.0.0.1:port/0", "does not parse"),
    ("REDIS_URL", f"rediz://:{SECRET}@127.0.0.1:6379/0", "not a redis://"),
    ("ALERT_WEBHOOK_URL", f"hooks.example.com/services/T0?token={SECRET}", "not an http:// or https:// URL"),
    ("ALERT_WEBHOOK_URL", f"ftp://hooks.example.com/{SECRET}", "not an http:// or https:// URL"),
    ("SOT_S3_ENDPOINT", f"{SECRET}.s3.example.com", "not an http:// or https:// URL"),
    ("SOT_URL", f"ftp://reader:{SECRET}@host/snapshots", "ftp:// is not a snapshot store"),
    ("SOT_URL", f"s3://AKIA:{SECRET}@bucket/snapshots", "credentials go in AWS_ACCESS_KEY_ID"),
    ("CLICKHOUSE_HOST", f"default:{SECRET}@clickhouse", "an entry is not host or host:port"),
    ("LUIGI_SCHEDULER_URL", f"admin:{SECRET}@luigid:8082", "not an http:// or https:// URL"),  # no scheme
    ("LUIGI_SCHEDULER_URL", f"ftp://admin:{SECRET}@luigid/", "not an http:// or https:// URL"),
    ("LUIGI_SCHEDULER_URL", f"http://admin:{SECRET}@luigid:port/", "not an http:// or https:// URL"),
    ("LUIGI_SCHEDULER_URL", f"http://admin:12/{SECRET}@luigid:8082/", "does not parse"),  # an unencoded '/'
    ("PROMETHEUS_PUSHGATEWAY_URL", f"pusher:{SECRET}@pushgateway:9091", "not an http:// or https:// URL"),
    ("PROMETHEUS_PUSHGATEWAY_URL", f"http://pusher:p@{SECRET}@pushgateway:9091", "does not parse"),  # an '@'
]


@pytest.mark.parametrize("variable,value,says", MALFORMED, ids=[f"{v}-{i}" for i, (v, _, _) in enumerate(MALFORMED)])
def test_a_malformed_setting_gets_one_line_naming_it_and_no_part_of_its_secret(pipeline, luigid, variable, value,
                                                                               says):
    pipeline.publish()
    outputs = []
    for command in (["luigi", "--module", "workflows", *RUN_DAILY],
                    [sys.executable, "-m", "workflows", "status", "--date", DATE.isoformat()]):
        if command[0] == "luigi":
            command[0] = os.path.join(os.path.dirname(sys.executable), "luigi")
        result = subprocess.run(command, cwd=REPO, env={**os.environ, **pipeline.env, variable: value},
                                capture_output=True, text=True, timeout=120)
        assert result.returncode != 0
        last = result.stderr.strip().splitlines()[-1]
        assert last.startswith(f"configuration error: {variable}: ") and says in last, result.stderr[-2000:]
        outputs.append(result.stdout + result.stderr)
    assert SECRET not in "".join(outputs)
    assert luigid_tasks(luigid, "RUNNING") == {}  # the run stopped before it told luigid of any task
    assert not os.path.exists(pipeline.downloads)


def test_reset_with_luigid_not_answering_names_it_without_its_password(pipeline):
    result = subprocess.run([sys.executable, "-m", "workflows", "reset", "--date", DATE.isoformat(),
                             "--network", "ethereum"], cwd=REPO, capture_output=True, text=True, timeout=120,
                            env={**os.environ, **pipeline.env,
                                 "LUIGI_SCHEDULER_URL": nothing_listens("admin", SCHEDULER_PASSWORD)})
    assert "luigid at http://admin@127.0.0.1:" in result.stderr and "did not answer" in result.stderr, result.stderr
    assert SCHEDULER_PASSWORD not in result.stdout + result.stderr
