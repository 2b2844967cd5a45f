"""SOT_URL=s3://…: the pipeline against a real S3 HTTP server on loopback
(moto's server mode), with keys and with unsigned requests to a public
bucket; a snapshot that is late, incomplete, tampered with or hostile; and
the server killed in the middle of a large download."""
import hashlib
import json
import os
import re

import pytest

from devkit.local_servers import free_port
from workflows.meta import META_FILENAME
from workflows.schema import TABLES

from common import DATE, RUN_DAILY_LOCAL, WINDOW, luigid_tasks, poll
from s3store import BUCKET, PREFIX, S3Store


def published(pipeline, s3, **options):
    """A snapshot published to the bucket; returns its tables."""
    tables = pipeline.publish(**options)
    s3.mirror(pipeline.snapshot_dir())
    return tables


def test_keyed_access_loads_exactly_the_published_rows_and_no_key_is_shown(pipeline, s3):
    tables = published(pipeline, s3)
    key_id, secret = s3.reader_keys()

    refused = pipeline.run_cli(*RUN_DAILY_LOCAL, AWS_ACCESS_KEY_ID=key_id, AWS_SECRET_ACCESS_KEY=secret + "x")
    assert refused.returncode == 30, refused.stderr[-3000:]
    [line] = [line for line in refused.stderr.splitlines() if " failed    DownloadSOT(" in line]
    assert "ethereum 2024-10-30 download: " in line and "ACCESS_DENIED" in line, line
    assert pipeline.counts() == {t: 0 for t in TABLES}

    loaded = pipeline.run_cli(*RUN_DAILY_LOCAL, AWS_ACCESS_KEY_ID=key_id, AWS_SECRET_ACCESS_KEY=secret)
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    assert pipeline.counts() == {t: tables[t].num_rows for t in TABLES}
    for output in (refused, loaded):
        assert secret not in output.stdout + output.stderr


def test_anonymous_access_to_a_public_bucket_sends_only_unsigned_requests(pipeline, s3):
    tables = published(pipeline, s3)
    s3.record()

    # keys in the environment that must not be used: the requests are unsigned
    result = pipeline.run_cli(*RUN_DAILY_LOCAL, SOT_S3_ANONYMOUS="1", AWS_ACCESS_KEY_ID="decoy",
                              AWS_SECRET_ACCESS_KEY="decoy-secret")

    assert result.returncode == 0, result.stderr[-3000:]
    assert pipeline.counts() == {t: tables[t].num_rows for t in TABLES}
    requests = [r for r in s3.recorded() if f"/{BUCKET}/" in r["url"]]
    assert {r["method"] for r in requests} >= {"GET"}
    assert [r for r in requests if "Authorization" in r["headers"] or "X-Amz-Credential" in r["url"]] == []
    # only META.json and the four files it lists were asked for
    assert {r["url"].split("?")[0].rsplit("/", 1)[1] for r in requests} == \
        {META_FILENAME, *(f"{t}.parquet" for t in TABLES)}


@pytest.mark.parametrize("late", [META_FILENAME, "raw_clusters.parquet"])
def test_a_snapshot_whose_last_object_appears_before_the_retry_loads(pipeline, s3, late):
    """The SOT is still exporting: META.json not there yet, or (the producer
    uploads in no particular order) a file it lists."""
    tables = pipeline.publish()
    s3.mirror(pipeline.snapshot_dir(), skip={late})
    pipeline.env["INGESTION_RETRY_ATTEMPTS"] = "3"
    run = pipeline.start_cli(*RUN_DAILY_LOCAL)
    output = []
    for line in run.stdout:
        output.append(line)
        if " failed    DownloadSOT(" in line:
            s3.put(s3.key(late), open(pipeline.snapshot_file(late), "rb").read())
    run.wait(timeout=120)

    assert run.returncode == 0, "".join(output)[-3000:]
    [failed] = [line for line in output if " failed    DownloadSOT(" in line]
    where = f"s3://{BUCKET}/{PREFIX}/ethereum/2024-10-30/{WINDOW}"
    assert failed.rstrip().endswith(f"ethereum 2024-10-30: not published yet: no META.json at {where}"
                                    if late == META_FILENAME else
                                    f"ethereum 2024-10-30: not published yet: {late}, listed in META.json, is not"
                                    f" at {where}/{late} yet"), failed
    assert any("DownloadSOT: attempt 1 of 3; next in 1 s" in line for line in output)
    assert pipeline.counts() == {t: tables[t].num_rows for t in TABLES}


