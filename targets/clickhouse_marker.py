"""A row in the network database's `ingestion_markers` table saying that one
table's (processing_date, window_days) slice is loaded, with its row count,
after luigi.contrib.postgres's marker table.

Markers are appended, never updated: touch() adds a row with loaded=1,
remove() one with loaded=0, and the row with the highest version wins. The
server numbers the versions of a key one after another, so the order of
writes decides, not the clocks of the hosts that wrote them. A marker counts
only while the table's day holds the rows it counted: a server that crashed
after a swap can bring replaced parts back, and the next run then loads the
day again."""
import datetime as dt
from collections.abc import Iterable
from typing import Any, Protocol

import luigi

MARKER_TABLE = "ingestion_markers"
# One row per load and per reset of a (network, date, window_days, table):
# the latest row by `version` says whether the table's slice is loaded.
# Rows are only ever appended, so setting and clearing a marker is
# synchronous on every server version (ALTER ... DELETE is an asynchronous
# mutation).
MARKER_COLUMNS = (
    ("network", "String"),
    ("processing_date", "Date"),
    ("window_days", "UInt16"),
    ("table_name", "String"),
    ("loaded", "UInt8"),
    ("rows", "UInt64"),
    ("updated_at", "DateTime"),
    ("version", "UInt64"),
    # the load's column accounting: the file's columns the table lacks, and
    # the table's columns the file lacked, which took their DEFAULT
    ("ignored_columns", "Array(String)"),
    ("defaulted_columns", "Array(String)"),
)
MARKER_COLUMNS_ADDED = MARKER_COLUMNS[-2:]  # after the first release: added to marker tables made before
_KEY = ("network = %(network)s AND processing_date = %(date)s AND window_days = %(window_days)s"
        " AND table_name = %(table_name)s")


def _quoted(name: str) -> str:
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


class Day(Protocol):
    """Which day a marker is of: a network's (processing_date, window_days)."""

    @property
    def network(self) -> str: ...

    @property
    def date(self) -> dt.date: ...

    @property
    def window_days(self) -> int: ...


class ClickHouseMarkerTarget(luigi.Target):
    """One table's day loaded: a row in MARKER_TABLE per update of
    (network, date, window_days, table_name), the newest version counting,
    and the table's day still holding the rows it counted."""

    def __init__(self, client: Any, database: str, day: Day, table_name: str) -> None:
        self.client = client
        self.database = database
        self.network, self.date, self.window_days = day.network, day.date, int(day.window_days)
        self.table_name = table_name

    @property
    def _key(self) -> dict[str, Any]:
        return {"network": self.network, "date": self.date, "window_days": self.window_days,
                "table_name": self.table_name}

    def loaded_rows(self) -> int | None:
        """Rows loaded, or None when the marker is absent or its table's day no longer holds them."""
        marker = self.client.execute(
            f"SELECT argMax(loaded, version), argMax(rows, version)"
            f" FROM {_quoted(self.database)}.{_quoted(MARKER_TABLE)} WHERE {_KEY} HAVING count() > 0", self._key)
        if not marker or not marker[0][0]:
            return None
        rows = marker[0][1]
        [(held,)] = self.client.execute(
            f"SELECT count() FROM {_quoted(self.database)}.{_quoted(self.table_name)}"
            " WHERE processing_date = %(date)s AND window_days = %(window_days)s", self._key)
        return rows if held == rows else None

    def exists(self) -> bool:
        return self.loaded_rows() is not None

    def touch(self, rows: int = 0,
              accounting: tuple[Iterable[str], Iterable[str]] = ((), ())) -> None:
        """`accounting`: the load's (ignored file columns, defaulted table columns), kept with the marker."""
        self._append(loaded=1, rows=rows, accounting=accounting)

    def remove(self) -> bool:
        """Returns whether the marker counted before (a row is appended either way)."""
        existed = self.exists()
        self._append(loaded=0, rows=0)
        return existed

    def _append(self, loaded: int, rows: int,
                accounting: tuple[Iterable[str], Iterable[str]] = ((), ())) -> None:
        """A row whose version is one above the key's latest, computed by the server."""
        ignored, defaulted = accounting
        table = f"{_quoted(self.database)}.{_quoted(MARKER_TABLE)}"
        self.client.execute(
            f"INSERT INTO {table} ({', '.join(name for name, _ in MARKER_COLUMNS)})"
            " SELECT %(network)s, toDate(%(date)s), toUInt16(%(window_days)s), %(table_name)s, toUInt8(%(loaded)s),"
            " toUInt64(%(rows)s), now(), max(version) + 1, CAST(%(ignored)s AS Array(String)),"
            f" CAST(%(defaulted)s AS Array(String)) FROM {table} WHERE {_KEY}",
            dict(self._key, loaded=int(loaded), rows=int(rows), ignored=list(ignored), defaulted=list(defaulted)))

    def __repr__(self) -> str:
        return (f"ClickHouseMarkerTarget({self.database}.{self.table_name} {self.network}"
                f" {self.date} {self.window_days})")
