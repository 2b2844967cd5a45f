"""The shared step: its parameters, clients and download, the lock on it,
SIGTERM, and the run that fetches the download again when it was removed
meanwhile. Failure accounting is in failures."""
import fcntl
import json
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, ClassVar, TypeVar

import luigi
import redis
from clickhouse_driver import Client
from clickhouse_driver.errors import Error as ClickHouseError

from targets import RedisMarkerTarget

from .. import alerts, clickhouse, leases, loader, scheduler, state
from ..clickhouse import Destination
from ..clients import clickhouse_client, failed_server, redis_client
from ..config import ConfigError, Settings, network_of_its_own
from ..errors import (
    AtLuigisLevel,
    NoPasswords,
    OneLineFailure,
    OneLineTracebacks,
    QuietLuigi,
    SnapshotError,
    WithoutTracebacks,
    shortened,
)
from ..meta import META_FILENAME, FileEntry, MetaError, parse_meta
from ..schema import SCHEMAS
from ..slices import Slice
from . import failures
from .failures import failure_reason
from .params import Day, WindowDays

logger = logging.getLogger("workflows")
logging.getLogger("luigi-interface").addFilter(WithoutTracebacks())
logging.getLogger("luigi-interface").addFilter(QuietLuigi())
logging.getLogger("luigi-interface").addFilter(NoPasswords())
logging.getLogger("clickhouse_driver.connection").addFilter(OneLineTracebacks())
_lines = logging.StreamHandler()  # the pipeline's own lines go where luigi's do: stderr
_lines.addFilter(AtLuigisLevel())
logger.addHandler(_lines)
logger.setLevel(logging.INFO)
# a failed step's status in the visualiser: its reason without the day (the task's parameters say it), cut
# to what the status box shows without scrolling; the error popup has it all
STATUS_MESSAGE_CHARS = 64

MAX_REFETCHES = 3  # downloads removed under a waiting step before it gives up
# luigid runs at most [resources] clickhouse_loads (luigi.cfg) of the steps
# that load into ClickHouse at once, whatever the number of workers and hosts
LOAD_RESOURCE = "clickhouse_loads"
T = TypeVar("T")


def setting_or_exit(read: Callable[..., T], *args: Any) -> T:
    """`read(*args)`, or the run stops here, before any I/O, with one line
    naming the setting that is wrong."""
    try:
        return read(*args)
    except ConfigError as exc:
        raise SystemExit(f"configuration error: {exc}") from None


def download_folder_failure(settings: Settings, exc: OSError) -> str:
    return f"download folder SOT_DOWNLOAD_DIR={settings.download_dir}: {exc.strerror or exc}: {exc.filename}"


class ServerUnavailable(OneLineFailure):
    """Redis or ClickHouse did not answer while checking a step; the message is one line."""


class TablesNeedMigration(OneLineFailure):
    """The network's database holds tables of the system this pipeline
    replaces, which cannot take a day swap: nothing is loaded until they are migrated."""


class DownloadFailed(OneLineFailure):
    """Not the snapshot's fault (no room for it, the store down, ...): one line, and the retry tries again."""


class Terminated(BaseException):
    """SIGTERM arrived while a step ran. Not an Exception, like
    KeyboardInterrupt, so that no `except Exception` on the way (luigi's
    status reporting, for one) swallows it."""


_step_running = False


def stop_asking_for_work() -> None:
    """Has this process's luigi worker finish what it runs and then end,
    asking luigid for nothing more (luigi's own SIGUSR1 handler,
    Worker.handle_interrupt)."""
    phase_out = signal.getsignal(signal.SIGUSR1)
    if callable(phase_out):
        phase_out(signal.SIGUSR1, None)


def _on_sigterm(signum: int, frame: object) -> None:
    # stop asking luigid for work, and end the running step: its cleanup
    # drops the insert and the staging table, and the worker tells luigid it
    # failed, so a rerun need not wait for luigid to notice a vanished worker
    stop_asking_for_work()
    if _step_running:
        raise Terminated("stopped by SIGTERM")


