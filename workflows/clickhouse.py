"""ClickHouse access: schema, the streaming Native insert and the atomic swap
of one (processing_date, window_days) slice. The clients are in resources."""
from contextlib import contextmanager

from clickhouse_driver import defines
from clickhouse_driver.block import BlockInfo, ColumnOrientedBlock
from clickhouse_driver.protocol import ClientPacketTypes
from clickhouse_driver.varint import write_varint
from clickhouse_driver.writer import write_binary_str, write_binary_uint8

from .schema import TABLES, create_marker_table_sql, create_table_sql, quote_identifier


def ensure_schema(ch, database):
    """Creates the database, the four tables and the marker table when missing."""
    ch.execute(f"CREATE DATABASE IF NOT EXISTS {quote_identifier(database)}")
    for table in TABLES.values():
        ch.execute(create_table_sql(database, table))
    ch.execute(create_marker_table_sql(database))


def partition_literal(date, window_days):
    return f"('{date.isoformat()}', {int(window_days)})"


def recreate_staging(ch, database, table, staging):
    """An empty table of the same structure and partitioning, for one load."""
    db = quote_identifier(database)
    ch.execute(f"DROP TABLE IF EXISTS {db}.{quote_identifier(staging)}")
    ch.execute(f"CREATE TABLE {db}.{quote_identifier(staging)} AS {db}.{quote_identifier(table)}")


def drop_table(ch, database, table):
    ch.execute(f"DROP TABLE IF EXISTS {quote_identifier(database)}.{quote_identifier(table)}")


def replace_partition(ch, database, table, staging, date, window_days):
    """Atomically swaps the table's slice for the staging table's: a reader
    sees the old day or the new one, never a mix. An empty staging slice
    empties the table's."""
    db = quote_identifier(database)
    ch.execute(
        f"ALTER TABLE {db}.{quote_identifier(table)} REPLACE PARTITION {partition_literal(date, window_days)}"
        f" FROM {db}.{quote_identifier(staging)}"
    )


def count_rows(ch, database, table, date, window_days):
    return ch.execute(
        f"SELECT count() FROM {quote_identifier(database)}.{quote_identifier(table)}"
        " WHERE processing_date = %(date)s AND window_days = %(window_days)s",
        {"date": date, "window_days": window_days},
    )[0][0]


@contextmanager
def native_insert(ch, database, table, columns):
    """Opens `INSERT INTO database.table (columns)` and yields a function
    `send(n_rows, [(name, ch_type, [buffers]), ...])` that writes one block
    of pre-encoded Native column data. The insert is committed when the block
    stream ends; on an exception the connection is dropped, so the server
    discards the unfinished insert.

    clickhouse-driver has no public call for sending pre-encoded columns;
    this speaks its connection's packet layer exactly as Client.execute does
    for an INSERT, with our buffers in place of its per-value serialisation."""
    query = (
        f"INSERT INTO {quote_identifier(database)}.{quote_identifier(table)}"
        f" ({', '.join(quote_identifier(c) for c in columns)}) VALUES"
    )
    ch.establish_connection(None)
    connection = ch.connection
    if connection.compression:
        raise ValueError("native_insert writes uncompressed blocks; use a client without compression")
    try:
        connection.send_query(query)
        connection.send_external_tables(None)
        ch.receive_sample_block()

        revision = connection.server_info.used_revision

        def send(n_rows, encoded_columns):
            out = connection.fout
            write_varint(ClientPacketTypes.DATA, out)
            if revision >= defines.DBMS_MIN_REVISION_WITH_TEMPORARY_TABLES:
                write_binary_str("", out)
            if revision >= defines.DBMS_MIN_REVISION_WITH_BLOCK_INFO:
                BlockInfo().write(out)
            write_varint(len(encoded_columns), out)
            write_varint(n_rows, out)
            for name, ch_type, buffers in encoded_columns:
                write_binary_str(name, out)
                write_binary_str(ch_type, out)
                if revision >= defines.DBMS_MIN_REVISION_WITH_CUSTOM_SERIALIZATION:
                    write_binary_uint8(0, out)
                out.flush()
                for buffer in buffers:  # straight to the socket, without a copy
                    connection.socket.sendall(memoryview(buffer).cast("B"))
            out.flush()

        yield send
        connection.send_data(ColumnOrientedBlock())  # an empty block ends the stream
        ch.receive_end_of_insert_query()
    except BaseException:
        ch.disconnect()
        raise
