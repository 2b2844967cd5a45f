"""The daily pipeline, one task per step:

    RunDaily(date) -> Cleanup -> LoadTable x4 -> VerifyChecksums -> ValidateMeta -> DownloadSOT

Each task writes a marker target last. Bad input raises SnapshotError, whose
one-line message names network, date, file and reason; the download
directory is then removed so that the retry downloads afresh."""
import atexit
import datetime as dt
import fcntl
import json
import logging
import os
import shutil
import signal
import sys
import threading
import time
import uuid
from contextlib import ExitStack, contextmanager

import luigi
import redis
from clickhouse_driver.errors import Error as ClickHouseError

from targets import ClickHouseMarkerTarget, RedisMarkerTarget
from targets.redis_marker import marker_key

from . import alerts, clickhouse, disk, leases, loader, scheduler
from .config import ConfigError, Settings, check_network, known_network
from .errors import OneLineFailure, SnapshotError, WithoutTracebacks, one_line
from .meta import META_FILENAME, TABLES, MetaError, file_digest, parse_meta
from .resources import clickhouse_client, failed_server, redis_client
from .schema import TABLES as TABLE_SCHEMAS
from .sources import DIRECTORY_MODE, NoSpace, NotPublished, SourceUnavailable, UnsafeFile, open_source
from .status import loaded_days

logger = logging.getLogger("workflows")
logging.getLogger("luigi-interface").addFilter(WithoutTracebacks())
logging.getLogger("clickhouse_driver.connection").addFilter(WithoutTracebacks(always=True))

DOWNLOAD_STAMP = ".download"  # written last into a download; holds its id
ARRIVED_CHECKSUMS = ".arrived.json"  # {filename: "algorithm:hex"} of the bytes as they arrived
MAX_REFETCHES = 3  # downloads removed under a waiting step before it gives up
LAST_FAILURE_KEPT_SECONDS = 30 * 86400
STEPS = ("download", "validate", "checksums", "load", "cleanup")  # in the order they run
# luigid runs at most [resources] clickhouse_loads (luigi.cfg) of the steps
# that load into ClickHouse at once, whatever the number of workers and hosts
LOAD_RESOURCE = "clickhouse_loads"


def configured(read, *args):
    """`read(*args)`, or the run stops here, before any I/O, with one line
    naming the setting that is wrong."""
    try:
        return read(*args)
    except ConfigError as exc:
        raise SystemExit(f"configuration error: {exc}") from None


def failure_reason(exc):
    """The one line a failure is reported as."""
    return str(exc) if isinstance(exc, OneLineFailure) else one_line(exc)


def last_failure_key(network, date, window_days):
    return marker_key(network, date, window_days, "last_failure")


def republished_labels_key(network, date, window_days):
    """The day loaded labels republished since its export: {"meta": sha256, "file": sha256}."""
    return marker_key(network, date, window_days, "labels_republished")


def download_folder_failure(settings, exc):
    return f"download folder SOT_DOWNLOAD_DIR={settings.download_dir}: {exc.strerror or exc}: {exc.filename}"


def yesterday():
    return dt.datetime.now(dt.timezone.utc).date() - dt.timedelta(days=1)


def download_dir(settings, network, date, window_days):
    return os.path.join(settings.download_dir, network, date.isoformat(), str(int(window_days)))


class BadParameter(OneLineFailure):
    """A command-line value that is not what the parameter takes."""


def one_line_parse(parameter_class, expected):
    """`parameter_class`, a value of which that does not parse stops the run with one line."""
    class Parameter(parameter_class):
        def parse(self, s):
            try:
                return super().parse(s)
            except ValueError:
                raise BadParameter(f"{s!r} is not {expected}") from None
    return Parameter


Day = one_line_parse(luigi.DateParameter, "a date (YYYY-MM-DD)")
Days = one_line_parse(luigi.OptionalIntParameter, "a whole number of days")


