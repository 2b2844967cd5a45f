"""workflows.metrics: the textfile as the node exporter reads it (all networks,
read back across processes, replaced atomically, no update lost between
concurrent writers), a real Pushgateway, and the freshness check's lines."""
import base64
import datetime as dt
import logging
import multiprocessing
import os
import shutil
import subprocess
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from prometheus_client.parser import text_string_to_metric_families

from devkit.local_servers import free_port
from workflows import metrics
from workflows.metrics import DayResult, record, stale_networks

DAY = dt.date(2024, 10, 30)
DAY_TS = 1730246400.0  # 2024-10-30 00:00 UTC
PUSHGATEWAY = "prometheus-pushgateway"  # Debian package prometheus-pushgateway: /usr/bin/prometheus-pushgateway
ZERO_FAILURES = {step: 0.0 for step in metrics.STEPS}


@pytest.fixture(autouse=True)
def fresh_process():
    """Each test starts as a new process would: nothing recorded yet."""
    saved = metrics._process.series
    metrics._process.series = metrics._State().series
    yield
    metrics._process.series = saved


def success(network, date=DAY, finished_at=1730340000.5, rows=None, steps=None):
    return DayResult(network, date, True, finished_at,
                     {"raw_alerts": 10, "raw_features": 500} if rows is None else rows,
                     {"download": 1.5, "validate": 0.25, "load": 3.0} if steps is None else steps)


def failure(network, step="load", finished_at=1730430000.0, steps=None):
    return DayResult(network, DAY + dt.timedelta(days=1), False, finished_at, {"raw_alerts": 3},
                     {"download": 2.0, "load": 0.75} if steps is None else steps, step)


