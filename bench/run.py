"""The ingestion benchmark: `make bench` or `python -m bench.run`.

Against Redis, ClickHouse and luigid that it starts itself in a temporary
directory, it measures on one generated snapshot (BENCH_ROWS feature rows,
default 1,000,000):

  (a) the project's load (workflows.loader.DayLoad.load) of each table, in a
      child process of its own;
  (b) the reference: clickhouse-client inserting the same rows in Native
      format into the same server, in the file's order (and, for comparison,
      sorted by the table's key, which spares the server its sort);
  (c) the project's checksum (workflows.meta.file_digest) against sha256sum;
  (d) the peak RSS of the loading process from (a), and with BENCH_RSS_ROWS
      set, that of loading a raw_features file of that many rows;
  (e) RunDaily end to end through the `luigi` command, for one network and
      for three, with --workers 2;
  (f) a download from S3 (moto's server on loopback) of a snapshot whose
      raw_features object is BENCH_S3_MB (default 500) MB: its rate and the
      peak RSS of the downloading process;
  (h) the bytes of column data sent per table, with plain and with
      LZ4-compressed Native blocks (INGESTION_COMPRESSION), and the load time of each;
  (j) whether the public path carries the same bytes as fast: raw_features
      loaded with DayLoad through the driver's packet layer (plain and LZ4)
      and through ClickHouse's HTTP interface (bench.http_insert: POST
      INSERT ... FORMAT Native, chunked, plain and LZ4 with decompress=1),
      each REPEATS times, every load's rows and checksum compared;
  (g) RunDaily for one network, --local-scheduler, one worker, from process
      start to exit, against the floor for the same work: `cp` of the
      snapshot + `sha256sum` of its files + clickhouse-client inserting the
      four tables in Native format, the two measured in turn three times
      (medians; the machine's speed drifts); and the peak RSS of that
      whole process, with its private memory and library pages sampled (at
      BENCH_RSS_ROWS too, when set).

It prints a table with PASS/MISS against the targets and writes the figures
to bench/results/bench-<UTC time>.json and bench/results/latest.json.
`--only j` runs (j) alone (the other sections build on one another's
figures), to bench/results/bench-<UTC time>-j.json.

Environment: BENCH_ROWS, BENCH_RUNDAILY_ROWS (default BENCH_ROWS),
BENCH_RSS_ROWS (default unset: skipped), BENCH_S3_MB, BENCH_KEEP=1 keeps the temporary
directory (server logs, luigi logs)."""
import argparse
import concurrent.futures
import datetime as dt
import hashlib
import json
import math
import multiprocessing
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from functools import partial

import pyarrow.parquet as pq
import redis
from clickhouse_driver import Client

from bench.http_insert import http_insert
from devkit.local_servers import LocalServers, free_port, s3_server
from devkit.producer import ProducerDay
from devkit.sample import ROW_GROUP_ROWS, make_snapshot, write_snapshot
from workflows import clickhouse, loader, meta, sql
from workflows.clickhouse import Destination
from workflows.config import Settings
from workflows.insert import insert_blocks
from workflows.native import native_block
from workflows.schema import SCHEMAS
from workflows.slices import Slice
from workflows.sources import open_source

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(REPO, "bench", "results")
VENV_BIN = os.path.dirname(sys.executable)

NETWORK = "ethereum"
NETWORKS = ("ethereum", "bitcoin", "torus")
DATABASE = "risk_assessment_ethereum"
DATE = dt.date(2024, 10, 30)
DATE_RSS = dt.date(2024, 10, 29)  # the BENCH_RSS_ROWS file's own day, so it replaces nothing of DATE
DATE_PRODUCER = dt.date(2024, 10, 28)  # the producer-format day of (i)
WINDOW = 195
TABLES = meta.TABLES  # raw_alerts, raw_features, raw_clusters, raw_address_labels
RSS_CHUNK_ROWS = 250_000
REPEATS = 3  # loads per transport in (j): the median is reported

# name, figure, limit: PASS when figure <= limit
TARGETS = (
    ("raw_features load <= 2x clickhouse-client", "raw_features_ratio", 2.0),
    ("peak RSS of the loading process <= 300 MB", "peak_rss_mb", 300.0),
    ("checksum <= 1.2x sha256sum", "checksum_ratio", 1.2),
    ("three networks clearly less than 3x one (<= 2.5x)", "rundaily_ratio", 2.5),
    ("a large S3 download adds <= 64 MB to its process's RSS", "s3_rss_growth_mb", 64.0),
    ("RunDaily <= 1.3x the floor (cp + sha256sum + clickhouse-client)", "floor_ratio", 1.3),
    ("peak RSS of the whole RunDaily process <= 300 MB", "rundaily_peak_rss_mb", 300.0),
)


def env_int(name, default):
    text = os.environ.get(name, "").strip()
    return int(text.replace("_", "")) if text else default


# ---------------------------------------------------------------- machine


def machine_info(ch):
    model = "unknown"
    with open("/proc/cpuinfo") as stream:
        for line in stream:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as stream:
        mem_kib = next(int(line.split()[1]) for line in stream if line.startswith("MemTotal:"))
    return {
        "nproc": int(subprocess.run(["nproc"], capture_output=True, text=True, check=True).stdout),
        "cpu_model": model,
        "memory_gb": round(mem_kib / 2**20, 1),
        "clickhouse_version": ch.execute("SELECT version()")[0][0],
        "python": platform.python_version(),
        "kernel": platform.release(),
    }


