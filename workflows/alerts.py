"""The notice that a task has failed for the last time: one structured log
line, and a JSON POST to ALERT_WEBHOOK_URL when it is set.

luigid decides when to give up on a task (retry_count failures within
[scheduler] disable_window); the workers count the same failures in Redis,
so the process that sees the last one can say so."""
import contextlib
import fcntl
import json
import logging
import os
import time
import urllib.request
from typing import Any

from luigi.configuration import get_config
from redis import Redis, RedisError

from .errors import one_line
from .slices import Slice

logger = logging.getLogger("workflows.alerts")
DEFAULT_DISABLE_WINDOW = 3600
DEFAULT_RETRY_DELAY = 900  # luigi's


def disable_window() -> int:
    return get_config().getint("scheduler", "disable_window", DEFAULT_DISABLE_WINDOW)


def retry_delay() -> int:
    """Seconds until the scheduler retries a failed task, as this process's
    luigi configuration has it (luigid's own is the one that counts)."""
    return get_config().getint("scheduler", "retry_delay", DEFAULT_RETRY_DELAY)


class Attempts:
    """The failed attempts of a task's current round: the failures of the
    last disable_window seconds, as luigid counts them, since the task last
    succeeded, was reset, or was given up on (luigid then starts it afresh
    after disable_persist). Kept in Redis, which every host shares, and in a
    file on this host, for when Redis is down or was emptied: the larger
    count is the true one, so the last attempt is always known as such."""

    def __init__(self, redis: Redis, key: str, path: str) -> None:
        self.redis, self.key, self.path = redis, key, path

    def add(self) -> int:
        """Counts one more failure; returns the attempt it was (1, 2, ...)."""
        try:
            with self.redis.pipeline() as pipe:
                pipe.incr(self.key)
                pipe.expire(self.key, disable_window())
                shared, _ = pipe.execute()
        except RedisError as exc:
            logger.error("could not count the failure in Redis: %s", one_line(exc))
            shared = 0
        try:
            here = self.count_here()
        except OSError as exc:  # the download folder unusable: Redis's count alone
            logger.error("could not count the failure on this host: %s", one_line(exc))
            here = 0
        return max(shared, here)

    def clear(self) -> None:
        """A new round: the next failure is attempt 1. Raises RedisError
        when Redis does not answer (this host's count is cleared first)."""
        with contextlib.suppress(FileNotFoundError):
            os.remove(self.path)
        self.redis.delete(self.key)

    def clear_if_possible(self) -> None:
        """clear(), for a step whose outcome stands whatever Redis does: its count expires by itself."""
        try:
            self.clear()
        except RedisError as exc:
            logger.warning("could not clear the failure count in Redis: %s", one_line(exc))

    def count_here(self, now: float | None = None) -> int:
        """Adds a failure to the count on this host; returns the failures in the window."""
        now = time.time() if now is None else now
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        with open(self.path, "a+") as stream:
            fcntl.flock(stream, fcntl.LOCK_EX)
            stream.seek(0)
            recent = [line for line in stream.read().split() if float(line) > now - disable_window()]
            recent.append(repr(now))
            stream.seek(0)
            stream.truncate()
            stream.write("\n".join(recent))
        return len(recent)


def notice(day: Slice, step: tuple[str, str | None], reason: str, attempts: int,
           event: str = "task_gave_up") -> dict[str, Any]:
    """`task_gave_up`: the last attempt of `step` ((task, table or None))
    failed; `cannot_check`: a server the pipeline keeps its markers on did
    not answer, so nothing could run."""
    task, table = step
    return {"event": event, "network": day.network, "date": day.date.isoformat(), "task": task, "table": table,
            "attempts": attempts, "reason": reason}


def send(body: dict[str, Any], webhook_url: str | None = None) -> None:
    logger.error(json.dumps(body, sort_keys=True))
    if not webhook_url:
        return
    request = urllib.request.Request(webhook_url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()
    except OSError as exc:  # the notice is best effort; the run's exit status already says it failed
        logger.error("could not post the failure notice to ALERT_WEBHOOK_URL: %s", exc)
