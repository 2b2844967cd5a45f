"""A row in the network database's `ingestion_markers` table saying that one
table's (processing_date, window_days) slice is loaded, with its row count.

Markers are appended, never updated: touch() adds a row with loaded=1,
remove() one with loaded=0, and the row with the highest version wins."""
import datetime as dt
import time

import luigi

from workflows.schema import MARKER_TABLE, quote_identifier


def loaded_days(client, database, network, dates, window_days):
    """{date: {table_name: rows}} of the tables whose marker is set, for
    several days in one query."""
    result = client.execute(
        f"SELECT processing_date, table_name, argMax(rows, version)"
        f" FROM {quote_identifier(database)}.{MARKER_TABLE}"
        " WHERE network = %(network)s AND processing_date IN %(dates)s AND window_days = %(window_days)s"
        " GROUP BY processing_date, table_name HAVING argMax(loaded, version) = 1",
        {"network": network, "dates": tuple(dates), "window_days": int(window_days)},
    )
    days = {}
    for date, table_name, rows in result:
        days.setdefault(date, {})[table_name] = rows
    return days


def loaded_tables(client, database, network, date, window_days):
    """{table_name: rows} of the tables whose marker is set for one day."""
    return loaded_days(client, database, network, [date], window_days).get(date, {})


class ClickHouseMarkerTarget(luigi.Target):
    def __init__(self, client, database, network, date, window_days, table_name):
        self.client = client
        self.database = database
        self.key = {"network": network, "processing_date": date, "window_days": int(window_days),
                    "table_name": table_name}

    def loaded_rows(self):
        """Rows loaded, or None when the marker is absent."""
        k = self.key
        return loaded_tables(self.client, self.database, k["network"], k["processing_date"],
                             k["window_days"]).get(k["table_name"])

    def exists(self):
        return self.loaded_rows() is not None

    def touch(self, rows=0):
        self._append(loaded=1, rows=rows)

    def remove(self):
        self._append(loaded=0, rows=0)

    def _append(self, loaded, rows):
        row = dict(self.key, loaded=loaded, rows=rows, updated_at=dt.datetime.now().replace(microsecond=0),
                   version=time.time_ns())
        self.client.execute(
            f"INSERT INTO {quote_identifier(self.database)}.{MARKER_TABLE} ({', '.join(row)}) VALUES", [row]
        )

    def __repr__(self):
        k = self.key
        return (f"ClickHouseMarkerTarget({self.database}.{k['table_name']} {k['network']}"
                f" {k['processing_date']} {k['window_days']})")