def wait_for_merges(ch, timeout=300):
    """Lets background merges of earlier inserts finish, so they do not run
    during the next measurement on a 2-core machine."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and ch.execute("SELECT count() FROM system.merges")[0][0]:
        time.sleep(0.2)


# ---------------------------------------------------------------- 1. snapshot


def generate_snapshot(root, network, date, rows):
    """Writes one day's snapshot; returns {table: parquet path} and seconds."""
    start = time.perf_counter()
    tables = make_snapshot(network, date, WINDOW, feature_rows=rows)
    folder = write_snapshot(root, network, date, WINDOW, tables)
    del tables  # not to be counted in any later memory figure
    return {t: os.path.join(folder, f"{t}.parquet") for t in TABLES}, time.perf_counter() - start


# ---------------------------------------------------------------- (f) S3 download


def _download_in_child(environment, destination):
    """Runs in a spawned process: DownloadSOT's fetch from S3; returns its seconds and peak RSS."""
    source = open_source(Settings.from_env(environment))
    baseline = _peak_rss_mb()
    start = time.perf_counter()
    arrived = source.fetch(Slice(NETWORK, DATE, WINDOW), destination)
    return {"seconds": time.perf_counter() - start, "files": len(arrived), "baseline_rss_mb": baseline,
            "peak_rss_mb": _peak_rss_mb()}


def measure_s3_download(work, paths, megabytes):
    """Publishes the snapshot to moto with raw_features replaced by `megabytes`
    MB of random bytes (fetch does not look inside), then downloads it."""
    from pyarrow import fs
    port = free_port()
    server = s3_server(os.path.join(work, "servers"), port)
    server.start()
    try:
        endpoint = f"http://127.0.0.1:{port}"
        store = fs.S3FileSystem(access_key="bench", secret_key="bench", endpoint_override=endpoint,
                                region="us-east-1", allow_bucket_creation=True)
        store.create_dir("sot")
        prefix = f"sot/{Slice(NETWORK, DATE, WINDOW).path}"
        files = []
        for table in TABLES:
            with store.open_output_stream(f"{prefix}/{table}.parquet") as out:
                digest = hashlib.sha256()
                if table == "raw_features":
                    for _ in range(megabytes):
                        block = os.urandom(1 << 20)
                        out.write(block)
                        digest.update(block)
                else:
                    data = open(paths[table], "rb").read()
                    out.write(data)
                    digest.update(data)
            files.append({"filename": f"{table}.parquet", "checksum": f"sha256:{digest.hexdigest()}"})
        with store.open_output_stream(f"{prefix}/{meta.META_FILENAME}") as out:
            out.write(json.dumps({"files": files}).encode())
        environment = {"SOT_URL": "s3://sot", "SOT_S3_ENDPOINT": endpoint, "AWS_ACCESS_KEY_ID": "bench",
                       "AWS_SECRET_ACCESS_KEY": "bench", "AWS_EC2_METADATA_DISABLED": "true"}
        destination = os.path.join(work, "s3-download")
        os.makedirs(destination)
        context = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
            result = pool.submit(_download_in_child, environment, destination).result()
        size = sum(os.path.getsize(os.path.join(destination, name)) for name in os.listdir(destination))
        return dict(result, megabytes=size / 1e6, mb_per_second=size / 1e6 / result["seconds"])
    finally:
        server.stop()


# ---------------------------------------------------------------- (a) + (d) the project's load


def _peak_rss_mb():
    """This process's peak RSS in MB: VmHWM, the high-water mark of its own
    memory. getrusage's ru_maxrss (KiB on Linux) is not used for the figure:
    in a spawned child it starts at the parent's RSS at the fork before exec,
    so it would count the benchmark's own memory."""
    with open("/proc/self/status") as stream:
        return next(int(line.split()[1]) for line in stream if line.startswith("VmHWM:")) / 1024


def _ru_maxrss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def day_rows(ch, database, table, date):
    return clickhouse.count_day_rows(Destination(ch, database, SCHEMAS[table]), Slice(NETWORK, date, WINDOW))


def _load_in_child(port, database, loads, compression=None, http_port=None):
    """Runs in a spawned process: loads [(table, path, date)] one after the
    other as LoadTable does; returns per-table seconds, bytes of column data
    sent, and this process's peak RSS. With `http_port` the blocks go over
    HTTP (bench.http_insert), the rest of the load over the driver."""
    ch = Client("127.0.0.1", port=port, send_receive_timeout=600, compression=compression or False)
    ch.execute("SELECT 1")
    send = (http_insert("127.0.0.1", http_port, lz4=compression == "lz4") if http_port
            else partial(insert_blocks, ch))
    result = {"baseline_rss_mb": _peak_rss_mb(), "tables": {}}
    for table, path, date in loads:
        sent = []

        def insert(*args):
            sent.append(send(*args))
        start = time.perf_counter()
        rows = loader.DayLoad(Destination(ch, database, SCHEMAS[table]), Slice(NETWORK, date, WINDOW),
                              insert=insert).load(path)
        result["tables"][table] = {"rows": rows, "seconds": time.perf_counter() - start,
                                   "wire_bytes": sum(sent), "peak_rss_mb_so_far": _peak_rss_mb()}
    result["peak_rss_mb"] = _peak_rss_mb()
    result["ru_maxrss_mb"] = _ru_maxrss_mb()  # for reference only, see _peak_rss_mb
    return result


def load_in_child(port, database, loads, compression=None, http_port=None):
    """_load_in_child in a fresh process, so that its peak RSS is the load's alone."""
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return pool.submit(_load_in_child, port, database, loads, compression, http_port).result()


def measure_wire(ch, port, paths, plain):
    """The same loads with LZ4 blocks, next to the plain ones of (a)."""
    wait_for_merges(ch)
    lz4 = load_in_child(port, DATABASE, [(t, paths[t], DATE) for t in TABLES], "lz4")
    return {t: {"plain_bytes": plain["tables"][t]["wire_bytes"], "plain_seconds": plain["tables"][t]["seconds"],
                "lz4_bytes": lz4["tables"][t]["wire_bytes"], "lz4_seconds": lz4["tables"][t]["seconds"],
                "parquet_bytes": os.path.getsize(paths[t])} for t in TABLES}