def bad_snapshot(case, pipeline, s3):
    pipeline.publish()
    folder = pipeline.snapshot_dir()
    if case == "tampered_object":
        s3.mirror(folder)
        s3.put(s3.key("raw_alerts.parquet"), open(os.path.join(folder, "raw_alerts.parquet"), "rb").read() + b"x")
        return "raw_alerts.parquet", "sha256 checksum mismatch"
    meta = json.load(open(os.path.join(folder, META_FILENAME)))
    meta["files"][0]["filename"] = "../../../escaped.parquet"
    s3.put(f"{PREFIX}/ethereum/escaped.parquet", b"PAR1 outside the snapshot")
    s3.mirror(folder, skip={META_FILENAME})
    s3.put(s3.key(META_FILENAME), json.dumps(meta).encode())
    return META_FILENAME, "is not a plain file name"


@pytest.mark.parametrize("case", ["tampered_object", "key_climbing_out_of_the_prefix"])
def test_bad_snapshots_in_the_bucket_are_bad_input(pipeline, s3, case):
    filename, reason = bad_snapshot(case, pipeline, s3)
    s3.record()

    assert not pipeline.run()

    [(task, message)] = pipeline.failures
    assert message.startswith(f"ethereum 2024-10-30 {filename}: ") and reason in message, message
    assert pipeline.counts() == {t: 0 for t in TABLES}
    assert not os.path.exists(pipeline.download_dir())
    assert [r["url"] for r in s3.recorded() if "escaped" in r["url"]] == []  # never asked for


def sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def test_the_server_killed_in_a_large_download_and_restarted_the_download_resumes(pipeline, s3, tmp_path, luigid):
    """A 200 MB object; the store dies at about 40 MB and comes back empty,
    as a restarted moto does, until the SOT has put the objects back. The
    visualiser shows the download's progress meanwhile."""
    store = S3Store(str(tmp_path / "store"), free_port())
    os.makedirs(store.root)
    store.server.start()
    try:
        pipeline.env["SOT_S3_ENDPOINT"] = store.endpoint
        pipeline.env["SOT_RETRY_DELAY"] = "0.25"  # retries every 0.25, 0.5, 1, ... s, not the default 1, 2, 4, ...
        store.reset()
        big = os.urandom(200 << 20)
        folder = pipeline.snapshot_dir()
        pipeline.publish()
        with open(os.path.join(folder, "raw_features.parquet"), "wb") as stream:
            stream.write(big)  # the download does not look inside
        meta = {"files": [{"filename": f"{t}.parquet",
                           "checksum": "sha256:" + sha256(os.path.join(folder, f"{t}.parquet"))}
                          for t in TABLES]}
        with open(os.path.join(folder, META_FILENAME), "w") as stream:
            json.dump(meta, stream)
        store.mirror(folder)

        run = pipeline.start_cli("DownloadSOT", "--network", "ethereum", "--date", DATE.isoformat(),
                                 "--window-days", str(WINDOW))
        parent = os.path.dirname(pipeline.download_dir())
        shown = set()

        def past_40_mb():
            if any(os.path.getsize(os.path.join(root, "raw_features.parquet")) > 40 << 20
                   for root, _, files in os.walk(parent) if "raw_features.parquet" in files):
                return True
            assert run.poll() is None, "no download under way: the run ended"
            shown.update(task.get("status_message") for task in luigid_tasks(luigid, "RUNNING").values())
            return False
        poll(past_40_mb, 120, "a download past 40 MB", interval=0.01)
        store.server.process.kill()
        store.server.process.wait()
        store.server.start()  # the same port, no data
        store.reset()
        store.mirror(folder)
        output = run.communicate(timeout=300)[0]
    finally:
        store.server.stop()

    assert run.returncode == 0, output[-3000:]
    assert any(re.fullmatch(r"raw_features\.parquet: \d+ / 210 MB", message or "") for message in shown), shown
    retries = [line for line in output.splitlines() if "raw_features.parquet at" in line and "; retry " in line]
    assert retries and "; retry 1 of 6 in 0.25 s" in retries[0], output[-3000:]
    downloaded = os.path.join(pipeline.download_dir(), "raw_features.parquet")
    assert sha256(downloaded) == hashlib.sha256(big).hexdigest()
    arrived = json.load(open(os.path.join(pipeline.download_dir(), ".arrived.json")))
    assert arrived["raw_features.parquet"] == "sha256:" + hashlib.sha256(big).hexdigest()
