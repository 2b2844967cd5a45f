"""The notice that a task has failed for the last time: one structured log
line, and a JSON POST to ALERT_WEBHOOK_URL when it is set.

luigid decides when to give up on a task (retry_count failures within
[scheduler] disable_window); the workers count the same failures in Redis,
so the process that sees the last one can say so."""
import fcntl
import json
import logging
import os
import time
import urllib.request

from luigi.configuration import get_config

logger = logging.getLogger("workflows.alerts")
DEFAULT_DISABLE_WINDOW = 3600
DEFAULT_RETRY_DELAY = 900  # luigi's


def disable_window():
    return get_config().getint("scheduler", "disable_window", DEFAULT_DISABLE_WINDOW)


def retry_delay():
    """Seconds until the scheduler retries a failed task, as this process's
    luigi configuration has it (luigid's own is the one that counts)."""
    return get_config().getint("scheduler", "retry_delay", DEFAULT_RETRY_DELAY)


def count_failure(redis, key):
    """Adds one failure to the count of the last disable_window seconds; returns the count."""
    with redis.pipeline() as pipe:
        pipe.incr(key)
        pipe.expire(key, disable_window())
        count, _ = pipe.execute()
    return count


def count_failure_here(path, now=None):
    """The same count kept in a file on this host, for when Redis is down:
    without it every failure would look like the last one, and notify."""
    now = time.time() if now is None else now
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "a+") as stream:
        fcntl.flock(stream, fcntl.LOCK_EX)
        stream.seek(0)
        recent = [line for line in stream.read().split() if float(line) > now - disable_window()]
        recent.append(repr(now))
        stream.seek(0)
        stream.truncate()
        stream.write("\n".join(recent))
    return len(recent)


def notice(network, date, task, reason, attempts, table=None, event="task_gave_up"):
    """`task_gave_up`: the last attempt failed; `cannot_check`: a server the
    pipeline keeps its markers on did not answer, so nothing could run."""
    return {"event": event, "network": network, "date": date.isoformat(), "task": task, "table": table,
            "attempts": attempts, "reason": reason}


def send(body, webhook_url=None):
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