def measure_load(ch, port, paths):
    wait_for_merges(ch)
    result = load_in_child(port, DATABASE, [(t, paths[t], DATE) for t in TABLES])
    for table in TABLES:
        loaded = day_rows(ch, DATABASE, table, DATE)
        if loaded != result["tables"][table]["rows"]:
            raise RuntimeError(f"{table}: DayLoad.load returned {result['tables'][table]['rows']} rows,"
                               f" table has {loaded}")
    return result


def write_large_features(path, rows):
    """A raw_features-only file of `rows` rows, written in chunks so that the
    generator's own memory stays bounded; each chunk's addresses come from its own seed."""
    writer = None
    try:
        for i in range(math.ceil(rows / RSS_CHUNK_ROWS)):
            chunk = min(RSS_CHUNK_ROWS, rows - i * RSS_CHUNK_ROWS)
            table = make_snapshot(NETWORK, DATE_RSS, WINDOW, feature_rows=chunk, seed=i + 1)["raw_features"]
            writer = writer or pq.ParquetWriter(path, table.schema)
            writer.write_table(table, row_group_size=ROW_GROUP_ROWS)
            del table
    finally:
        if writer:
            writer.close()


def measure_large_rss(ch, port, work, rows):
    """(d) with BENCH_RSS_ROWS: the peak RSS of loading one big raw_features file."""
    path = os.path.join(work, "rss", "raw_features.parquet")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    start = time.perf_counter()
    write_large_features(path, rows)
    generated = time.perf_counter() - start
    size = os.path.getsize(path)
    wait_for_merges(ch)
    result = load_in_child(port, DATABASE, [("raw_features", path, DATE_RSS)])
    ch.execute(*sql.drop_partition(DATABASE, "raw_features", DATE_RSS, WINDOW))
    os.remove(path)
    loaded = result["tables"]["raw_features"]
    return {"rows": loaded["rows"], "parquet_mb": size / 1e6, "generate_seconds": generated,
            "load_seconds": loaded["seconds"], "baseline_rss_mb": result["baseline_rss_mb"],
            "peak_rss_mb": result["peak_rss_mb"]}


# ---------------------------------------------------------------- (j) the driver's packet layer vs HTTP

TRANSPORTS = (("driver", None, False), ("driver LZ4", "lz4", False), ("HTTP", None, True), ("HTTP LZ4", "lz4", True))


def day_checksum(ch, table, date):
    """(rows, sum of each row's cityHash64) of the table's day: equal for the
    same rows in any order or parts. 18.16's cityHash64 takes no Decimal, so
    those are hashed as text; now() defaults (created_at) differ per load."""
    values = ", ".join(f"toString({sql.quote_identifier(c.name)})" if c.type.startswith("Decimal")
                       else sql.quote_identifier(c.name)
                       for c in SCHEMAS[table].columns if c.default != "now()")
    return tuple(ch.execute(f"SELECT count(), sum(cityHash64({values})) FROM {DATABASE}.{table}"
                            f" WHERE processing_date = %(date)s AND window_days = %(window)s",
                            {"date": date, "window": WINDOW})[0])


def measure_http(ch, port, http_port, path):
    """(j) raw_features loaded REPEATS times per transport, the transports in
    turn so that the machine's drift spreads over all; each load replaces
    the day, whose rows and checksum must be those of the first."""
    runs = {name: [] for name, _, _ in TRANSPORTS}
    expected = None
    for _ in range(REPEATS):
        for name, compression, over_http in TRANSPORTS:
            wait_for_merges(ch)
            result = load_in_child(port, DATABASE, [("raw_features", path, DATE)], compression,
                                   http_port if over_http else None)
            checksum = day_checksum(ch, "raw_features", DATE)
            if expected is None:
                expected = checksum
            elif checksum != expected:
                raise RuntimeError(f"(j) {name}: the day holds (rows, checksum) {checksum}, the first load {expected}")
            runs[name].append(dict(result["tables"]["raw_features"], peak_rss_mb=result["peak_rss_mb"]))
    out = {"rows": expected[0], "checksum": str(expected[1]), "repeats": REPEATS, "transports": {}}
    for name, loads in runs.items():
        seconds = statistics.median(load["seconds"] for load in loads)
        out["transports"][name] = {"seconds": seconds, "all_seconds": [load["seconds"] for load in loads],
                                   "rows_per_second": expected[0] / seconds, "wire_bytes": loads[0]["wire_bytes"],
                                   "peak_rss_mb": max(load["peak_rss_mb"] for load in loads)}
    driver, http = out["transports"]["driver"]["seconds"], out["transports"]["HTTP"]["seconds"]
    out["http_vs_driver_percent"] = (http / driver - 1) * 100
    return out


# ---------------------------------------------------------------- (b) the reference: clickhouse-client


def ch_client(port, query):
    return ["clickhouse-client", "--host", "127.0.0.1", "--port", str(port), "--query", query]


def write_native(path, table, native):
    """The Parquet file's rows, in the file's order, as a Native-format file:
    the bytes the loader sends, which test_conformance reads back on both
    server generations. Returns the column list."""
    source = loader.CheckedParquet(path, SCHEMAS[table], Slice(NETWORK, DATE, WINDOW))
    with open(native, "wb") as stream:
        for n_rows, encoded in loader.encoded_blocks(source):
            for buffer in native_block(n_rows, encoded):
                stream.write(buffer)
    return ", ".join(c.name for c in source.columns)


def export_native(ch, port, table, columns, native):
    """The loaded rows as the server exports them: sorted by the table's key."""
    with open(native, "wb") as stream:
        subprocess.run(ch_client(port, f"SELECT {columns} FROM {DATABASE}.{table} FORMAT Native"),
                       stdout=stream, check=True)


