"""Batch-job metrics of the ingestion, in the Prometheus convention for batch
jobs: a batch job is not scraped while it runs, so each network-day leaves
its outcome behind as gauges of *when* it last succeeded (alerts use
`time() - sot_ingestion_last_success_timestamp_seconds`), plus a failures
counter, in a node-exporter textfile and/or on a Pushgateway.

The textfile holds ALL networks: every `luigi` run is a new process and the
three networks write the same file. So `record` reads the file back under an
fcntl lock on `<textfile>.lock`, replaces what this result replaces, and
writes the whole file again with `prometheus_client.write_to_textfile`
(a temporary file renamed over the old one: a reader never sees half a file).
The file belongs to this module: metrics in it that are not ours are dropped.

What a result replaces, for its network:
- a success sets the last-success gauges and `rows_loaded`: the tables in
  `rows` replace their counts; a table not in `rows` keeps its count only if
  the previous success was the same day (a rerun that loaded some tables), as
  the gauge must describe the day `last_success_day_timestamp_seconds` names;
- a failure adds 1 to `failures_total{step}` and sets the last-failure
  gauge, and leaves the last-success gauges and `rows_loaded` alone (rows of a
  failed day are not reported);
- either sets `step_duration_seconds` to the steps of this run, dropping the
  steps an earlier run had and this one did not (they were not run).
`failures_total` is exported as 0 for every known step from a network's
first record on, so that `increase()` sees the first failure.

The Pushgateway gets this network's series alone, in the group
{job, network}, so networks do not overwrite each other. With a textfile the
series pushed are the ones just written to the file (failures_total read back
from it, so it keeps growing across processes) and they replace the group
(PUT). Without one, or when the file could not be written, they are what
this process has recorded (failures_total counts this process's failures
only: a new process starts again from its own count, which Prometheus reads
as a counter reset) and are added to the group (POST), so what the process
does not know (an earlier process's last success) stays on the gateway.

A Pushgateway or a textfile that cannot be reached does not fail the day:
one warning line on the `workflows` logger. Anything else raises. A
user:password@ in the Pushgateway's URL is sent as basic auth; no line shows
the password."""
import copy
import datetime
import fcntl
import functools
import http.client
import logging
import math
import os
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator

from prometheus_client import push_to_gateway, pushadd_to_gateway, write_to_textfile
from prometheus_client.exposition import basic_auth_handler, default_handler
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from .config import redacted_url, without_credentials
from .state import STEPS

logger = logging.getLogger("workflows")

PREFIX = "sot_ingestion_"
PUSH_TIMEOUT_SECONDS = 10.0  # a gateway that hangs delays the day by at most this much

LAST_SUCCESS = PREFIX + "last_success_timestamp_seconds"
LAST_SUCCESS_DAY = PREFIX + "last_success_day_timestamp_seconds"
ROWS_LOADED = PREFIX + "rows_loaded"
STEP_DURATION = PREFIX + "step_duration_seconds"
FAILURES = PREFIX + "failures_total"
LAST_FAILURE = PREFIX + "last_failure_timestamp_seconds"

# name: (type, label names (network first), help), in the order they are written
METRICS: dict[str, tuple[str, tuple[str, ...], str]] = {
    LAST_SUCCESS: ("gauge", ("network",), "Unix time the last successful network-day finished."),
    LAST_SUCCESS_DAY: (
        "gauge",
        ("network",),
        "Processing date (midnight UTC, unix time) of the last successful network-day.",
    ),
    ROWS_LOADED: ("gauge", ("network", "table"), "Rows loaded per table in the last successful network-day."),
    STEP_DURATION: ("gauge", ("network", "step"), "Duration of each step of the last run of a network-day."),
    FAILURES: ("counter", ("network", "step"), "Failed network-days, by the step that failed."),
    LAST_FAILURE: ("gauge", ("network",), "Unix time the last failed network-day failed."),
}


