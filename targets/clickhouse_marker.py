"""A row in the network database's `ingestion_markers` table saying that one
table's (processing_date, window_days) slice is loaded, with its row count.

Markers are appended, never updated: touch() adds a row with loaded=1,
remove() one with loaded=0, and the row with the highest version wins. The
server numbers the versions of a key one after another, so the order of
writes decides, not the clocks of the hosts that wrote them."""
import luigi

from workflows import sql


def loaded_days(client, database, network, dates, window_days, tables=None):
    """{date: {table_name: rows}} of the tables (all, or those in `tables`)
    whose marker is set and whose day holds the rows the marker counted: a
    day whose rows changed since (a server that crashed after a swap can
    bring replaced parts back) counts as not loaded, so the next run loads it
    again. One query for the markers and one per table marked."""
    marked = {}
    for date, table_name, rows in client.execute(*sql.loaded_days(database, network, dates, window_days)):
        if tables is None or table_name in tables:
            marked.setdefault(table_name, {})[date] = rows
    days = {}
    for table_name, rows_by_date in marked.items():
        held = dict(client.execute(*sql.day_counts(database, table_name, list(rows_by_date), window_days)))
        for date, rows in rows_by_date.items():
            if held.get(date, 0) == rows:
                days.setdefault(date, {})[table_name] = rows
    return days


class ClickHouseMarkerTarget(luigi.Target):
    def __init__(self, client, database, network, date, window_days, table_name):
        self.client = client
        self.database = database
        self.network, self.date, self.window_days, self.table_name = network, date, int(window_days), table_name

    def loaded_rows(self):
        """Rows loaded, or None when the marker is absent."""
        days = loaded_days(self.client, self.database, self.network, [self.date], self.window_days,
                           tables=[self.table_name])
        return days.get(self.date, {}).get(self.table_name)

    def exists(self):
        return self.loaded_rows() is not None

    def touch(self, rows=0, accounting=((), ())):
        """`accounting`: the load's (ignored file columns, defaulted table columns), kept with the marker."""
        self._append(loaded=1, rows=rows, accounting=accounting)

    def remove(self):
        """Returns whether the marker counted before (a row is appended either way)."""
        existed = self.exists()
        self._append(loaded=0, rows=0)
        return existed

    def _append(self, loaded, rows, accounting=((), ())):
        key = {"network": self.network, "date": self.date, "window_days": self.window_days,
               "table_name": self.table_name}
        self.client.execute(*sql.append_marker(self.database, key, loaded, rows, accounting))

    def __repr__(self):
        return (f"ClickHouseMarkerTarget({self.database}.{self.table_name} {self.network}"
                f" {self.date} {self.window_days})")
