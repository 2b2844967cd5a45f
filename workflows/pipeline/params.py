"""The tasks' parameters: a command-line value that does not parse stops
the run with one line, not a traceback."""
import datetime as dt
from collections.abc import Callable
from typing import TypeVar

import luigi

from ..errors import OneLineFailure

T = TypeVar("T")


class BadParameter(OneLineFailure):
    """A command-line value that is not what the parameter takes."""


def parsed(parse: Callable[[str], T], s: str, expected: str) -> T:
    try:
        return parse(s)
    except ValueError:
        raise BadParameter(f"{s!r} is not {expected}") from None


class Day(luigi.DateParameter):
    def parse(self, s: str) -> dt.date:
        return parsed(super().parse, s, "a date (YYYY-MM-DD)")


class WindowDays(luigi.OptionalIntParameter):
    def parse(self, s: str) -> int | None:
        return parsed(super().parse, s, "a whole number of days")


def yesterday() -> dt.date:
    return dt.datetime.now(dt.timezone.utc).date() - dt.timedelta(days=1)