def parse(text, prefix="sot_ingestion_"):
    """{metric name: {frozenset of labels: value}} of our samples."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.startswith(prefix):
                found.setdefault(sample.name, {})[frozenset(sample.labels.items())] = sample.value
    return found


def read(path):
    with open(path) as stream:
        return parse(stream.read())


def by(label, values, **fixed):
    """{frozenset(labels): value} of samples that differ in `label` alone."""
    return {frozenset({**fixed, label: key}.items()): value for key, value in values.items()}


def one(value, **labels):
    return {frozenset(labels.items()): value}


# ---------------------------------------------------------------- textfile


def test_textfile_keeps_every_network_and_the_last_success_through_failures(tmp_path):
    path = str(tmp_path / "sot_ingestion.prom")
    record(success("ethereum"), path, None)
    record(success("bitcoin", finished_at=1730341000.0, rows={"raw_alerts": 7, "raw_clusters": 2},
                   steps={"download": 4.0}), path, None)
    record(failure("ethereum", "validate", steps={"download": 2.0, "validate": 0.5}), path, None)

    assert read(path) == {
        "sot_ingestion_last_success_timestamp_seconds": {
            **one(1730340000.5, network="ethereum"), **one(1730341000.0, network="bitcoin")},
        "sot_ingestion_last_success_day_timestamp_seconds": {
            **one(DAY_TS, network="ethereum"), **one(DAY_TS, network="bitcoin")},
        "sot_ingestion_rows_loaded": {
            **by("table", {"raw_alerts": 10.0, "raw_features": 500.0}, network="ethereum"),
            **by("table", {"raw_alerts": 7.0, "raw_clusters": 2.0}, network="bitcoin")},
        # the last run's steps: ethereum's failed run replaced its successful one's
        "sot_ingestion_step_duration_seconds": {
            **by("step", {"download": 2.0, "validate": 0.5}, network="ethereum"),
            **by("step", {"download": 4.0}, network="bitcoin")},
        "sot_ingestion_failures_total": {
            **by("step", {**ZERO_FAILURES, "validate": 1.0}, network="ethereum"),
            **by("step", ZERO_FAILURES, network="bitcoin")},
        "sot_ingestion_last_failure_timestamp_seconds": one(1730430000.0, network="ethereum"),
    }

    # another failure, as a new process would record it: the count is read back from the file
    metrics._process.series = metrics._State().series
    record(failure("ethereum", "validate", finished_at=1730430100.0, steps={"download": 1.0}), path, None)
    after = read(path)
    assert after["sot_ingestion_failures_total"] == {
        **by("step", {**ZERO_FAILURES, "validate": 2.0}, network="ethereum"),
        **by("step", ZERO_FAILURES, network="bitcoin")}
    assert after["sot_ingestion_last_failure_timestamp_seconds"] == one(1730430100.0, network="ethereum")
    assert after["sot_ingestion_last_success_timestamp_seconds"] == {
        **one(1730340000.5, network="ethereum"), **one(1730341000.0, network="bitcoin")}
    assert after["sot_ingestion_step_duration_seconds"] == {
        **by("step", {"download": 1.0}, network="ethereum"), **by("step", {"download": 4.0}, network="bitcoin")}
    assert sorted(os.listdir(tmp_path)) == ["sot_ingestion.prom", "sot_ingestion.prom.lock"]


def test_rows_of_an_older_day_go_and_a_rerun_of_the_same_day_keeps_its_other_tables(tmp_path):
    path = str(tmp_path / "m.prom")
    record(success("torus", rows={"raw_alerts": 1, "raw_features": 2, "raw_clusters": 3}), path, None)
    record(success("torus", rows={"raw_features": 20}), path, None)  # same day, one table reloaded
    assert read(path)["sot_ingestion_rows_loaded"] == by(
        "table", {"raw_alerts": 1.0, "raw_features": 20.0, "raw_clusters": 3.0}, network="torus")
    record(success("torus", date=DAY + dt.timedelta(days=1), rows={"raw_alerts": 5}), path, None)
    assert read(path)["sot_ingestion_rows_loaded"] == one(5.0, network="torus", table="raw_alerts")
    assert read(path)["sot_ingestion_last_success_day_timestamp_seconds"] == one(DAY_TS + 86400, network="torus")


def test_the_file_is_replaced_atomically(tmp_path):
    """Each record renames a new file over the old one (a new inode), leaves no
    temporary file, and a reader meanwhile always sees a whole file."""
    path = str(tmp_path / "sot_ingestion.prom")
    record(success("bitcoin"), path, None)
    stop = threading.Event()
    seen = []
    problems = []

    def reader():
        while not stop.is_set() and len(seen) < 100_000:
            try:
                found = read(path)
                seen.append(found)
                if one(1730340000.5, network="bitcoin").items() - found[
                        "sot_ingestion_last_success_timestamp_seconds"].items():
                    problems.append(found)
            except Exception as exc:  # any failure to read a whole file is the finding
                problems.append(repr(exc))

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for i in range(60):
            with open(path) as held:  # a reader that opened the file before this record
                before = held.read()
                record(success("ethereum", finished_at=1730340000.0 + i,
                               steps={"download": float(i), "load": 1.0}), path, None)
                # renamed over, never rewritten in place: the held file is another, untouched
                assert os.fstat(held.fileno()).st_ino != os.stat(path).st_ino
                held.seek(0)
                assert held.read() == before
    finally:
        stop.set()
        thread.join(30)
    assert not problems
    assert len(seen) > 10
    assert sorted(os.listdir(tmp_path)) == ["sot_ingestion.prom", "sot_ingestion.prom.lock"]
    assert read(path)["sot_ingestion_step_duration_seconds"] == {
        **by("step", {"download": 59.0, "load": 1.0}, network="ethereum"),
        **by("step", {"download": 1.5, "validate": 0.25, "load": 3.0}, network="bitcoin")}


def _record_at_once(path, network, barrier):
    barrier.wait(30)
    record(success(network, steps={"load": 1.0}), path, None)
    record(failure("shared", "download"), path, None)


def test_concurrent_writers_lose_no_update(tmp_path):
    """8 processes record at once: every network and every failure is in the file."""
    path = str(tmp_path / "sot_ingestion.prom")
    networks = [f"net{i}" for i in range(8)]
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(len(networks))
    processes = [context.Process(target=_record_at_once, args=(path, network, barrier)) for network in networks]
    for process in processes:
        process.start()
    for process in processes:
        process.join(60)
    assert [process.exitcode for process in processes] == [0] * len(networks)
    found = read(path)
    assert found["sot_ingestion_last_success_timestamp_seconds"] == {
        frozenset({"network": network}.items()): 1730340000.5 for network in networks}
    assert found["sot_ingestion_failures_total"][frozenset({"network": "shared", "step": "download"}.items())] == 8.0
    assert sorted(os.listdir(tmp_path)) == ["sot_ingestion.prom", "sot_ingestion.prom.lock"]


def test_an_unwritable_textfile_is_one_warning(tmp_path, caplog):
    path = str(tmp_path / "missing-dir" / "sot_ingestion.prom")
    with caplog.at_level(logging.WARNING, logger="workflows"):
        assert record(success("ethereum"), path, None) is None
    assert [(r.name, r.levelno) for r in caplog.records] == [("workflows", logging.WARNING)]
    message = caplog.records[0].getMessage()
    assert path in message and "No such file or directory" in message and "\n" not in message
    assert caplog.records[0].exc_info is None


def test_a_file_that_is_not_metrics_raises(tmp_path):
    path = tmp_path / "sot_ingestion.prom"
    path.write_text("this is { not the text format\n")
    with pytest.raises(ValueError, match="not a metrics file of ours"):
        record(success("ethereum"), str(path), None)


def test_a_success_names_no_failed_step():
    with pytest.raises(ValueError):
        DayResult("ethereum", DAY, True, 1.0, {}, {}, "load")


# ---------------------------------------------------------------- Pushgateway


@pytest.fixture
def pushgateway(tmp_path):
    """A real Pushgateway on a free loopback port, in a temporary directory."""
    binary = shutil.which(PUSHGATEWAY) or (f"/usr/bin/{PUSHGATEWAY}" if os.path.exists(f"/usr/bin/{PUSHGATEWAY}")
                                          else None)
    if binary is None:
        pytest.skip(f"{PUSHGATEWAY} not installed (Debian package prometheus-pushgateway)")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = open(tmp_path / "pushgateway.log", "wb")
    process = subprocess.Popen(
        [binary, f"--web.listen-address=127.0.0.1:{port}", f"--persistence.file={tmp_path / 'pushgateway.data'}"],
        cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(url + "/-/ready", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{binary} did not start: {(tmp_path / 'pushgateway.log').read_text()}")
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def gateway_samples(url):
    with urllib.request.urlopen(url + "/metrics", timeout=10) as response:
        return parse(response.read().decode())


def at(network, job="sot_ingestion", **labels):
    """The labels the gateway shows on a pushed sample."""
    return frozenset({"job": job, "instance": "", "network": network, **labels}.items())


@pytest.mark.servers
def test_pushgateway_holds_each_network_in_its_own_group(pushgateway):
    record(success("ethereum"), None, pushgateway)
    record(success("bitcoin", finished_at=1730341000.0, rows={"raw_alerts": 7}, steps={"download": 4.0}),
           None, pushgateway)
    record(failure("bitcoin", "checksums", steps={"download": 2.0, "checksums": 0.5}), None, pushgateway)

    assert gateway_samples(pushgateway) == {
        "sot_ingestion_last_success_timestamp_seconds": {
            at("ethereum"): 1730340000.5, at("bitcoin"): 1730341000.0},
        "sot_ingestion_last_success_day_timestamp_seconds": {at("ethereum"): DAY_TS, at("bitcoin"): DAY_TS},
        "sot_ingestion_rows_loaded": {
            at("ethereum", table="raw_alerts"): 10.0, at("ethereum", table="raw_features"): 500.0,
            at("bitcoin", table="raw_alerts"): 7.0},
        "sot_ingestion_step_duration_seconds": {
            at("ethereum", step="download"): 1.5, at("ethereum", step="validate"): 0.25,
            at("ethereum", step="load"): 3.0,
            at("bitcoin", step="download"): 2.0, at("bitcoin", step="checksums"): 0.5},
        "sot_ingestion_failures_total": {
            **{at("ethereum", step=step): 0.0 for step in metrics.STEPS},
            **{at("bitcoin", step=step): 1.0 if step == "checksums" else 0.0 for step in metrics.STEPS}},
        "sot_ingestion_last_failure_timestamp_seconds": {at("bitcoin"): 1730430000.0},
    }


@pytest.mark.servers
def test_pushgateway_counts_failures_across_processes_through_the_textfile(pushgateway, tmp_path):
    path = str(tmp_path / "sot_ingestion.prom")
    record(success("torus"), path, pushgateway, job="sot_test")
    for n in range(3):
        metrics._process.series = metrics._State().series  # each run is a new process
        record(failure("torus", "download", finished_at=1730430000.0 + n, steps={"download": 9.0}),
               path, pushgateway, job="sot_test")
    found = gateway_samples(pushgateway)
    assert found["sot_ingestion_failures_total"][at("torus", job="sot_test", step="download")] == 3.0
    assert found["sot_ingestion_last_success_timestamp_seconds"] == {at("torus", job="sot_test"): 1730340000.5}
    assert found["sot_ingestion_step_duration_seconds"] == {at("torus", job="sot_test", step="download"): 9.0}
    assert found["sot_ingestion_last_failure_timestamp_seconds"] == {at("torus", job="sot_test"): 1730430002.0}
    # the file and the gateway hold the same series
    assert {name: {frozenset(dict(labels, job="sot_test", instance="").items()): value
                   for labels, value in samples.items()}
            for name, samples in read(path).items()} == found


@pytest.mark.servers
def test_pushgateway_without_textfile_keeps_what_a_new_process_does_not_know(pushgateway):
    """Without a textfile, a new process's failure is added to the group: the
    last success an earlier process pushed stays; the count is this process's."""
    record(success("ethereum"), None, pushgateway)
    record(failure("ethereum", "load"), None, pushgateway)
    metrics._process.series = metrics._State().series
    record(failure("ethereum", "load", finished_at=1730430500.0), None, pushgateway)
    found = gateway_samples(pushgateway)
    assert found["sot_ingestion_last_success_timestamp_seconds"] == {at("ethereum"): 1730340000.5}
    assert found["sot_ingestion_rows_loaded"] == {
        at("ethereum", table="raw_alerts"): 10.0, at("ethereum", table="raw_features"): 500.0}
    assert found["sot_ingestion_failures_total"][at("ethereum", step="load")] == 1.0  # documented: a reset
    assert found["sot_ingestion_last_failure_timestamp_seconds"] == {at("ethereum"): 1730430500.0}


