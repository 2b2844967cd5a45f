"""RunDaily, all networks' day under one task (RangeDaily backfills it),
and the step list that `reset` and the end-of-command summary walk."""
import datetime as dt
from typing import Any

import luigi

from .. import scheduler
from ..config import Settings, known_network, require_sot_url
from ..schema import TABLES
from ..slices import Slice
from ..state import STEPS
from .base import IngestionTask, setting_or_exit
from .failures import summarize_at_exit
from .params import Day, WindowDays, yesterday
from .steps import Cleanup, DownloadSOT, LoadTable, ValidateMeta, VerifyChecksums

STEP_TASKS = {task.step_name: task for task in (DownloadSOT, ValidateMeta, VerifyChecksums, Cleanup)}


def step_tasks(step: str, day: Slice, table: str | None = None) -> list[IngestionTask]:
    """The tasks of one step (STEPS) of one network's day: for `load`, the
    table's, or all four."""
    if step == "load":
        return [LoadTable(day.network, day.date, day.window_days, t) for t in ([table] if table else TABLES)]
    return [STEP_TASKS[step](day.network, day.date, day.window_days)]


def day_tasks(day: Slice) -> list[IngestionTask]:
    """Every step of one network's day."""
    return [task for step in STEPS for task in step_tasks(step, day)]


class RunDaily(luigi.WrapperTask):
    """All networks' pipelines for one date."""

    date = Day(default=yesterday(), description="the snapshots' day, YYYY-MM-DD; default yesterday (UTC)")
    networks = luigi.Parameter(default="", description="comma-separated networks; default INGESTION_NETWORKS")
    window_days = WindowDays(default=None, description="the snapshots' window in days; default INGESTION_WINDOW_DAYS")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        settings = setting_or_exit(Settings.from_env)  # once, not at every complete()
        setting_or_exit(require_sot_url, settings)
        networks = [setting_or_exit(known_network, n.strip(), settings)
                    for n in self.networks.split(",") if n.strip()] or list(settings.networks)
        scheduler.check_reachable()
        self.days = [Slice(network, self.date, self.window_days or settings.window_days) for network in networks]
        summarize_at_exit(self.days, day_tasks)

    def requires(self) -> list[Cleanup]:
        return [Cleanup(day.network, day.date, day.window_days) for day in self.days]

    @classmethod
    def bulk_complete(cls, dates: list[dt.date]) -> list[dt.date]:
        """For RangeDaily: the dates already done, two queries per network
        for the whole range, without touching the SOT."""
        days = [cls(date=date) for date in dates]
        cleanups: dict[tuple[str, int], list[Cleanup]] = {}
        for day in days:
            for cleanup in day.requires():
                cleanups.setdefault((cleanup.network, cleanup.window_days), []).append(cleanup)
        done = {day.date for day in days}
        for same_network in cleanups.values():
            done &= Cleanup.finished_dates(same_network)
        return [day.date for day in days if day.date in done]