class Terminated(BaseException):
    """SIGTERM arrived while a step ran. Not an Exception, like
    KeyboardInterrupt, so that no `except Exception` on the way (luigi's
    status reporting, for one) swallows it."""


_step_running = False


def stop_asking_for_work():
    """Has this process's luigi worker finish what it runs and then end,
    asking luigid for nothing more (luigi's own SIGUSR1 handler,
    Worker.handle_interrupt)."""
    phase_out = signal.getsignal(signal.SIGUSR1)
    if callable(phase_out):
        phase_out(signal.SIGUSR1, None)


def _on_sigterm(signum, frame):
    # stop asking luigid for work, and end the running step: its cleanup
    # drops the insert and the staging table, and the worker tells luigid it
    # failed, so a rerun need not wait for luigid to notice a vanished worker
    stop_asking_for_work()
    if _step_running:
        raise Terminated("stopped by SIGTERM")


@contextmanager
def stopped_by_sigterm():
    """Runs a step so that SIGTERM (systemd, `docker stop`) ends it cleanly.
    Signal handlers live in a process's main thread: the worker's with one
    worker process, each task's own with several."""
    global _step_running
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_sigterm)
    _step_running = True
    try:
        yield
    finally:
        _step_running = False


class IngestionTask(luigi.Task):
    """Shared parameters, clients and failure handling of every step."""

    network = luigi.Parameter(description="a network of INGESTION_NETWORKS, e.g. ethereum")
    date = Day(description="the snapshot's day, YYYY-MM-DD")
    window_days = Days(description="the snapshot's window in days, e.g. 195")

    _schemas_ready = set()  # (pid, server, database) whose tables exist, checked once per process
    _unavailable_noticed = False  # a notice that a server does not answer was sent by this process

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.settings = configured(Settings.from_env)
        configured(check_network, self.network)
        scheduler.check_reachable()

    @property
    def retry_count(self):
        return self.settings.retry_attempts

    @property
    def download_dir(self):
        return download_dir(self.settings, self.network, self.date, self.window_days)

    @property
    def database(self):
        return self.settings.database_for(self.network)

    @property
    def redis(self):
        return redis_client(self.settings)

    @property
    def clickhouse(self):
        ch = clickhouse_client(self.settings)
        key = (os.getpid(), self.settings.clickhouse_replicas, self.database)
        if key not in self._schemas_ready:
            try:
                clickhouse.ensure_schema(ch, self.database, self.settings.clickhouse_cluster)
            except clickhouse.LayoutMismatch as exc:
                raise TablesNeedMigration(f"{exc}; run python -m workflows migrate --network {self.network}"
                                          " (--dry-run to see what it does)") from None
            self._schemas_ready.add(key)
        return ch

    def database_exists(self):
        """Whether the network's database is there, without creating it
        (for commands that only look)."""
        return clickhouse.database_exists(clickhouse_client(self.settings), self.database)

    def sweep_staging(self, ch):
        """Takes this process's staging lease, then drops the staging tables
        whose owner's lease has lapsed (a load that died, on any host)."""
        leases.hold(self.redis)
        clickhouse.sweep_staging(ch, self.database, lambda owners: leases.holders(self.redis, owners))

    def download_id(self):
        """Id of the download on disk, or None when there is none."""
        try:
            with open(os.path.join(self.download_dir, DOWNLOAD_STAMP)) as stamp:
                return stamp.read().strip() or None
        except FileNotFoundError:
            return None

    def arrived_checksums(self):
        """{filename: "algorithm:hex"} of the download's files as their bytes arrived; {} when not taken."""
        try:
            with open(os.path.join(self.download_dir, ARRIVED_CHECKSUMS)) as stream:
                return json.load(stream)
        except FileNotFoundError:
            return {}

    def meta(self):
        """{table: FileEntry} from the downloaded META.json."""
        try:
            with open(os.path.join(self.download_dir, META_FILENAME), "rb") as stream:
                return parse_meta(stream.read())
        except FileNotFoundError:
            raise self.bad_input(META_FILENAME, "missing") from None
        except (OSError, MetaError) as exc:
            raise self.bad_input(META_FILENAME, exc) from None

    def redis_marker(self, step, token):
        return RedisMarkerTarget(self.redis, marker_key(self.network, self.date, self.window_days, step), token)

    def download_marker(self, step):
        """A marker that vouches for this host's download (its id the token):
        each host under one luigid downloads and checks its own copy, and
        none overwrites another's."""
        return self.redis_marker(f"{step}:{self.settings.worker_host}", self.download_id())

    def bad_input(self, filename, reason):
        return SnapshotError(self.network, self.date.isoformat(), filename, reason)

    def report(self, message, percent=None):
        """Progress shown in luigid's visualiser while the task runs."""
        # luigi attaches these callbacks only while the task runs in a worker
        set_message, set_percentage = (getattr(self, "set_status_message", None),
                                       getattr(self, "set_progress_percentage", None))
        if set_message:
            set_message(message)
        if set_percentage and percent is not None:
            set_percentage(int(percent))

    changes_download = False  # replaces or removes the download: runs alone on it

    def run(self):
        # A bad-input failure elsewhere, or the cleanup of a run that does not
        # share our luigid, removes the download that the inputs vouched for;
        # fetch and check it again (dynamic dependencies) rather than fail on
        # a missing dependency. luigi.cfg turns off the worker's own check:
        # check_unfulfilled_deps = false.
        try:
            for _ in range(MAX_REFETCHES):
                with self.download_lock(exclusive=self.changes_download):
                    if self.done_meanwhile():
                        return
                    stale = [task for task in luigi.task.flatten(self.requires()) if not task.checked_complete()]
                    if not stale:
                        with stopped_by_sigterm():
                            self.execute()
                        return
                yield stale  # outside the lock: the download they redo takes it exclusively
            raise RuntimeError(f"the download was removed {MAX_REFETCHES} times while this step waited for it")
        except OSError as exc:
            if exc.filename is None or not str(exc.filename).startswith(self.settings.download_dir):
                raise
            failure = DownloadFailed(f"{self.network} {self.date}: {download_folder_failure(self.settings, exc)}")
            self.report(str(failure))
            raise failure from None
        except BaseException as exc:
            # the visualiser's status shows the reason, not the last progress;
            # luigi detaches the status callback before on_failure runs
            self.report(failure_reason(exc))
            raise

    def complete(self):
        """luigi's check while it schedules. A check that fails ends the run
        (exit 35, [retcode] scheduling_error): luigi marks the task UNKNOWN
        and never schedules it, so under keep_alive a pending task that
        needs it (one whose own check needed no server: a download on disk)
        would have the worker wait for it forever."""
        try:
            return self.checked_complete()
        except BaseException:
            stop_asking_for_work()
            raise

    def checked_complete(self):
        """Whether the step is done, with a server that does not answer
        reported in one line and one notice per process (luigi would log a
        traceback and exit 35 without saying which server)."""
        try:
            return self.is_complete()
        except (redis.RedisError, ClickHouseError, OSError) as exc:
            reason = f"{self.network} {self.date}: cannot check {self.task_family}: {self.unavailable(exc)}"
            if not IngestionTask._unavailable_noticed:
                IngestionTask._unavailable_noticed = True
                logger.error(reason)
                alerts.send(alerts.notice(self.network, self.date, self.task_family, reason, 0,
                                          getattr(self, "table", None), event="cannot_check"),
                            self.settings.alert_webhook_url)
            raise ServerUnavailable(reason) from None

    def unavailable(self, exc):
        """What failed, named: the server, or the download folder."""
        if isinstance(exc, OSError) and exc.filename is not None:  # a file, not a socket
            return download_folder_failure(self.settings, exc)
        return failed_server(self.settings, exc)

    def is_complete(self):
        return super().complete()

    def done_meanwhile(self):
        """Another run did this step while this one waited for its inputs."""
        return self.checked_complete()

    @contextmanager
    def download_lock(self, exclusive):
        """The day's download, held shared by the steps that read it and
        exclusively by those that replace or remove it, across processes."""
        parent = os.path.dirname(self.download_dir)
        os.makedirs(parent, exist_ok=True)
        with open(os.path.join(parent, f".{int(self.window_days)}.lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            yield

    def execute(self):
        raise NotImplementedError

    def remove_output(self):
        """Deletes this step's target, so that the next run redoes it;
        returns whether there was one."""
        return self.output().remove()

    def attempts(self):
        """This step's failed attempts (alerts.Attempts)."""
        return alerts.Attempts(self.redis, marker_key(self.network, self.date, self.window_days,
                                                      f"failures:{self.task_id}"),
                               os.path.join(self.settings.download_dir, ".failures", self.task_id))

    def last_failure_key(self):
        return last_failure_key(self.network, self.date, self.window_days)

    def record_failure(self, reason, attempts):
        """The day's last failure, for `status`, until the day is done."""
        failure = {"task": self.task_family, "table": getattr(self, "table", None), "reason": reason,
                   "attempts": attempts, "of": self.retry_count, "at": int(time.time())}
        try:
            self.redis.set(self.last_failure_key(), json.dumps(failure), ex=LAST_FAILURE_KEPT_SECONDS)
        except redis.RedisError:
            pass  # already logged by the failure count
    def on_failure(self, exception):
        if isinstance(exception, SnapshotError):
            # the retry downloads afresh, rather than fail again on this copy
            shutil.rmtree(self.download_dir, ignore_errors=True)
        reason = failure_reason(exception)
        if isinstance(exception, SnapshotError):
            logger.error("bad input: %s", reason)
        # not published yet, a server down, no room, bad input: the one line says it all
        explanation = reason if isinstance(exception, OneLineFailure) else super().on_failure(exception)
        attempts = self.attempts().add()
        if attempts >= self.retry_count:
            when = f"attempt {attempts} of {self.retry_count}; giving up"
            alerts.send(alerts.notice(self.network, self.date, self.task_family, reason, attempts,
                                      getattr(self, "table", None)), self.settings.alert_webhook_url)
            self.attempts().clear_if_possible()  # luigid gives the task a new round after disable_persist
        else:
            when = f"attempt {attempts} of {self.retry_count}; next in {alerts.retry_delay()} s"
        logger.warning("%s %s %s: %s", self.network, self.date, self.task_family, when)
        self.record_failure(reason, attempts)
        return f"{explanation} ({when})"

    def on_success(self):
        self.attempts().clear_if_possible()


class ServerUnavailable(OneLineFailure):
    """Redis or ClickHouse did not answer while checking a step; the message is one line."""


class TablesNeedMigration(OneLineFailure):
    """The network's database holds tables of the system this pipeline
    replaces, which cannot take a day swap: nothing is loaded until they are migrated."""


class DownloadFailed(OneLineFailure):
    """Not the snapshot's fault (no room for it, the store down, ...): one line, and the retry tries again."""


class SnapshotNotPublished(OneLineFailure):
    """No META.json at the source yet: not bad input; the retry looks again."""


class DownloadSOT(IngestionTask):
    """Copies the snapshot into {SOT_DOWNLOAD_DIR}/{network}/{date}/{window_days}/."""

    changes_download = True

    def output(self):
        return luigi.LocalTarget(os.path.join(self.download_dir, DOWNLOAD_STAMP))

    def remove_output(self):
        existed = os.path.isdir(self.download_dir)
        shutil.rmtree(self.download_dir, ignore_errors=True)
        return existed

    def execute(self):
        source = open_source(self.settings)
        parent = os.path.dirname(self.download_dir)
        os.makedirs(parent, exist_ok=True)
        # a download killed half-way leaves only a partial directory behind
        for name in os.listdir(parent):
            if name.startswith(f"{self.window_days}.partial-"):
                shutil.rmtree(os.path.join(parent, name), ignore_errors=True)
        partial = f"{self.download_dir}.partial-{uuid.uuid4().hex}"
        os.makedirs(partial, mode=DIRECTORY_MODE)
        try:
            arrived = source.fetch(self.network, self.date, self.window_days, partial, self.report_every_percent())
            with open(os.path.join(partial, ARRIVED_CHECKSUMS), "w") as stream:
                json.dump(arrived, stream)
            with open(os.path.join(partial, DOWNLOAD_STAMP), "w") as stamp:
                stamp.write(uuid.uuid4().hex)
            shutil.rmtree(self.download_dir, ignore_errors=True)
            os.rename(partial, self.download_dir)
        except NotPublished as exc:
            raise SnapshotNotPublished(f"{self.network} {self.date}: {exc}") from None
        except UnsafeFile as exc:
            raise self.bad_input(exc.filename, exc.reason) from None
        except NoSpace as exc:
            raise DownloadFailed(f"{self.network} {self.date} download to {self.settings.download_dir}:"
                                 f" {exc}") from None
        except OSError as exc:
            if not disk.is_full(exc):
                raise
            free = shutil.disk_usage(self.settings.download_dir).free
            raise DownloadFailed(f"{self.network} {self.date} download to {self.settings.download_dir}: no space left"
                                 f" while writing {os.path.basename(exc.filename or '') or 'a file'}"
                                 f" ({free / 1e6:,.0f} MB free)") from None
        except SourceUnavailable as exc:
            raise DownloadFailed(f"{self.network} {self.date} download: {exc}") from None
        finally:
            shutil.rmtree(partial, ignore_errors=True)

    def report_every_percent(self):
        """report(), skipping the calls to luigid that would not move the percentage."""
        shown = [None]

        def progress(message, percent):
            if int(percent) != shown[0]:
                shown[0] = int(percent)
                self.report(message, percent)
        return progress


class ValidateMeta(IngestionTask):
    """META.json is there, parses, and lists the four tables with
    well-formed checksums and plain file names."""

    def requires(self):
        return DownloadSOT(self.network, self.date, self.window_days)

    def output(self):
        # vouches for the download it checked, and only while that is on disk
        return self.download_marker("validate")

    def execute(self):
        self.meta()
        self.output().touch()


class VerifyChecksums(IngestionTask):
    """Every listed file is present, matches its checksum, and fits its
    table, so that a bad snapshot is refused before any table is loaded.
    Proving a file fits is staging it: streaming it into a staging table of
    its own, which LoadTable then swaps in, so each file is decoded once. A
    table already loaded is checked without being staged."""

    resources = {LOAD_RESOURCE: 1}

    def requires(self):
        return ValidateMeta(self.network, self.date, self.window_days)

    def output(self):
        return self.download_marker("checksums")

    def execute(self):
        entries = list(self.meta().values())
        files = [e for e in entries if e.filename]  # a table the producer left out has no rows that day
        paths = {e.filename: os.path.join(self.download_dir, e.filename) for e in files}
        for entry in files:
            if not os.path.isfile(paths[entry.filename]):
                raise self.bad_input(entry.filename, "listed in META.json but missing")
        self.verify_counts(self.verify_checksums(files, paths), paths)
        sizes = {name: os.path.getsize(path) for name, path in paths.items()}
        checked, total = 0, sum(sizes.values()) or 1
        ch = self.clickhouse
        loaded = loaded_days(ch, self.database, self.network, [self.date], self.window_days).get(self.date, {})
        self.sweep_staging(ch)
        # every table is staged before any is handed to its load, so a file
        # that does not fit leaves them all untouched
        with ExitStack() as staging:
            staged = {}
            for entry in entries:
                if entry.table not in loaded:
                    staged[entry.table] = staging.enter_context(clickhouse.staging_table(
                        ch, self.database, TABLE_SCHEMAS[entry.table], self.date, self.window_days))
                size = sizes.get(entry.filename, 0)
                self.stage_or_check(entry, paths.get(entry.filename), staged.get(entry.table), checked, size, total)
                checked += size
            download = self.download_id()
            for table, name in staged.items():
                clickhouse.keep_staged(ch, self.database, name, table, self.date, self.window_days, download)
        self.output().touch()

    def verify_checksums(self, entries, paths):
        """Against the checksums taken as the bytes arrived; a file without
        one is hashed here. The producer's labels file is replaced in place
        when the labels change: one that differs from its checksum at export
        time is the current list, loaded, and said (log and `status`).
        Returns the entries whose file is the one META.json describes."""
        arrived = self.arrived_checksums()
        described = []
        for entry in entries:
            actual = arrived.get(entry.filename)
            if actual is None:
                actual = f"{entry.algorithm}:{file_digest(paths[entry.filename], entry.algorithm)}"
            actual = actual.split(":", 1)[1]
            if actual == entry.digest:
                described.append(entry)
                continue
            if entry.shared_labels:
                self.note_republished_labels(entry, actual)
                continue
            raise self.bad_input(entry.filename, f"{entry.algorithm} checksum mismatch: META.json has"
                                                 f" {entry.digest}, file has {actual}")
        return described

    def note_republished_labels(self, entry, actual):
        note = (f"{self.network} {self.date} {entry.filename}: the labels were republished since the export"
                f" (META.json has sha256 {entry.digest}, the current file {actual}); loading the current file")
        logger.warning(note)
        self.redis.set(republished_labels_key(self.network, self.date, self.window_days),
                       json.dumps({"meta": entry.digest, "file": actual}), ex=LAST_FAILURE_KEPT_SECONDS)

    def verify_counts(self, entries, paths):
        """The rows each file's footer declares against META.json's count, where it gives one."""
        for entry in entries:
            if entry.rows is None:
                continue
            try:
                rows = loader.file_rows(paths[entry.filename])
            except loader.FileMismatch as exc:
                raise self.bad_input(entry.filename, exc) from None
            if rows != entry.rows:
                raise self.bad_input(entry.filename, f"META.json counts {entry.rows:,} rows of {entry.table},"
                                                     f" the file holds {rows:,}")

    def stage_or_check(self, entry, path, staging, before, size, total):
        """Streams one file into `staging`, or only checks it when its table
        is loaded already (no staging). No file (a table the producer left
        out) stages no rows. The percentage is of all the files' bytes, so
        it only grows."""
        table = TABLE_SCHEMAS[entry.table]
        verb = "staged" if staging else "checked"

        def progress(done, rows):
            self.report(f"{entry.filename}: {done:,} / {rows:,} rows {verb}",
                        100 * (before + size * done / max(rows, 1)) / total)
        try:
            if staging:
                loader.stage_parquet(self.clickhouse, self.database, table, path, staging, self.date,
                                     self.window_days, self.network, progress, self.settings.allow_empty_day)
            elif path:
                loader.check_parquet(path, table, self.date, self.window_days, self.network, progress)
        except loader.FileMismatch as exc:
            raise self.bad_input(entry.filename or f"{entry.table} (no file)", exc) from None


class LoadTable(IngestionTask):
    """Replaces the table's (processing_date, window_days) slice with the file's rows."""

    table = luigi.ChoiceParameter(choices=TABLES, description="the table to load: " + ", ".join(TABLES))
    resources = {LOAD_RESOURCE: 1}

    def requires(self):
        return VerifyChecksums(self.network, self.date, self.window_days)

    def output(self):
        return ClickHouseMarkerTarget(self.clickhouse, self.database, self.network, self.date, self.window_days,
                                      self.table)

    def execute(self):
        entry = self.meta()[self.table]
        path = os.path.join(self.download_dir, entry.filename) if entry.filename else None
        table, ch = TABLE_SCHEMAS[self.table], self.clickhouse
        self.sweep_staging(ch)
        try:
            rows, accounting = loader.file_footer(path, table) if path else (0, ((), ()))
            staged = clickhouse.claim_staged(ch, self.database, self.table, self.date, self.window_days,
                                             self.download_id(), rows)
            if staged:
                self.report(f"{self.table}: swapping in {rows:,} staged rows", 0)
                with clickhouse.dropped_after(ch, self.database, staged):
                    loader.swap_in(ch, self.database, table, staged, self.date, self.window_days, rows,
                                   self.settings.allow_empty_day)
            else:  # swept, staged through another replica, or taken by a concurrent run: load the file
                if path:
                    self.verify_again(entry, path)
                rows = loader.load_parquet(ch, self.database, table, path, self.date, self.window_days,
                                           self.network, self.report_rows, self.settings.allow_empty_day)
        except loader.FileMismatch as exc:
            raise self.bad_input(entry.filename or f"{self.table} (no file)", exc) from None
        ignored, defaulted = accounting
        if ignored or defaulted:
            logger.info("%s %s %s: file columns ignored: %s; table columns that took their DEFAULT: %s",
                        self.network, self.date, self.table, ", ".join(ignored) or "none",
                        ", ".join(defaulted) or "none")
        self.output().touch(rows, accounting)
        self.report(f"{self.table}: {rows:,} rows loaded", 100)

    def verify_again(self, entry, path):
        """The file on disk is still the one VerifyChecksums proved: hashed
        again, against the checksum taken as it arrived (META.json's, or for
        republished labels the current file's)."""
        expected = self.arrived_checksums().get(entry.filename, f"{entry.algorithm}:{entry.digest}")
        actual = f"{entry.algorithm}:{file_digest(path, entry.algorithm)}"
        if actual != expected:
            raise self.bad_input(entry.filename, f"changed on disk since it was verified: {entry.algorithm}"
                                                 f" {expected.split(':', 1)[1]} then, {actual.split(':', 1)[1]} now")

    def report_rows(self, done, total):
        self.report(f"{self.table}: {done:,} / {total:,} rows", 100 * done / max(total, 1))


class Cleanup(IngestionTask):
    """Removes the download once all four tables are loaded."""

    changes_download = True

    def done_meanwhile(self):
        # complete() follows the table markers; removing the download again is harmless
        return False

    def requires(self):
        return [LoadTable(self.network, self.date, self.window_days, table) for table in TABLES]

    def output(self):
        return self.redis_marker("cleanup", "done")

    def is_complete(self):
        # and this host holds no copy of the day: a host under the same
        # luigid that downloaded it too removes its own at its next run
        return not os.path.isdir(self.download_dir) and self.date in self.done_dates([self])

    @staticmethod
    def day_states(cleanups, read_only=False):
        """{date: ({table: rows loaded}, cleanup marker set)} for these tasks
        of one network and window, in two queries. `read_only`: creates
        nothing, and a database that is not there has loaded nothing."""
        first = cleanups[0]
        marked = RedisMarkerTarget.exist_all([c.output() for c in cleanups])
        if read_only and not first.database_exists():
            loaded = {}
        else:
            loaded = loaded_days(clickhouse_client(first.settings) if read_only else first.clickhouse, first.database,
                                 first.network, [c.date for c in cleanups], first.window_days)
        return {c.date: (loaded.get(c.date, {}), is_marked) for c, is_marked in zip(cleanups, marked)}

    @staticmethod
    def is_done(loaded, marked):
        # a reset table marker makes the day incomplete again
        return marked and set(TABLES) <= set(loaded)

    @staticmethod
    def done_dates(cleanups):
        """The dates of these tasks (one network and window) that are done."""
        return {date for date, state in Cleanup.day_states(cleanups).items() if Cleanup.is_done(*state)}

    def execute(self):
        clickhouse.drop_staged(self.clickhouse, self.database, self.date, self.window_days)
        shutil.rmtree(self.download_dir, ignore_errors=True)
        self.output().touch()
        self.redis.delete(self.last_failure_key())


_summarized = {}  # (network, date, window_days) of this `luigi` command's days
_process_started = time.time()


def summarize_at_exit(networks, date, window_days):
    """When this `luigi` command ends: one line per day that failed in it,
    with its last reason (luigi's own summary lists tasks, and collapses
    them), and one per task that luigid holds disabled, which luigi only
    calls "not granted run permission"."""
    if os.path.basename(sys.argv[0]) != "luigi":
        return
    if not _summarized:
        atexit.register(_summarize)
    for network in networks:
        _summarized[(network, date, int(window_days))] = True


def _summarize():
    days = list(_summarized)
    try:
        client = redis_client(Settings.from_env())
        failures = client.mget([last_failure_key(*day) for day in days])
    except (ConfigError, redis.RedisError):
        return
    for (network, date, _), failure in zip(days, failures):
        if failure and json.loads(failure)["at"] >= int(_process_started):
            logger.error("%s %s: %s", network, date, describe_failure(json.loads(failure)))
    if "--local-scheduler" not in sys.argv:  # its disabling ends with it
        scheduler.explain_disabled([task for day in days for task in day_tasks(*day)])


def describe_failure(failure):
    """A day's last failure (IngestionTask.record_failure) as one line."""
    step = failure["task"] + (f" {failure['table']}" if failure.get("table") else "")
    given_up = ", gave up" if failure["attempts"] >= failure["of"] else ""
    return f"failed: {step}, attempt {failure['attempts']} of {failure['of']}{given_up}: {failure['reason']}"


def step_tasks(step, network, date, window_days, table=None):
    """The tasks of one step (STEPS) for one network and day."""
    if step == "load":
        return [LoadTable(network, date, window_days, t) for t in ([table] if table else TABLES)]
    cls = {"download": DownloadSOT, "validate": ValidateMeta, "checksums": VerifyChecksums, "cleanup": Cleanup}[step]
    return [cls(network, date, window_days)]


def day_tasks(network, date, window_days):
    """Every step of one network's day."""
    return [task for step in STEPS for task in step_tasks(step, network, date, window_days)]


class RunDaily(luigi.WrapperTask):
    """All networks' pipelines for one date."""

    date = Day(default=yesterday(), description="the snapshots' day, YYYY-MM-DD; default yesterday"
                                                                " (UTC)")
    networks = luigi.Parameter(default="", description="comma-separated networks; default INGESTION_NETWORKS")
    window_days = Days(default=None, description="the snapshots' window in days; default"
                                                                       " INGESTION_WINDOW_DAYS")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        settings = configured(Settings.from_env)  # once, not at every complete()
        self.resolved_networks = [configured(known_network, n.strip(), settings)
                                  for n in self.networks.split(",") if n.strip()] or list(settings.networks)
        scheduler.check_reachable()
        self.resolved_window_days = self.window_days or settings.window_days
        summarize_at_exit(self.resolved_networks, self.date, self.resolved_window_days)

    def requires(self):
        return [Cleanup(network, self.date, self.resolved_window_days) for network in self.resolved_networks]


    @classmethod
    def bulk_complete(cls, dates):
        """For RangeDaily: the dates already done, two queries per network
        for the whole range, without touching the SOT."""
        days = [cls(date=date) for date in dates]
        cleanups = {}
        for day in days:
            for cleanup in day.requires():
                cleanups.setdefault((cleanup.network, cleanup.window_days), []).append(cleanup)
        done = {day.date for day in days}
        for same_network in cleanups.values():
            done &= Cleanup.done_dates(same_network)
        return [day.date for day in days if day.date in done]
