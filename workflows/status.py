"""The state of many days at once, for status, the day's checks and
backfills: which tables' days are loaded, in two queries per table rather
than two per day."""
from . import sql


def loaded_days(client, database, network, dates, window_days):
    """{date: {table_name: rows}} of the tables whose marker is set and whose
    day holds the rows the marker counted (as ClickHouseMarkerTarget.exists
    has it, for many days at once). One query for the markers and one per
    table marked."""
    marked = {}
    for date, table_name, rows in client.execute(*sql.loaded_days(database, network, dates, window_days)):
        marked.setdefault(table_name, {})[date] = rows
    days = {}
    for table_name, rows_by_date in marked.items():
        held = dict(client.execute(*sql.day_counts(database, table_name, list(rows_by_date), window_days)))
        for date, rows in rows_by_date.items():
            if held.get(date, 0) == rows:
                days.setdefault(date, {})[table_name] = rows
    return days