@contextmanager
def stopped_by_sigterm() -> Iterator[None]:
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
    """Shared parameters, clients and download of every step."""

    network = luigi.Parameter(description="a network of INGESTION_NETWORKS, e.g. ethereum")
    date = Day(description="the snapshot's day, YYYY-MM-DD")
    window_days = WindowDays(description="the snapshot's window in days, e.g. 195")

    changes_download = False  # replaces or removes the download: runs alone on it
    step_name = ""  # the step of state.STEPS this task is (a load: load)
    outcome = "done"  # what the step did, for its one line in the log (execute() sets it)

    # (pid, server, database) whose tables exist, checked once per process
    _schemas_ready: ClassVar[set[tuple]] = set()
    _unavailable_noticed: ClassVar[bool] = False  # a notice that a server does not answer was sent by this process

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.settings = setting_or_exit(Settings.from_env)
        setting_or_exit(network_of_its_own, self.network, self.settings)
        scheduler.check_reachable()
        self.day = Slice(self.network, self.date, int(self.window_days))

    @property
    def retry_count(self) -> int:
        return self.settings.retry_attempts

    @property
    def download_dir(self) -> str:
        return state.download_dir(self.settings, self.day)

    @property
    def database(self) -> str:
        return self.settings.database_for(self.network)

    @property
    def redis(self) -> redis.Redis:
        return redis_client(self.settings)

    @property
    def clickhouse(self) -> Client:
        """The loads' ClickHouse, the network's tables made or checked first (once per process)."""
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

    def destination(self, table_name: str) -> Destination:
        return Destination(self.clickhouse, self.database, SCHEMAS[table_name])

    def day_load(self, table_name: str) -> loader.DayLoad:
        return loader.DayLoad(self.destination(table_name), self.day, self.settings.allow_empty_day)

    def sweep_staging(self, ch: Client) -> None:
        """Takes this process's staging lease, then drops the staging tables
        whose owner's lease has lapsed (a load that died, on any host)."""
        leases.hold(self.redis)
        clickhouse.sweep_staging(ch, self.database, lambda owners: leases.holders(self.redis, owners))

    def download_id(self) -> str | None:
        """Id of the download on disk, or None when there is none."""
        return state.download_id(self.settings, self.day)

    def arrived_checksums(self) -> dict[str, str]:
        """{filename: "algorithm:hex"} of the download's files as their bytes arrived; {} when not taken."""
        try:
            with open(os.path.join(self.download_dir, state.ARRIVED_CHECKSUMS)) as stream:
                return json.load(stream)
        except FileNotFoundError:
            return {}

    def meta(self) -> dict[str, FileEntry]:
        """{table: FileEntry} from the downloaded META.json."""
        try:
            with open(os.path.join(self.download_dir, META_FILENAME), "rb") as stream:
                return parse_meta(stream.read())
        except FileNotFoundError:
            raise self.bad_input(META_FILENAME, "missing") from None
        except (OSError, MetaError) as exc:
            raise self.bad_input(META_FILENAME, exc) from None

    def download_marker(self, step: str) -> RedisMarkerTarget:
        return state.download_marker(self.redis, self.settings, self.day, step)

    def bad_input(self, filename: str, reason: object) -> SnapshotError:
        return SnapshotError(self.network, self.date.isoformat(), filename, reason)

    def report(self, message: str, percent: float | None = None) -> None:
        """Progress shown in luigid's visualiser while the task runs."""
        # luigi attaches these callbacks only while the task runs in a worker
        set_message, set_percentage = (getattr(self, "set_status_message", None),
                                       getattr(self, "set_progress_percentage", None))
        if set_message:
            set_message(message)
        if set_percentage and percent is not None:
            set_percentage(int(percent))

    def run(self) -> Iterator[list[luigi.Task]]:
        # A bad-input failure elsewhere, or the cleanup of a run that does not
        # share our luigid, removes the download that the inputs vouched for;
        # fetch and check it again (dynamic dependencies) rather than fail on
        # a missing dependency. luigi.cfg turns off the worker's own check:
        # check_unfulfilled_deps = false.
        try:
            for _ in range(MAX_REFETCHES):
                with self.download_lock():
                    if self.done_by_another_run():
                        return
                    stale = [task for task in luigi.task.flatten(self.requires()) if not task.check_done()]
                    if not stale:
                        started = time.monotonic()
                        try:
                            with stopped_by_sigterm():
                                self.execute()
                        finally:
                            self.record_seconds(time.monotonic() - started)
                        self.finished(time.monotonic() - started)
                        return
                yield stale  # outside the lock: the download they redo takes it exclusively
            raise RuntimeError(f"the download was removed {MAX_REFETCHES} times while this step waited for it")
        except OSError as exc:
            if exc.filename is None or not str(exc.filename).startswith(self.settings.download_dir):
                raise
            failure = DownloadFailed(f"{self.day}: {download_folder_failure(self.settings, exc)}")
            self.report(str(failure))
            raise failure from None
        except BaseException as exc:
            # the visualiser's status shows the reason, not the last progress,
            # and its bar no longer claims the work done; luigi detaches the
            # status callbacks before on_failure runs
            self.report(self.short_reason(exc), 0)
            raise

    def short_reason(self, exc: BaseException) -> str:
        return shortened(self.day.unprefixed(failure_reason(exc)), STATUS_MESSAGE_CHARS)

    def record_seconds(self, seconds: float) -> None:
        """How long the step's work took, done or failed, for the day's metrics."""
        table = self.step[1]
        key = state.step_seconds_key(self.day)
        try:
            with self.redis.pipeline() as batch:  # one round trip
                batch.hset(key, self.step_name + (f":{table}" if table else ""), round(seconds, 3))
                batch.expire(key, state.KEPT_SECONDS)
                batch.execute()
        except redis.RedisError:
            pass  # a step that failed on Redis says so itself

    def finished(self, seconds: float) -> None:
        """The step's one line in the log."""
        name, table = self.step
        logger.info("%s %s: %s (%.1f s)", self.day, name + (f" {table}" if table else ""), self.outcome, seconds)

    def execute(self) -> None:
        """The step's own work, its inputs in place and the download locked."""
        raise NotImplementedError

    def complete(self) -> bool:
        """luigi's check while it schedules. A check that fails ends the run
        (exit 35, [retcode] scheduling_error): luigi marks the task UNKNOWN
        and never schedules it, so under keep_alive a pending task that
        needs it (one whose own check needed no server: a download on disk)
        would have the worker wait for it forever."""
        try:
            return self.check_done()
        except BaseException:
            stop_asking_for_work()
            raise

    def check_done(self) -> bool:
        """targets_say_done(), with a server that does not answer reported
        in one line and one notice per process (luigi would log a traceback
        and exit 35 without saying which server)."""
        try:
            return self.targets_say_done()
        except (redis.RedisError, ClickHouseError, OSError) as exc:
            reason = f"{self.day}: cannot check {self.task_family}: {self.unavailable(exc)}"
            if not IngestionTask._unavailable_noticed:
                IngestionTask._unavailable_noticed = True
                logger.error(reason)
                alerts.send(alerts.notice(self.day, self.step, reason, 0, event="cannot_check"),
                            self.settings.alert_webhook_url)
            raise ServerUnavailable(reason) from None

    def targets_say_done(self) -> bool:
        """Whether the step's marker targets say it is done."""
        return super().complete()

    def done_by_another_run(self) -> bool:
        """Another run did this step while this one waited for its inputs."""
        return self.check_done()

    def unavailable(self, exc: BaseException) -> str:
        """What failed, named: the server, or the download folder."""
        if isinstance(exc, OSError) and exc.filename is not None:  # a file, not a socket
            return download_folder_failure(self.settings, exc)
        return failed_server(self.settings, exc)

    @contextmanager
    def download_lock(self) -> Iterator[None]:
        """The day's download, held shared by the steps that read it and
        exclusively by those that replace or remove it, across processes."""
        parent = os.path.dirname(self.download_dir)
        os.makedirs(parent, exist_ok=True)
        with open(os.path.join(parent, f".{int(self.window_days)}.lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX if self.changes_download else fcntl.LOCK_SH)
            yield

    @property
    def step(self) -> tuple[str, str | None]:
        """(task family, table or None): the step as notices and `status` name it."""
        return self.task_family, getattr(self, "table", None)

    def on_failure(self, exception: BaseException) -> str:
        return failures.account_failure(self, exception)

    def on_success(self) -> None:
        failures.attempts(self).clear_if_possible()

    def remove_output(self) -> bool:
        """Deletes this step's target, so that the next run redoes it;
        returns whether there was one."""
        return self.output().remove()