@dataclass(frozen=True)
class DayResult:
    """The outcome of one network's snapshot for one date, as `record` exports it."""

    network: str
    date: datetime.date
    succeeded: bool
    finished_at: float  # unix time the day finished (success) or failed
    rows: dict[str, int]  # table -> rows loaded (raw_alerts, raw_features, ...); may be partial
    step_seconds: dict[str, float]  # step -> seconds, any subset of STEPS
    failed_step: str | None = None  # on failure, the step that failed ("unknown" if None)

    def __post_init__(self) -> None:
        if not self.network:
            raise ValueError("DayResult.network is empty")
        if self.succeeded and self.failed_step is not None:
            raise ValueError(f"DayResult of {self.network} {self.date} succeeded but names failed_step")


Series = dict[str, dict[tuple[str, ...], float]]  # metric name: {label values: value}


class _State(Collector):
    """All series of the metrics above, as read back and as written: a
    collector, so prometheus-client writes the text format itself."""

    def __init__(self, series: Series | None = None) -> None:
        self.series: Series = {name: {} for name in METRICS}
        for name, samples in (series or {}).items():
            self.series[name].update(samples)

    @classmethod
    def parse(cls, text: str, source: str) -> "_State":
        """The series of our metrics in a text exposition (other names are dropped)."""
        state = cls()
        try:
            for family in text_string_to_metric_families(text):
                for sample in family.samples:
                    if sample.name not in METRICS:
                        continue  # e.g. a counter's _created
                    labels = METRICS[sample.name][1]
                    if set(labels) - set(sample.labels):
                        raise ValueError(f"{sample.name} lacks a label of {labels}: {sample.labels}")
                    state.series[sample.name][tuple(sample.labels[name] for name in labels)] = sample.value
        except ValueError as exc:
            raise ValueError(f"{source}: not a metrics file of ours: {exc}") from exc
        return state

    def apply(self, result: DayResult) -> None:
        """Replace what `result` replaces for its network (see the module's docstring)."""
        net = result.network
        series = self.series
        if result.succeeded:
            day = datetime.datetime.combine(result.date, datetime.time(0), tzinfo=datetime.timezone.utc).timestamp()
            same_day = series[LAST_SUCCESS_DAY].get((net,)) == day
            rows = series[ROWS_LOADED]
            for key in [key for key in rows if key[0] == net and not (same_day and key[1] not in result.rows)]:
                del rows[key]
            for table, count in result.rows.items():
                rows[(net, table)] = float(count)
            series[LAST_SUCCESS][(net,)] = float(result.finished_at)
            series[LAST_SUCCESS_DAY][(net,)] = day
        else:
            step = result.failed_step or "unknown"
            series[FAILURES][(net, step)] = series[FAILURES].get((net, step), 0.0) + 1
            series[LAST_FAILURE][(net,)] = float(result.finished_at)
        for step in STEPS:
            series[FAILURES].setdefault((net, step), 0.0)
        durations = series[STEP_DURATION]
        for key in [key for key in durations if key[0] == net]:
            del durations[key]
        for step, seconds in result.step_seconds.items():
            durations[(net, step)] = float(seconds)

    def of_network(self, network: str) -> "_State":
        """This network's series alone: what its Pushgateway group holds."""
        return _State({name: {k: v for k, v in samples.items() if k[0] == network}
                       for name, samples in self.series.items()})

    def collect(self) -> Iterator[Metric]:
        for name, (kind, labels, doc) in METRICS.items():
            samples = self.series[name]
            if not samples:
                continue  # no HELP/TYPE without a sample: a push must not blank a metric
            family: CounterMetricFamily | GaugeMetricFamily = (
                CounterMetricFamily(name, doc, labels=labels) if kind == "counter"
                else GaugeMetricFamily(name, doc, labels=labels))
            for key in sorted(samples):
                family.add_metric(list(key), samples[key])
            yield family