def client_insert(ch, port, table, columns, native):
    """Seconds of clickhouse-client inserting the Native file into an empty copy of the table."""
    copy = f"{DATABASE}.bench_copy_{table}"
    ch.execute(f"DROP TABLE IF EXISTS {copy}")
    ch.execute(f"CREATE TABLE {copy} AS {DATABASE}.{table}")
    wait_for_merges(ch)
    with open(native, "rb") as stream:
        start = time.perf_counter()
        subprocess.run(ch_client(port, f"INSERT INTO {copy} ({columns}) FORMAT Native"), stdin=stream, check=True)
        seconds = time.perf_counter() - start
    rows = ch.execute(f"SELECT count() FROM {copy}")[0][0]
    ch.execute(f"DROP TABLE {copy}")
    return seconds, rows


def measure_reference(ch, port, work, paths):
    """clickhouse-client inserting each table's rows in Native format into an
    empty copy of the table: the rows in the file's order, which is the same
    work as the load's, and, for comparison, sorted by the table's key (as
    the server exports them), which the server need not sort again."""
    out = {}
    # the fixed cost of starting clickhouse-client, for reading the small tables' figures
    start = time.perf_counter()
    subprocess.run(ch_client(port, "SELECT 1"), check=True, stdout=subprocess.DEVNULL)
    out["_client_startup_seconds"] = time.perf_counter() - start
    for table in TABLES:
        native = os.path.join(work, f"{table}.native")
        columns = write_native(paths[table], table, native)
        seconds, rows = client_insert(ch, port, table, columns, native)
        native_bytes = os.path.getsize(native)
        export_native(ch, port, table, columns, native)
        key_order_seconds, _ = client_insert(ch, port, table, columns, native)
        out[table] = {"seconds": seconds, "rows": rows, "native_bytes": native_bytes,
                      "key_order_seconds": key_order_seconds}
        os.remove(native)
    return out


# ---------------------------------------------------------------- (c) checksums


def _read_all(path):
    with open(path, "rb", buffering=0) as stream:
        while stream.read(16 << 20):
            pass


def measure_checksums(paths, repeats=3):
    """file_digest against sha256sum on each file, page cache warm; best of `repeats`."""
    for path in paths.values():
        _read_all(path)
    out = {}
    for table, path in paths.items():
        project, tool = [], []
        for _ in range(repeats):
            start = time.perf_counter()
            ours = meta.file_digest(path, "sha256")
            project.append(time.perf_counter() - start)
            start = time.perf_counter()
            theirs = subprocess.run(["sha256sum", path], capture_output=True, text=True, check=True).stdout.split()[0]
            tool.append(time.perf_counter() - start)
            if ours != theirs:
                raise RuntimeError(f"{path}: file_digest {ours} != sha256sum {theirs}")
        out[table] = {"bytes": os.path.getsize(path), "project_seconds": min(project), "sha256sum_seconds": min(tool)}
    return out


# ---------------------------------------------------------------- (e) RunDaily end to end


def reset_pipeline_state(ch, servers):
    """Empty ClickHouse databases and Redis markers: every run starts from nothing."""
    for (database,) in ch.execute("SHOW DATABASES"):
        if database.startswith("risk_assessment_"):
            ch.execute(f"DROP DATABASE {database}")
    redis.Redis.from_url(servers.env()["REDIS_URL"]).flushdb()


def measure_rundaily(ch, servers, work, rows):
    """Wall time of `luigi --module workflows RunDaily --workers 2` for one
    network and for three, each on its own date and from empty databases."""
    sot = os.path.join(work, "sot-rundaily")
    runs = [("one_network", DATE, NETWORKS[:1]), ("three_networks", DATE + dt.timedelta(days=1), NETWORKS)]
    generated = 0.0
    for _, date, networks in runs:
        for network in networks:
            generated += generate_snapshot(sot, network, date, rows)[1]
    out = {"rows": rows, "generate_seconds": generated}
    for name, date, networks in runs:
        reset_pipeline_state(ch, servers)
        wait_for_merges(ch)
        downloads = tempfile.mkdtemp(prefix="downloads-", dir=work)
        env = {**os.environ, **servers.env(), "SOT_URL": sot, "SOT_DOWNLOAD_DIR": downloads,
               "INGESTION_RETRY_ATTEMPTS": "1", "INGESTION_WINDOW_DAYS": str(WINDOW),
               "LUIGI_CONFIG_PATH": os.path.join(REPO, "luigi.cfg")}
        command = [os.path.join(VENV_BIN, "luigi"), "--module", "workflows", "RunDaily", "--date", date.isoformat(),
                   "--networks", ",".join(networks), "--workers", "2"]
        log = os.path.join(work, f"rundaily-{name}.log")
        with open(log, "w") as stream:
            start = time.perf_counter()
            status = subprocess.run(command, cwd=REPO, env=env, stdout=stream, stderr=subprocess.STDOUT).returncode
            seconds = time.perf_counter() - start
        if status != 0:
            with open(log) as stream:
                tail = "".join(stream.readlines()[-30:])
            raise RuntimeError(f"RunDaily ({name}) exited with {status}; last lines of {log}:\n{tail}")
        for network in networks:
            database = f"risk_assessment_{network}"
            loaded = day_rows(ch, database, "raw_features", date)
            if loaded != rows:
                raise RuntimeError(f"RunDaily ({name}): {database}.raw_features has {loaded} rows, expected {rows}")
        out[name] = {"networks": list(networks), "date": date.isoformat(), "seconds": seconds}
    out["ratio"] = out["three_networks"]["seconds"] / out["one_network"]["seconds"]
    return out


# ---------------------------------------------------------------- (g) RunDaily against the floor


