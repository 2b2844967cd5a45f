"""Failure accounting: attempts per run of a step, the give-up notice, the
day's last failure for `status`, and the end-of-command summary."""
import atexit
import json
import logging
import os
import shutil
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

import luigi
import redis
from clickhouse_driver.errors import Error as ClickHouseError

from .. import alerts, metrics, scheduler, status
from ..clients import redis_client
from ..config import ConfigError, Settings
from ..errors import OneLineFailure, SnapshotError, one_line
from ..slices import Slice
from ..state import KEPT_SECONDS, describe_failure, last_failure_key, loaded_days, step_key, step_seconds_key

logger = logging.getLogger("workflows")



def failure_reason(exc: BaseException) -> str:
    """The one line a failure is reported as."""
    return str(exc) if isinstance(exc, OneLineFailure) else one_line(exc)


class Step(Protocol):
    """What failure accounting needs of a step (base.IngestionTask)."""

    settings: Settings
    day: Slice

    @property
    def task_id(self) -> str: ...

    @property
    def task_family(self) -> str: ...

    @property
    def retry_count(self) -> int: ...

    @property
    def redis(self) -> redis.Redis: ...

    @property
    def download_dir(self) -> str: ...

    @property
    def step(self) -> tuple[str, str | None]: ...

    @property
    def step_name(self) -> str: ...

    @property
    def clickhouse(self) -> Any: ...

    @property
    def database(self) -> str: ...


def attempts(task: Step) -> alerts.Attempts:
    """The step's failed attempts in this run of it."""
    return alerts.Attempts(task.redis, step_key(task.day, f"failures:{task.task_id}"),
                           os.path.join(task.settings.download_dir, ".failures", task.task_id))


def record_failure(task: Step, exception: BaseException, attempt: int) -> None:
    """The day's last failure, for `status`, until the day is done; its kind
    (the exception's class) tells a day not published yet from one that failed."""
    name, table = task.step
    failure = {"task": name, "table": table, "reason": failure_reason(exception), "attempts": attempt,
               "of": task.retry_count, "at": int(time.time()), "kind": type(exception).__name__}
    try:
        task.redis.set(last_failure_key(task.day), json.dumps(failure), ex=KEPT_SECONDS)
    except redis.RedisError:
        pass  # already logged by the failure count


def record_metrics(task: Step, failed_step: str | None) -> None:
    """The network-day's metrics (INGESTION_METRICS_TEXTFILE,
    PROMETHEUS_PUSHGATEWAY_URL): a success when `failed_step` is None, with
    the rows each table holds for the day; each step's last duration."""
    settings = task.settings
    if not (settings.metrics_textfile or settings.pushgateway_url):
        return
    try:
        durations = task.redis.hgetall(step_seconds_key(task.day))
    except redis.RedisError:
        durations = {}
    seconds: dict[str, float] = {}
    for key, value in durations.items():  # the four loads' add up to the load step's
        step = (key.decode() if isinstance(key, bytes) else key).split(":")[0]
        seconds[step] = seconds.get(step, 0.0) + float(value)
    rows = {} if failed_step else loaded_days(task.clickhouse, task.database, task.day.network, [task.day.date],
                                              task.day.window_days).get(task.day.date, {})
    metrics.record(metrics.DayResult(task.day.network, task.day.date, failed_step is None, time.time(), rows, seconds,
                                     failed_step), settings.metrics_textfile or None, settings.pushgateway_url or None)


def account_failure(task: Step, exception: BaseException) -> str:
    """luigi's on_failure: counts the attempt, sends the notice when it was
    the last, keeps the day's last failure; returns what luigid shows."""
    if isinstance(exception, SnapshotError):
        # the retry downloads afresh, rather than fail again on this copy
        shutil.rmtree(task.download_dir, ignore_errors=True)
    reason = failure_reason(exception)
    if isinstance(exception, SnapshotError):
        logger.error("bad input: %s", reason)
    # not published yet, a server down, no room, bad input: the one line says it all
    explanation = reason if isinstance(exception, OneLineFailure) else f"Runtime error:\n{traceback.format_exc()}"
    attempt = min(attempts(task).add(), task.retry_count)  # a stale count: never "attempt 4 of 3"
    if attempt >= task.retry_count:
        when = f"attempt {attempt} of {task.retry_count}; giving up"
        alerts.send(alerts.notice(task.day, task.step, reason, attempt), task.settings.alert_webhook_url)
        attempts(task).clear_if_possible()  # luigid gives the task a new round after disable_persist
    else:
        when = f"attempt {attempt} of {task.retry_count}; next in {alerts.retry_delay()} s"
    logger.warning("%s %s: %s", task.day, task.task_family, when)
    record_failure(task, exception, attempt)
    record_metrics(task, task.step_name)
    return f"{explanation} ({when})"


_summarized: dict[Slice, Callable[[Slice], Sequence[luigi.Task]]] = {}  # this `luigi` command's days
_process_started = time.time()


def summarize_at_exit(days: Iterable[Slice], day_tasks: Callable[[Slice], Sequence[luigi.Task]]) -> None:
    """When this `luigi` command ends: one line per day that failed in it,
    with its last reason (luigi's own summary lists tasks, and collapses
    them), and one per task that luigid holds disabled, which luigi only
    calls "not granted run permission". `day_tasks(day)`: the day's steps."""
    if os.path.basename(sys.argv[0]) != "luigi":
        return
    if not _summarized:
        atexit.register(_summarize)
    for day in days:
        _summarized[day] = day_tasks


def _summarize() -> None:
    days = list(_summarized)
    try:
        settings = Settings.from_env()
        failures = redis_client(settings).mget([last_failure_key(day) for day in days])
        table = status.loaded_table(settings, days)
    except (ConfigError, redis.RedisError, ClickHouseError, OSError):
        return
    for line in table:
        logger.info("%s", line)
    for day, failure in zip(days, failures):
        if failure and json.loads(failure)["at"] >= int(_process_started):
            logger.error("%s: %s", day, describe_failure(json.loads(failure)))
    if "--local-scheduler" not in sys.argv:  # its disabling ends with it
        scheduler.explain_disabled([task for day, day_tasks in _summarized.items() for task in day_tasks(day)])