_process = _State()  # what this process knows: the Pushgateway's source without a (writable) textfile
_process_lock = threading.Lock()


@contextmanager
def _locked(textfile: str) -> Iterator[None]:
    """Exclusive among all writers of `textfile`, in any process or thread
    (flock locks an open file description, so two threads exclude each other too)."""
    fd = os.open(textfile + ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _update_textfile(textfile: str, result: DayResult) -> _State:
    """Read back, apply and rewrite the textfile atomically, under its lock: no
    concurrent writer's update is lost. Returns all series written."""
    with _locked(textfile):
        try:
            with open(textfile, encoding="utf-8") as stream:
                text = stream.read()
        except FileNotFoundError:
            text = ""
        state = _State.parse(text, textfile)
        state.apply(result)
        write_to_textfile(textfile, state)
    return state


def record(result: DayResult, textfile: str | None, pushgateway_url: str | None, job: str = "sot_ingestion") -> None:
    """Export one network-day's outcome to the textfile and/or Pushgateway, so
    that alerts can tell a network that stopped succeeding. Neither an
    unwritable textfile nor an unreachable gateway fails the day: each logs
    one warning line."""
    written = None
    if textfile:
        try:
            written = _update_textfile(textfile, result)
        except OSError as exc:
            logger.warning("metrics: cannot write textfile %s: %s", textfile, exc)
    with _process_lock:
        if written is not None:
            _process.series = copy.deepcopy(written.series)
        else:
            _process.apply(result)
        pushed = _process.of_network(result.network)
    if not pushgateway_url:
        return
    push = push_to_gateway if written is not None else pushadd_to_gateway
    address, handler = _gateway(pushgateway_url)
    try:
        push(address, job=job, registry=pushed, grouping_key={"network": result.network},
             timeout=PUSH_TIMEOUT_SECONDS, handler=handler)
    except (OSError, http.client.HTTPException) as exc:  # refused, timed out, an HTTP error status, not HTTP
        logger.warning("metrics: Pushgateway %s did not take %s's metrics: %s",
                       redacted_url(pushgateway_url), result.network, str(exc).replace("\n", " "))


def _gateway(url: str) -> tuple[str, Callable[..., Callable[[], None]]]:
    """The Pushgateway's URL without user:password@, and the handler that
    sends them as basic auth: left in the URL, urllib takes them for the
    host, and its error shows the password."""
    address, credentials = without_credentials(url)
    if credentials is None:
        return address, default_handler
    user, password = credentials
    return address, functools.partial(basic_auth_handler, username=user, password=password)


def stale_networks(last_days: dict[str, datetime.date | None], now: datetime.datetime,
                   max_age_hours: float) -> list[str]:
    """One line per network whose newest complete day is older than
    `max_age_hours`, or which has none, in the order given: what a freshness
    check prints. A day's age runs from its end (the next midnight UTC) to
    `now` (naive: UTC); exactly `max_age_hours` old is still fresh."""
    if now.tzinfo is None:
        now = now.replace(tzinfo=datetime.timezone.utc)
    limit = datetime.timedelta(hours=max_age_hours)
    lines = []
    for network, day in last_days.items():
        if day is None:
            lines.append(f"{network}: no complete day")
            continue
        end = datetime.datetime.combine(day + datetime.timedelta(days=1), datetime.time(0),
                                        tzinfo=datetime.timezone.utc)
        age = now - end
        if age > limit:
            # rounded up to a tenth: a stale day never shows as old as the limit
            hours = math.ceil(age / datetime.timedelta(hours=1) * 10 - 1e-9) / 10
            lines.append(f"{network}: last complete day {day.isoformat()}, {_hours(hours)} h old "
                         f"(limit {max_age_hours:g} h)")
    return lines


def _hours(hours: float) -> str:
    return f"{hours:.1f}".removesuffix(".0")