def _memory_mb(pid):
    """(RssAnon, RssFile) of a process in MB: its own memory, and the pages of
    mapped files (the libraries) that count in its RSS."""
    with open(f"/proc/{pid}/status") as stream:
        fields = dict(line.split(":", 1) for line in stream)
    return tuple(int(fields[name].split()[0]) / 1024 for name in ("RssAnon", "RssFile"))


def _run_and_measure(command, env):
    """Runs in a spawned process: `command`; returns its seconds, status and
    peak RSS (getrusage of this process's only child: with one worker and a
    local scheduler, luigi runs every task in that one process), and, sampled
    every 20 ms, its peak private memory and the library pages at that peak.
    The library pages depend on the page cache: files pip has just written
    sit there in large folios, and each mapped page of them counts."""
    start = time.perf_counter()
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    private, files = 0.0, 0.0
    while process.poll() is None:
        try:
            sample = _memory_mb(process.pid)
        except (OSError, KeyError, ValueError):  # the process is exiting
            sample = (0.0, 0.0)
        if sample[0] > private:
            private, files = sample
        time.sleep(0.02)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "status": process.returncode,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
            "peak_private_mb": private, "file_pages_at_peak_mb": files}


def whole_rundaily(ch, servers, work, sot, date):
    reset_pipeline_state(ch, servers)
    wait_for_merges(ch)
    env = {**os.environ, **servers.env(), "SOT_URL": sot, "SOT_DOWNLOAD_DIR": tempfile.mkdtemp(dir=work),
           "INGESTION_RETRY_ATTEMPTS": "1", "INGESTION_WINDOW_DAYS": str(WINDOW)}
    command = [os.path.join(VENV_BIN, "luigi"), "--module", "workflows", "RunDaily", "--date", date.isoformat(),
               "--networks", NETWORK, "--local-scheduler"]
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        result = pool.submit(_run_and_measure, command, env).result()
    if result["status"] != 0:
        raise RuntimeError(f"RunDaily {date} exited with {result['status']}")
    return result


FLOOR_ROUNDS = 3  # the machine's speed drifts over minutes: floor and RunDaily measured in turn, medians taken


def measure_floor_once(ch, port, folder, paths, natives):
    """One floor for the day's work: `cp` of the snapshot, `sha256sum` of its
    files, clickhouse-client inserting each table's rows in the file's order."""
    copy = folder + "-floor-copy"
    start = time.perf_counter()
    subprocess.run(["cp", "-r", folder, copy], check=True)
    cp_seconds = time.perf_counter() - start
    shutil.rmtree(copy)
    start = time.perf_counter()
    subprocess.run(["sha256sum", *(paths[t] for t in TABLES)], check=True, stdout=subprocess.DEVNULL)
    sha_seconds = time.perf_counter() - start
    insert_seconds = sum(client_insert(ch, port, table, columns, native)[0]
                         for table, (native, columns) in natives.items())
    return {"floor_seconds": cp_seconds + sha_seconds + insert_seconds, "cp_seconds": cp_seconds,
            "sha256sum_seconds": sha_seconds, "clickhouse_client_seconds": insert_seconds}


