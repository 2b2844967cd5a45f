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
import uuid
from typing import Any

from luigi.configuration import get_config
from redis import Redis, RedisError
from redis.exceptions import OutOfMemoryError

from .errors import one_line
from .slices import Slice

logger = logging.getLogger("workflows.alerts")
DEFAULT_DISABLE_WINDOW = 3600
DEFAULT_RETRY_DELAY = 900  # luigi's
UNKNOWN_ROUND = "-"  # a failure counted while Redis did not answer: it counts in any round


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
    count is the true one, so the last attempt is always known as such.
    Each round has an id in Redis, written beside each failure in the
    files, so that another host's file does not count the failures of the
    round before (ids, not times: the hosts' clocks may differ)."""

    def __init__(self, redis: Redis, key: str, path: str) -> None:
        self.redis, self.key, self.path = redis, key, path
        self.round_key = key + ":round"

    def add(self) -> int:
        """Counts one more failure; returns the attempt it was (1, 2, ...)."""
        try:
            with self.redis.pipeline() as pipe:
                pipe.incr(self.key)
                pipe.expire(self.key, disable_window())
                pipe.set(self.round_key, uuid.uuid4().hex[:12], nx=True, ex=disable_window())
                pipe.expire(self.round_key, disable_window())
                pipe.get(self.round_key)
                shared, _, started, _, round_id = pipe.execute()
        except RedisError as exc:
            logger.error("could not count the failure in Redis: %s", one_line(exc))
            shared, started, round_id = 0, False, None
        try:
            # no round in Redis (the first failure, or Redis emptied): this host's failures are of the new one
            round_id = round_id.decode() if isinstance(round_id, bytes) else round_id
            here = self.count_here(round_id=round_id, adopt=bool(started))
        except OSError as exc:  # the download folder unusable: Redis's count alone
            logger.error("could not count the failure on this host: %s", one_line(exc))
            here = 0
        return max(shared, here)

    def clear(self) -> None:
        """A new round: the next failure is attempt 1, on every host. Raises
        RedisError when Redis does not answer (this host's count is cleared first)."""
        with contextlib.suppress(FileNotFoundError):
            os.remove(self.path)
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.delete(self.key, self.round_key)
            pipe.set(self.round_key, uuid.uuid4().hex[:12], ex=disable_window())
            _, begun = pipe.execute(raise_on_error=False)
        # a full Redis (maxmemory) takes the deletes, not the new round's id: the next failure begins one
        if isinstance(begun, Exception) and not isinstance(begun, OutOfMemoryError):
            raise begun

    def clear_if_possible(self) -> None:
        """clear(), for a step whose outcome stands whatever Redis does: its count expires by itself."""
        try:
            self.clear()
        except RedisError as exc:
            logger.warning("could not clear the failure count in Redis: %s", one_line(exc))

    def count_here(self, now: float | None = None, round_id: str | None = None, adopt: bool = False) -> int:
        """Adds a failure of round `round_id` (None: Redis did not answer) to
        the count on this host; returns the failures in the window of that
        round, or of no known round. `adopt`: `round_id` has just begun in
        Redis, and carries on the round of this host's last failure (Redis
        was emptied, or this is the round's first failure)."""
        now = time.time() if now is None else now
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        with open(self.path, "a+") as stream:
            fcntl.flock(stream, fcntl.LOCK_EX)
            stream.seek(0)
            recent = []
            for line in stream.read().splitlines():
                at, of = (line.split() + [UNKNOWN_ROUND])[:2]
                if float(at) > now - disable_window():
                    recent.append((at, of))
            if adopt and round_id and recent:
                carried_on = recent[-1][1]
                recent = [(at, round_id if of == carried_on else of) for at, of in recent]
            recent.append((repr(now), round_id or UNKNOWN_ROUND))
            stream.seek(0)
            stream.truncate()
            stream.write("".join(f"{at} {of}\n" for at, of in recent))
        return sum(1 for _, of in recent if round_id is None or of in (round_id, UNKNOWN_ROUND))


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
