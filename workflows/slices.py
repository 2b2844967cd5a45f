"""Which day: the value every step, load and source works on."""
import datetime as dt
from dataclasses import dataclass


@dataclass(frozen=True)
class Slice:
    """One network's snapshot of one day and window: a day's rows in each
    of the network's tables are its (processing_date, window_days) slice."""

    network: str
    date: dt.date
    window_days: int

    def __str__(self) -> str:
        return f"{self.network} {self.date}"

    def unprefixed(self, text: str) -> str:
        """`text` without the "{network} {date}" it starts with, where the day is said already."""
        for prefix in (f"{self}: ", f"{self} "):
            text = text.removeprefix(prefix)
        return text

    @property
    def path(self) -> str:
        """{network}/{date}/{window_days}: where the store and the download folder keep it."""
        return f"{self.network}/{self.date.isoformat()}/{int(self.window_days)}"
