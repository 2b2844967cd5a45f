"""luigid, as the pipeline's commands talk to it outside a run: which of a
day's tasks it has disabled after their retries were used up, and
re-enabling them for a manual rerun. Short timeouts: luigid not answering
is said, never waited for."""
import base64
import json
import logging
import time
import urllib.parse
import urllib.request
from collections.abc import Sequence
from typing import Any

import luigi
import luigi.configuration
import luigi.interface
import luigi.retcodes
from luigi.cmdline_parser import CmdlineParser

from .config import redacted_url, without_credentials
from .slices import Slice

logger = logging.getLogger("workflows")
TIMEOUT_SECONDS = 5


def scheduler_url() -> str:
    config = luigi.configuration.get_config()
    return config.get("core", "scheduler_url", "") or \
        f"http://{config.get('core', 'default-scheduler-host', 'localhost')}:" \
        f"{config.get('core', 'default-scheduler-port', '8082')}/"


def shown_url() -> str:
    """luigid's URL as messages show it: no password."""
    return redacted_url(scheduler_url())


def call(method: str, url: str | None = None, **data: Any) -> Any:
    query = urllib.parse.quote(json.dumps(data))
    with urllib.request.urlopen(_request(f"{(url or scheduler_url()).rstrip('/')}/api/{method}?data={query}"),
                                timeout=TIMEOUT_SECONDS) as response:
        return json.load(response)["response"]


def _request(url: str) -> urllib.request.Request:
    """A request to `url` with its user:password@ sent as basic auth, as
    luigi's own RPC sends them (a luigid behind an authenticating proxy)."""
    address, credentials = without_credentials(url)
    request = urllib.request.Request(address)
    if credentials is not None:
        token = base64.b64encode(":".join(credentials).encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    return request


REACH_ATTEMPTS = 3  # a luigid that restarts answers again within seconds
REACH_WAIT_SECONDS = 2
_checked: list[str | None] = []  # this process's command line was checked: local scheduler, or luigid answered


def check_reachable() -> None:
    """For a `luigi` command that schedules through luigid: luigid answers,
    or the command ends here, before any task is checked, with one line
    and exit 35 ([retcode] scheduling_error). luigi itself would try three
    times, 30 s apart, and then exit 40 with a traceback."""
    if _checked or CmdlineParser.get_instance() is None:  # checked already, or not a command line (luigi.build)
        return
    core = luigi.interface.core()  # with the command line's --local-scheduler, --scheduler-url, ...
    if core.local_scheduler:
        _checked.append(None)
        return
    url = core.scheduler_url or f"http://{core.scheduler_host}:{core.scheduler_port}/"
    exit_status = luigi.retcodes.retcode().scheduling_error
    for attempt in range(REACH_ATTEMPTS):
        try:
            call("task_list", url, status="RUNNING", upstream_status="", search="\0")
            _checked.append(url)
            return
        except (OSError, ValueError, KeyError) as exc:
            failure = exc
        if attempt + 1 < REACH_ATTEMPTS:
            time.sleep(REACH_WAIT_SECONDS)
    logger.error("luigid at %s does not answer (%d attempts, %d s apart): %s", redacted_url(url), REACH_ATTEMPTS,
                 REACH_WAIT_SECONDS, failure)
    raise SystemExit(exit_status)


def re_enable(tasks: Sequence[luigi.Task], url: str | None = None) -> Sequence[luigi.Task]:
    """Re-enables those of `tasks` that luigid disabled; returns them."""
    return [task for task in tasks if call("re_enable_task", url, task_id=task.task_id)]


def disabled_days(days: list[Slice], url: str | None = None) -> set[Slice]:
    """Those of `days` of which luigid holds a step disabled, read off its
    listing's parameters: one call, no Task built per day and step."""
    wanted = {(day.network, day.date.isoformat(), str(int(day.window_days))): day for day in days}
    held = call("task_list", url, status="DISABLED").values()
    return {wanted[key] for key in ((p.get("network"), p.get("date"), p.get("window_days"))
                                    for p in (task["params"] for task in held)) if key in wanted}


def disabled(tasks: Sequence[luigi.Task], url: str | None = None) -> Sequence[luigi.Task]:
    """Those of `tasks` that luigid holds disabled."""
    held = call("task_list", url, status="DISABLED")
    return [task for task in tasks if task.task_id in held]


def reset_command(network: str, date: object) -> str:
    return f"python -m workflows reset --date {date} --network {network}"


def explain_disabled(tasks: Sequence[luigi.Task]) -> None:
    """One line for each of `tasks` that luigid holds disabled, so that
    "not granted run permission" has a reason and a way out."""
    try:
        held = disabled(tasks)
    except OSError:
        return
    persist = luigi.configuration.get_config().getint("scheduler", "disable_persist", 86400)
    if len(held) == 1:
        [task] = held
        logger.error("%s is disabled in luigid: its retries were used up. It runs again after"
                     " [scheduler] disable_persist (%d s), or at once after `%s`", task, persist,
                     reset_command(task.param_kwargs["network"], task.param_kwargs["date"]))
    elif held:  # a backfill over disabled days: one line, not one per task
        days = sorted({(task.param_kwargs["network"], task.param_kwargs["date"]) for task in held})
        logger.error("%d tasks of %d network-days are disabled in luigid: their retries were used up (first %s"
                     " %s). They run again after [scheduler] disable_persist (%d s), or at once after `%s` for each day"
                     " (python -m workflows status shows them)", len(held), len(days), *days[0], persist,
                     reset_command("N", "D"))