def test_a_pushgateway_that_does_not_answer_is_one_warning(tmp_path, caplog):
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    path = str(tmp_path / "sot_ingestion.prom")
    with caplog.at_level(logging.WARNING, logger="workflows"):
        assert record(success("ethereum"), path, url) is None
    assert [(r.name, r.levelno) for r in caplog.records] == [("workflows", logging.WARNING)]
    message = caplog.records[0].getMessage()
    assert url in message and "\n" not in message
    assert caplog.records[0].exc_info is None
    assert read(path)["sot_ingestion_last_success_timestamp_seconds"] == one(1730340000.5, network="ethereum")


def test_a_pushgateway_with_a_password_that_does_not_answer_is_named_without_it(caplog):
    port = free_port()  # nothing listens there
    with caplog.at_level(logging.WARNING, logger="workflows"):
        record(success("ethereum"), None, f"http://pusher:gateway-pw@127.0.0.1:{port}/")
    [message] = [r.getMessage() for r in caplog.records]
    assert f"Pushgateway http://pusher@127.0.0.1:{port}/ did not take" in message and "gateway-pw" not in message


def test_a_pushgateway_url_with_a_user_and_password_sends_them_as_basic_auth():
    """As luigi does for luigid: the URL's user:password@ become the
    Authorization header, percent-decoded, not part of the host."""
    received = []

    class Gateway(BaseHTTPRequestHandler):
        def do_PUT(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            received.append((self.path, self.headers["Authorization"]))
            self.send_response(200)
            self.end_headers()

        do_POST = do_PUT

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Gateway)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        record(success("ethereum"), None, f"http://pusher:p%40ss%2Fw@127.0.0.1:{server.server_port}")
    finally:
        server.shutdown()
    token = base64.b64encode(b"pusher:p@ss/w").decode()
    assert received == [("/metrics/job/sot_ingestion/network/ethereum", f"Basic {token}")]