def measure_against_floor(ch, servers, work, paths, reference):
    """(g) RunDaily from process start to exit against the floor for the same
    work, each measured FLOOR_ROUNDS times in turn; the ratio of their
    medians. The key-ordered floor takes (b)'s key-ordered inserts."""
    folder = os.path.dirname(paths["raw_features"])
    natives = {}
    for table in TABLES:
        native = os.path.join(work, f"floor-{table}.native")
        natives[table] = (native, write_native(paths[table], table, native))
    floors, runs = [], []
    for _ in range(FLOOR_ROUNDS):
        floors.append(measure_floor_once(ch, servers.clickhouse_port, folder, paths, natives))
        runs.append(whole_rundaily(ch, servers, work, os.path.dirname(os.path.dirname(os.path.dirname(folder))),
                                   DATE))
    for native, _ in natives.values():
        os.remove(native)
    floor = sorted(floors, key=lambda f: f["floor_seconds"])[FLOOR_ROUNDS // 2]
    run = sorted(runs, key=lambda r: r["seconds"])[FLOOR_ROUNDS // 2]
    key_order_floor = floor["cp_seconds"] + floor["sha256sum_seconds"] + \
        sum(reference[t]["key_order_seconds"] for t in TABLES)
    return {**floor, "rundaily_seconds": run["seconds"], "ratio": run["seconds"] / floor["floor_seconds"],
            "rounds": FLOOR_ROUNDS, "floors_seconds": [f["floor_seconds"] for f in floors],
            "rundailies_seconds": [r["seconds"] for r in runs],
            "peak_rss_mb": max(r["peak_rss_mb"] for r in runs), "peak_private_mb": run["peak_private_mb"],
            "file_pages_at_peak_mb": run["file_pages_at_peak_mb"],
            "key_order_floor_seconds": key_order_floor, "key_order_ratio": run["seconds"] / key_order_floor}


def measure_producer_format(ch, servers, work, rows, readme_format_seconds):
    """(i) The same RunDaily on a day in the real SOT's format (short names,
    META 1.x with counts, the labels file beside the snapshots, pandas'
    Parquet types: int64, double, bool, decimal128(p, 18))."""
    root = os.path.join(work, "producer")
    started = time.perf_counter()
    ProducerDay(root, NETWORK, DATE_PRODUCER, WINDOW, rows).write()
    generate_seconds = time.perf_counter() - started
    run = whole_rundaily(ch, servers, work, os.path.join(root, "snapshots"), DATE_PRODUCER)
    loaded = day_rows(ch, DATABASE, "raw_features", DATE_PRODUCER)
    if loaded != rows:
        raise RuntimeError(f"producer-format RunDaily: raw_features has {loaded} rows, expected {rows}")
    return {"rows": rows, "generate_seconds": generate_seconds, "seconds": run["seconds"],
            "readme_format_seconds": readme_format_seconds, "ratio": run["seconds"] / readme_format_seconds,
            "peak_rss_mb": run["peak_rss_mb"]}


def measure_large_rundaily_rss(ch, servers, work, rows):
    sot = os.path.join(work, "sot-large")
    generate_snapshot(sot, NETWORK, DATE_RSS, rows)
    return dict(whole_rundaily(ch, servers, work, sot, DATE_RSS), rows=rows)


# ---------------------------------------------------------------- figures, report


def summarise(paths, load, reference, checksums):
    """Per-table and total figures of (a), (b), (c)."""
    rows_out = {}
    for table in TABLES + ("total",):
        names = TABLES if table == "total" else (table,)
        rows = sum(load["tables"][t]["rows"] for t in names)
        parquet = sum(os.path.getsize(paths[t]) for t in names) / 1e6
        native = sum(reference[t]["native_bytes"] for t in names) / 1e6
        seconds = sum(load["tables"][t]["seconds"] for t in names)
        client = sum(reference[t]["seconds"] for t in names)
        client_key_order = sum(reference[t]["key_order_seconds"] for t in names)
        rows_out[table] = {
            "rows": rows, "parquet_mb": parquet, "native_mb": native, "load_seconds": seconds,
            "rows_per_second": rows / seconds, "parquet_mb_per_second": parquet / seconds,
            "native_mb_per_second": native / seconds, "clickhouse_client_seconds": client,
            "clickhouse_client_native_mb_per_second": native / client, "ratio": seconds / client,
            "clickhouse_client_key_order_seconds": client_key_order,
        }
    sums = dict(checksums)
    project = sum(c["project_seconds"] for c in sums.values())
    tool = sum(c["sha256sum_seconds"] for c in sums.values())
    sums["total"] = {"bytes": sum(c["bytes"] for c in checksums.values()), "project_seconds": project,
                     "sha256sum_seconds": tool}
    for c in sums.values():
        c["ratio"] = c["project_seconds"] / c["sha256sum_seconds"]
        c["project_mb_per_second"] = c["bytes"] / 1e6 / c["project_seconds"]
        c["sha256sum_mb_per_second"] = c["bytes"] / 1e6 / c["sha256sum_seconds"]
    return rows_out, sums


def evaluate_targets(figures):
    out = []
    for name, key, limit in TARGETS:
        value = figures.get(key)
        status = "SKIP" if value is None else ("PASS" if value <= limit else "MISS")
        out.append({"target": name, "value": value, "limit": limit, "status": status})
    return out


def underlined(p, header):
    p(header)
    p("-" * len(header))


def report_header(results):
    m, c = results["machine"], results["config"]
    return [f"Machine: {m['nproc']} cores, {m['cpu_model']}, {m['memory_gb']} GB RAM, "
            f"ClickHouse {m['clickhouse_version']}, Python {m['python']}, Linux {m['kernel']}",
            f"Snapshot: {c['network']} {c['date']} window {c['window_days']}, {c['rows']:,} feature rows "
            f"(generated in {c['generate_seconds']:.1f} s)", ""]


def report_http(j):
    """The lines of (j)."""
    lines = [f"(j) raw_features, {j['rows']:,} rows, DayLoad with each transport in its own process, median of"
             f" {j['repeats']} loads;",
             f"    every load's day: the same rows and checksum (count {j['rows']:,},"
             f" sum(cityHash64(row)) {j['checksum']})"]
    p = lines.append
    underlined(p, f"{'transport':<12} {'median s':>8} {'rows/s':>10} {'MB sent':>8} {'peak RSS MB':>11}  each load s")
    for name, t in j["transports"].items():
        p(f"{name:<12} {t['seconds']:>8.2f} {t['rows_per_second']:>10,.0f} {t['wire_bytes'] / 1e6:>8.1f}"
          f" {t['peak_rss_mb']:>11.0f}  {' '.join(f'{s:.2f}' for s in t['all_seconds'])}")
    p("  MB sent: the blocks' bytes (the driver's include 8 bytes of BlockInfo per block; HTTP's no chunk framing);"
      " HTTP LZ4: ClickHouse's LZ4 frames with decompress=1")
    percent = j["http_vs_driver_percent"]
    p(f"HTTP Native: {abs(percent):.1f} % {'slower' if percent > 0 else 'faster'} than the driver path"
      " (uncompressed); switch only if no loss")
    return lines


def report(results):
    """The printed table; returns it as text."""
    lines = report_header(results)
    p = lines.append
    p("(a) project load (DayLoad.load, own process) vs (b) clickhouse-client INSERT ... FORMAT Native")
    header = (f"{'table':<20} {'rows':>10} {'parquet MB':>10} {'native MB':>10} {'load s':>8} {'rows/s':>10} "
              f"{'MB/s':>7} {'native MB/s':>11} {'ch-client s':>11} {'ratio':>6} {'key-sorted s':>12}")
    p(header)
    p("-" * len(header))
    for table, f in results["tables"].items():
        p(f"{table:<20} {f['rows']:>10,} {f['parquet_mb']:>10.1f} {f['native_mb']:>10.1f} {f['load_seconds']:>8.2f} "
          f"{f['rows_per_second']:>10,.0f} {f['parquet_mb_per_second']:>7.1f} {f['native_mb_per_second']:>11.1f} "
          f"{f['clickhouse_client_seconds']:>11.2f} {f['ratio']:>5.2f}x"
          f" {f['clickhouse_client_key_order_seconds']:>12.2f}")
    p(f"  MB/s = Parquet MB on disk / load s; native MB = the Native file's size (uncompressed column data); "
      f"clickhouse-client start-up alone: {results['client_startup_seconds']:.2f} s")
    p("  ch-client s: the file's rows in its order, as the load sends them; key-sorted s: the same rows sorted by"
      " the table's key, as the server exports them (it then skips its own sort)")
    p("")
    p("(c) checksum, sha256, page cache warm, best of 3")
    underlined(p, f"{'file':<28} {'MB':>8} {'file_digest s':>13} {'MB/s':>7} {'sha256sum s':>11} {'MB/s':>7}"
                  f" {'ratio':>6}")
    for table, f in results["checksums"].items():
        name = table if table == "total" else f"{table}.parquet"
        p(f"{name:<28} {f['bytes'] / 1e6:>8.1f} {f['project_seconds']:>13.3f} {f['project_mb_per_second']:>7.0f} "
          f"{f['sha256sum_seconds']:>11.3f} {f['sha256sum_mb_per_second']:>7.0f} {f['ratio']:>5.2f}x")
    p("")
    r = results["rss"]
    p(f"(d) peak RSS of the loading process (all four tables): {r['peak_rss_mb']:.0f} MB "
      f"(after imports and connecting, before loading: {r['baseline_rss_mb']:.0f} MB)")
    p(f"    VmHWM of the child; its ru_maxrss, {r['ru_maxrss_mb']:.0f} MB, also counts the parent's RSS at fork+exec")
    for table, f in results["load"]["tables"].items():
        p(f"      after {table:<20} {f['peak_rss_mb_so_far']:.0f} MB")
    big = results.get("rss_large")
    if big:
        p(f"    raw_features alone, {big['rows']:,} rows ({big['parquet_mb']:.0f} MB Parquet): peak RSS "
          f"{big['peak_rss_mb']:.0f} MB (baseline {big['baseline_rss_mb']:.0f} MB), load {big['load_seconds']:.1f} s "
          f"= {big['rows'] / big['load_seconds']:,.0f} rows/s")
    else:
        p("    to show that memory does not grow with the file: "
          "BENCH_RSS_ROWS=5000000 .venv/bin/python -m bench.run  (or BENCH_RSS_ROWS=5000000 make bench)")
    p("")
    d = results["rundaily"]
    p(f"(e) RunDaily --workers 2, end to end through luigid, {d['rows']:,} feature rows per network")
    p(f"    one network ({', '.join(d['one_network']['networks'])}):   {d['one_network']['seconds']:8.1f} s")
    p(f"    three networks ({', '.join(d['three_networks']['networks'])}): {d['three_networks']['seconds']:8.1f} s"
      f"   ratio {d['ratio']:.2f}x")
    s3 = results["s3_download"]
    p("")
    p(f"(f) S3 download (moto on loopback) of the snapshot with a {s3['megabytes']:,.0f} MB total:"
      f" {s3['seconds']:.1f} s"
      f" = {s3['mb_per_second']:.0f} MB/s; peak RSS of the downloading process {s3['peak_rss_mb']:.0f} MB"
      f" (before the download: {s3['baseline_rss_mb']:.0f} MB)")
    p("")
    p("(h) bytes of column data on the wire per table, plain Native blocks and LZ4 (INGESTION_COMPRESSION),"
      " load on loopback")
    underlined(p, f"{'table':<20} {'Parquet MB':>10} {'plain MB':>9} {'plain s':>8} {'lz4 MB':>8} {'lz4 s':>7}"
                  f" {'lz4/plain':>9}")
    for table, w in results["wire"].items():
        p(f"{table:<20} {w['parquet_bytes'] / 1e6:>10.1f} {w['plain_bytes'] / 1e6:>9.1f} {w['plain_seconds']:>8.2f}"
          f" {w['lz4_bytes'] / 1e6:>8.1f} {w['lz4_seconds']:>7.2f} {w['lz4_bytes'] / max(w['plain_bytes'], 1):>8.2f}x")
    p("")
    lines.extend(report_http(results["http"]))
    g = results["floor"]
    p("")
    p(f"(g) RunDaily, one network, --local-scheduler, one worker, start to exit: {g['rundaily_seconds']:.1f} s;"
      f" the floor {g['floor_seconds']:.1f} s (cp {g['cp_seconds']:.1f} + sha256sum {g['sha256sum_seconds']:.1f}"
      f" + clickhouse-client {g['clickhouse_client_seconds']:.1f}): {g['ratio']:.2f}x, medians of {g['rounds']}"
      " measured in turn")
    p(f"    each round: RunDaily {' '.join(f'{x:.1f}' for x in g['rundailies_seconds'])} s,"
      f" floor {' '.join(f'{x:.1f}' for x in g['floors_seconds'])} s")
    p(f"    (the floor with rows sorted by the table's key, which the server need not sort:"
      f" {g['key_order_floor_seconds']:.1f} s, {g['key_order_ratio']:.2f}x)")
    p(f"    peak RSS of the whole RunDaily process: {g['peak_rss_mb']:.0f} MB (sampled: private memory at most"
      f" {g['peak_private_mb']:.0f} MB, with {g['file_pages_at_peak_mb']:.0f} MB of library pages then)")
    i = results["producer_format"]
    p(f"(i) the same RunDaily on a day in the real SOT's format ({i['rows']:,} feature rows, pandas' Parquet types,"
      f" the labels file beside): {i['seconds']:.1f} s, {i['ratio']:.2f}x the README-format day's"
      f" {i['readme_format_seconds']:.1f} s; peak RSS {i['peak_rss_mb']:.0f} MB")
    big_run = results.get("rundaily_large")
    if big_run:
        p(f"    at {big_run['rows']:,} feature rows: {big_run['peak_rss_mb']:.0f} MB ({big_run['seconds']:.1f} s;"
          f" private {big_run['peak_private_mb']:.0f} MB, library pages {big_run['file_pages_at_peak_mb']:.0f} MB)")
    p("")
    p("Targets")
    for t in results["targets"]:
        value = "-" if t["value"] is None else f"{t['value']:.2f}"
        p(f"  {t['status']:<4}  {t['target']:<52} {value:>8} (limit {t['limit']:g})")
    return "\n".join(lines)


def write_results(results, only=None):
    """To bench-<stamp>.json and latest.json; a section run alone to bench-<stamp>-<section>.json only."""
    os.makedirs(RESULTS, exist_ok=True)
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    path = os.path.join(RESULTS, f"bench-{stamp}{f'-{only}' if only else ''}.json")
    for target in (path,) if only else (path, os.path.join(RESULTS, "latest.json")):
        with open(target, "w") as stream:
            json.dump(results, stream, indent=2)
    return path


def log(message):
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def main():
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=("j",),
                        help="run this section alone (only (j) can be: the others build on one another's figures)")
    only = parser.parse_args().only
    rows = env_int("BENCH_ROWS", 1_000_000)
    rundaily_rows = env_int("BENCH_RUNDAILY_ROWS", rows)
    rss_rows = env_int("BENCH_RSS_ROWS", 0)
    keep = os.environ.get("BENCH_KEEP") == "1"
    if "/usr/sbin" not in os.environ.get("PATH", "").split(os.pathsep):  # clickhouse-server, as the Makefile does
        os.environ["PATH"] = os.environ.get("PATH", "") + os.pathsep + "/usr/sbin"
    work = tempfile.mkdtemp(prefix="sot-bench-")
    servers = LocalServers(os.path.join(work, "servers"), luigi_config=os.path.join(REPO, "luigi.cfg"))
    log(f"starting Redis, ClickHouse and luigid under {work}")
    servers.start()
    try:
        port = servers.clickhouse_port
        ch = Client("127.0.0.1", port=port, send_receive_timeout=600)
        results = {"machine": machine_info(ch)}

        log(f"generating the {NETWORK} snapshot, {rows:,} feature rows")
        paths, generate_seconds = generate_snapshot(os.path.join(work, "sot"), NETWORK, DATE, rows)
        results["config"] = {"network": NETWORK, "date": DATE.isoformat(), "window_days": WINDOW, "rows": rows,
                             "database": DATABASE, "generate_seconds": generate_seconds,
                             "rundaily_rows": rundaily_rows, "rss_rows": rss_rows or None}
        clickhouse.ensure_schema(ch, DATABASE)
        if only == "j":
            log(f"(j) raw_features through the driver and through HTTP, {REPEATS} loads each")
            results["http"] = measure_http(ch, port, servers.clickhouse_http_port, paths["raw_features"])
            print("\n".join(report_header(results) + report_http(results["http"])))
            print(f"\nFigures: {os.path.relpath(write_results(results, only), REPO)}")
            return

        log("(a) loading the four tables with DayLoad.load in a child process")
        results["load"] = measure_load(ch, port, paths)
        results["rss"] = {k: results["load"][k] for k in ("peak_rss_mb", "baseline_rss_mb", "ru_maxrss_mb")}

        log("(h) the same loads with LZ4-compressed blocks")
        results["wire"] = measure_wire(ch, port, paths, results["load"])

        log(f"(j) raw_features through the driver and through HTTP, {REPEATS} loads each")
        results["http"] = measure_http(ch, port, servers.clickhouse_http_port, paths["raw_features"])

        log("(b) clickhouse-client INSERT ... FORMAT Native of the same rows")
        reference = measure_reference(ch, port, work, paths)
        results["client_startup_seconds"] = reference.pop("_client_startup_seconds")
        results["reference"] = reference

        log("(c) checksums: file_digest vs sha256sum")
        results["tables"], results["checksums"] = summarise(paths, results["load"], reference,
                                                            measure_checksums(paths))

        if rss_rows:
            log(f"(d) peak RSS loading a raw_features file of {rss_rows:,} rows")
            results["rss_large"] = measure_large_rss(ch, port, work, rss_rows)

        log(f"(e) RunDaily for one and for three networks, {rundaily_rows:,} feature rows each")
        results["rundaily"] = measure_rundaily(ch, servers, work, rundaily_rows)

        s3_megabytes = env_int("BENCH_S3_MB", 500)
        log(f"(f) S3 download from moto, raw_features {s3_megabytes} MB")
        results["s3_download"] = measure_s3_download(work, paths, s3_megabytes)

        log("(g) RunDaily against the floor, one network, one worker")
        results["floor"] = measure_against_floor(ch, servers, work, paths, reference)
        log("(i) RunDaily on a day in the producer's format")
        results["producer_format"] = measure_producer_format(ch, servers, work, rows,
                                                             results["floor"]["rundaily_seconds"])
        if rss_rows:
            log(f"(g) RunDaily's peak RSS at {rss_rows:,} feature rows")
            results["rundaily_large"] = measure_large_rundaily_rss(ch, servers, work, rss_rows)

        peak = max([results["rss"]["peak_rss_mb"]] + ([results["rss_large"]["peak_rss_mb"]] if rss_rows else []))
        results["targets"] = evaluate_targets({
            "raw_features_ratio": results["tables"]["raw_features"]["ratio"],
            "peak_rss_mb": peak,
            "checksum_ratio": results["checksums"]["total"]["ratio"],
            "rundaily_ratio": results["rundaily"]["ratio"],
            "s3_rss_growth_mb": results["s3_download"]["peak_rss_mb"] - results["s3_download"]["baseline_rss_mb"],
            "floor_ratio": results["floor"]["ratio"],
            "rundaily_peak_rss_mb": max([results["floor"]["peak_rss_mb"]] + (
                [results["rundaily_large"]["peak_rss_mb"]] if rss_rows else [])),
        })
        print(report(results))
        path = write_results(results)
        print(f"\nFigures: {os.path.relpath(path, REPO)} (and bench/results/latest.json)")
    finally:
        servers.stop()
        if keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
