"""Where the pipeline keeps its state, and the state of many days at once
(for `status`, the day's checks and backfills): which tables' days are
loaded in two queries per table rather than two per day, and every
step's marker of a range of days without building a task per day."""
import datetime as dt
import json
import os
from dataclasses import dataclass
from typing import Any

import redis

from targets import RedisMarkerTarget
from targets.redis_marker import marker_key

from . import sql
from .config import Settings
from .schema import TABLES
from .slices import Slice

DOWNLOAD_STAMP = ".download"  # written last into a download; holds its id
ARRIVED_CHECKSUMS = ".arrived.json"  # {filename: "algorithm:hex"} of the bytes as they arrived
CLEANUP_MARKER = ("cleanup", "done")  # Cleanup's Redis marker: (step, token)
STEPS = ("download", "validate", "checksums", "load", "cleanup")  # a day's steps, in the order they run
NOT_PUBLISHED = "SnapshotNotPublished"  # the kind of failure of a day the SOT has not published yet
KEPT_SECONDS = 30 * 86400  # a day's failure and step durations, until the day is done or this long


def download_dir(settings: Settings, day: Slice) -> str:
    return os.path.join(settings.download_dir, day.path)


def download_id(settings: Settings, day: Slice) -> str | None:
    """Id of the day's download on this host's disk, or None when there is none."""
    try:
        with open(os.path.join(download_dir(settings, day), DOWNLOAD_STAMP)) as stamp:
            return stamp.read().strip() or None
    except FileNotFoundError:
        return None


def step_key(day: Slice, step: str) -> str:
    """The Redis key of a step's marker (validate:{host}, checksums:{host}, cleanup) and the day's other keys."""
    return marker_key(day.network, day.date, day.window_days, step)


def download_marker(client: redis.Redis, settings: Settings, day: Slice, step: str) -> RedisMarkerTarget:
    """A marker that vouches for this host's download (its id the token):
    each host under one luigid downloads and checks its own copy, and none
    overwrites another's."""
    return RedisMarkerTarget(client, step_key(day, f"{step}:{settings.worker_host}"), download_id(settings, day))


def cleanup_marker(client: redis.Redis, day: Slice) -> RedisMarkerTarget:
    step, token = CLEANUP_MARKER
    return RedisMarkerTarget(client, step_key(day, step), token)


def last_failure_key(day: Slice) -> str:
    return step_key(day, "last_failure")


def step_seconds_key(day: Slice) -> str:
    """{step (load:{table} for each load): seconds its last run took} of the day, for the metrics."""
    return step_key(day, "step_seconds")


def republished_labels_key(day: Slice) -> str:
    """The day loaded labels republished since its export: {"meta": sha256, "file": sha256}."""
    return step_key(day, "labels_republished")


def gave_up(failure: dict[str, Any]) -> bool:
    """Whether the day's last failure (pipeline.failures.record_failure) was its step's last attempt."""
    return failure["attempts"] >= failure["of"]


def describe_failure(failure: dict[str, Any]) -> str:
    """A day's last failure (pipeline.failures.record_failure) as one line."""
    step = failure["task"] + (f" {failure['table']}" if failure.get("table") else "")
    given_up = ", gave up" if gave_up(failure) else ""
    return f"failed: {step}, attempt {failure['attempts']} of {failure['of']}{given_up}: {failure['reason']}"


def loaded_days(client: Any, database: str, network: str, dates: list[dt.date], window_days: int
                ) -> dict[dt.date, dict[str, int]]:
    """{date: {table_name: rows}} of the tables whose marker is set and whose
    day holds the rows the marker counted (as ClickHouseMarkerTarget.exists
    has it, for many days at once). One query for the markers and one per
    table marked."""
    marked: dict[str, dict[dt.date, int]] = {}
    for date, table_name, rows in client.execute(*sql.loaded_days(database, network, dates, window_days)):
        marked.setdefault(table_name, {})[date] = rows
    days: dict[dt.date, dict[str, int]] = {}
    for table_name, rows_by_date in marked.items():
        held = dict(client.execute(*sql.day_counts(database, table_name, list(rows_by_date), window_days)))
        for date, rows in rows_by_date.items():
            if held.get(date, 0) == rows:
                days.setdefault(date, {})[table_name] = rows
    return days


def finished(loaded: dict[str, int], cleaned: bool) -> bool:
    """A day is done when its four tables are loaded and it was cleaned up; a
    reset table marker makes it unfinished again."""
    return cleaned and set(TABLES) <= set(loaded)


def loaded_and_cleaned(client: redis.Redis, ch: Any | None, database: str, days: list[Slice]
                       ) -> list[tuple[dict[str, int], bool]]:
    """([table: rows loaded], cleanup marker set) of each of these days (of
    one network and window), in two queries and one Redis round trip; `ch`
    None when the network's database is not there (nothing loaded)."""
    if not days:
        return []
    cleaned = RedisMarkerTarget.exist_all([cleanup_marker(client, day) for day in days])
    loaded = loaded_days(ch, database, days[0].network, [day.date for day in days], days[0].window_days) \
        if ch is not None else {}
    return [(loaded.get(day.date, {}), done) for day, done in zip(days, cleaned)]


def finished_dates(client: redis.Redis, ch: Any, database: str, days: list[Slice]) -> set[dt.date]:
    """The dates of these days (of one network and window) that are done."""
    return {day.date for day, day_state in zip(days, loaded_and_cleaned(client, ch, database, days))
            if finished(*day_state)}


@dataclass(frozen=True)
class DayState:
    """Every step's marker of one network's day, as `status` shows it."""

    downloaded: bool  # this host holds the copy (until cleanup removes it)
    validated: bool
    checked: bool
    loaded: dict[str, int]  # table -> rows loaded
    cleaned: bool
    failure: dict[str, Any] | None  # the day's last failure (pipeline.failures.record_failure)
    labels_republished: bool

    @property
    def finished(self) -> bool:
        return finished(self.loaded, self.cleaned)

    @property
    def started(self) -> bool:
        return self.downloaded or self.validated or self.checked or bool(self.loaded) or self.cleaned


def day_states(settings: Settings, client: redis.Redis, ch: Any | None, days: list[Slice]) -> list[DayState]:
    """The state of these days (of one network and window), reading only:
    `ch` None when the network's database is not there (nothing loaded)."""
    if not days:
        return []
    tables = loaded_and_cleaned(client, ch, settings.database_for(days[0].network), days)
    validated, checked = (RedisMarkerTarget.exist_all([download_marker(client, settings, day, step) for day in days])
                          for step in ("validate", "checksums"))
    failures = client.mget([last_failure_key(day) for day in days])
    republished = client.mget([republished_labels_key(day) for day in days])
    return [DayState(downloaded=download_id(settings, day) is not None, validated=v, checked=c, loaded=loaded,
                     cleaned=done, failure=json.loads(f) if f else None, labels_republished=bool(r))
            for day, v, c, (loaded, done), f, r in zip(days, validated, checked, tables, failures, republished)]