# ---------------------------------------------------------------- freshness

NOW = dt.datetime(2024, 10, 31, 13, 0, tzinfo=dt.timezone.utc)


def test_stale_networks_lines_in_the_order_given():
    last = {"torus": None, "ethereum": dt.date(2024, 10, 28), "bitcoin": dt.date(2024, 10, 30)}
    assert stale_networks(last, NOW, 36) == [
        "torus: no complete day",
        "ethereum: last complete day 2024-10-28, 61 h old (limit 36 h)",
    ]


def test_exactly_the_max_age_is_fresh_and_a_second_more_is_stale():
    day = dt.date(2024, 10, 29)  # ends 2024-10-30 00:00 UTC
    end = dt.datetime(2024, 10, 30, tzinfo=dt.timezone.utc)
    assert stale_networks({"ethereum": day}, end + dt.timedelta(hours=36), 36) == []
    assert stale_networks({"ethereum": day}, end + dt.timedelta(hours=36, seconds=1), 36) == [
        "ethereum: last complete day 2024-10-29, 36.1 h old (limit 36 h)"]
    assert stale_networks({"ethereum": day}, end + dt.timedelta(hours=12, minutes=30), 12.5) == []
    assert stale_networks({"ethereum": day}, end + dt.timedelta(hours=13), 12.5) == [
        "ethereum: last complete day 2024-10-29, 13 h old (limit 12.5 h)"]


def test_now_naive_is_utc_and_other_zones_are_converted():
    last = {"bitcoin": dt.date(2024, 10, 28)}
    expected = ["bitcoin: last complete day 2024-10-28, 61 h old (limit 36 h)"]
    assert stale_networks(last, dt.datetime(2024, 10, 31, 13, 0), 36) == expected
    plus2 = dt.timezone(dt.timedelta(hours=2))
    assert stale_networks(last, dt.datetime(2024, 10, 31, 15, 0, tzinfo=plus2), 36) == expected
    assert stale_networks({}, NOW, 36) == []
    assert stale_networks({"torus": dt.date(2024, 11, 5)}, NOW, 36) == []  # a day ahead of the clock is not stale
