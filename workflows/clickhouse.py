"""ClickHouse access: schema, staging tables, the streaming Native insert and
the atomic swap of one (processing_date, window_days) slice. The statements
are in workflows.sql; the clients in workflows.resources."""
import hashlib
import io
import queue
import socket
import struct
import threading
import uuid
from contextlib import contextmanager

import lz4.block
from clickhouse_cityhash.cityhash import CityHash128
from clickhouse_driver import defines
from clickhouse_driver.block import BlockInfo, ColumnOrientedBlock
from clickhouse_driver.errors import ErrorCodes, ServerException
from clickhouse_driver.protocol import ClientPacketTypes, CompressionMethodByte
from clickhouse_driver.result import QueryInfo
from clickhouse_driver.varint import write_varint
from clickhouse_driver.writer import write_binary_str, write_binary_uint128

from targets.clickhouse_marker import MARKER_COLUMNS_ADDED, MARKER_TABLE

from . import leases, sql
from .layout import ServedTable, layout_differences
from .native import native_block
from .schema import COMPLETE_DAYS_VIEW, STAGING_PREFIX, TABLES

# A staging table older than this belongs to a load that died (a load of a
# 5M-row file takes about a minute); the next load in the database drops it.
# One whose process is gone from this host is dropped at once.
STAGING_MAX_AGE_SECONDS = 2 * 3600
HOST_TAG = hashlib.sha1(socket.gethostname().encode()).hexdigest()[:8]
# Buffers smaller than this go through the connection's write buffer;
# larger ones straight to the socket, without a copy.
_SMALL_BUFFER = 64 << 10
_FRAME_HEADER = 9  # method byte, compressed size, uncompressed size
READ_AHEAD_BLOCKS = 1


class DayCountMismatch(RuntimeError):
    """After the swap the day does not hold the rows that were loaded."""


class LayoutMismatch(RuntimeError):
    """A table of the database cannot take a day swap (made by the system
    this pipeline replaces: month partitions, another order); the message
    names the table and what differs."""


def ensure_schema(ch, database, cluster=None):
    """Creates the database, the four tables, the marker table and the
    complete_days view, on every replica of `cluster`, when any is missing
    on the server `ch` talks to. Checked first, since DDL ON CLUSTER waits
    for every replica: with one down, a run would wait out
    distributed_ddl_task_timeout (180 s) and fail. Raises LayoutMismatch,
    before any load, for a table that is there but cannot take a day swap."""
    wanted = {*TABLES, MARKER_TABLE, COMPLETE_DAYS_VIEW}
    present = {name for (name,) in listed(ch, sql.table_names(database))}
    check_layouts(ch, database)
    if MARKER_TABLE in present:
        add_marker_columns(ch, database, cluster)
    if wanted <= present:
        return
    ch.execute(*sql.create_database(database, cluster))
    for table in TABLES.values():
        ch.execute(*sql.create_table(database, table, cluster=cluster))
    ch.execute(*sql.create_marker_table(database, cluster))
    ch.execute(*sql.create_complete_days_view(database, list(TABLES), cluster))


def add_marker_columns(ch, database, cluster=None):
    """The marker columns added since a marker table was made."""
    held = {name for _, name, _ in ch.execute(*sql.served_columns(database, [MARKER_TABLE]))}
    for name, type_ in MARKER_COLUMNS_ADDED:
        if name not in held:
            ch.execute(*sql.add_column(database, MARKER_TABLE, name, type_, cluster))


def served_tables(ch, database):
    """{name: layout.ServedTable} of the four tables the database holds."""
    names = list(TABLES)
    described = listed(ch, sql.served_tables(database, names))
    if not described:
        return {}
    columns, indexes = {}, {}
    for table, name, type_ in ch.execute(*sql.served_columns(database, names)):
        columns.setdefault(table, []).append((name, type_))
    if ch.execute(*sql.has_skip_indexes())[0][0]:
        for table, clause in ch.execute(*sql.skip_indexes(database, names)):
            indexes.setdefault(table, []).append(clause)
    return {name: ServedTable(engine, partition, sorting, tuple(columns.get(name, ())), tuple(indexes.get(name, ())))
            for name, engine, partition, sorting in described}


def check_layouts(ch, database):
    """LayoutMismatch naming the first table that cannot take a day swap, and the others."""
    served = served_tables(ch, database)
    mismatched = {name: differences for name, table in TABLES.items()
                  if name in served and (differences := layout_differences(table, served[name]))}
    if mismatched:
        (first, differences), *others = mismatched.items()
        also = f" (and {', '.join(name for name, _ in others)})" if others else ""
        raise LayoutMismatch(f"{database}.{first}{also} cannot take a day swap: {'; '.join(differences)}")


def swap_tables(ch, database, name, other):
    """Gives each table the other's name: atomic in an Atomic database
    (current servers); two renames in one statement in an Ordinary one
    (18.16), between which a reader may find `name` missing."""
    if ch.execute(*sql.database_engine(database))[0][0] == "Atomic":
        ch.execute(*sql.exchange_tables(database, name, other))
        return
    spare = f"{name}__exchanging"
    ch.execute(*sql.rename_tables(database, [(name, spare), (other, name), (spare, other)]))


def listed(ch, statement, attempts=5):
    """The rows of a query on system.tables. ClickHouse 18.16 fails one when a
    table it lists is dropped or renamed while it reads (a concurrent load's
    staging table): UNKNOWN_TABLE, or "File not found" for its metadata file.
    Reading again gets a consistent list."""
    for attempt in range(1, attempts + 1):
        try:
            return ch.execute(*statement)
        except ServerException as exc:
            gone = exc.code == ErrorCodes.UNKNOWN_TABLE or (
                exc.code == ErrorCodes.POCO_EXCEPTION and "File not found" in exc.message)
            if not gone or attempt == attempts:
                raise


def database_exists(ch, database):
    return ch.execute(*sql.database_exists(database))[0][0] > 0


def count_rows(ch, database, table, date, window_days):
    return dict(ch.execute(*sql.day_counts(database, table, [date], window_days))).get(date, 0)


def staging_name(table_name, date, window_days, download_id=None):
    """A name of its own for each staging table, so concurrent loads of one
    day never share one. It carries the host, and the owner: the process
    that drops it when done (leases.owner(), whose lease says it lives), or,
    for a table staged ahead of its swap (keep_staged), `d` and the
    download it was staged from."""
    return f"{_owned_prefix(table_name, date, window_days, download_id)}{uuid.uuid4().hex[:6]}"


def _owned_prefix(table_name, date, window_days, download_id=None):
    owner = f"d{download_id[:12]}" if download_id else leases.owner()
    return f"{_day_prefix(table_name, date, window_days)}{owner}_"


def _day_prefix(table_name, date, window_days):
    """Of the staging tables of one table's day on this host, whatever their owner."""
    return f"{STAGING_PREFIX}{table_name}_{date:%Y%m%d}_{int(window_days)}_{HOST_TAG}_"


def staging_owner(name):
    """The owner a staging table's name carries."""
    return name.rsplit("_", 2)[1]


def abandoned(name, age_seconds, holders, max_age_seconds=STAGING_MAX_AGE_SECONDS):
    """Whether a staging table is no longer wanted: its owning process's
    lease has lapsed (it is not among `holders`), or, staged ahead of its
    swap, the table is older than max_age_seconds."""
    owner = staging_owner(name)
    return age_seconds >= max_age_seconds or (not owner.startswith("d") and owner not in holders)


def sweep_staging(ch, database, holders=None, max_age_seconds=STAGING_MAX_AGE_SECONDS):
    """Drops the staging tables that dead loads left; returns their names.
    `holders(owners)`: those whose lease is held (leases.holders); without
    it only age counts."""
    tables = listed(ch, sql.staging_tables(database))
    owners = {staging_owner(name) for name, _ in tables}
    alive = holders(owners) if holders else owners
    stale = [name for name, age in tables if abandoned(name, age, alive, max_age_seconds)]
    for name in stale:
        drop_table(ch, database, name)
    return stale


@contextmanager
def staging_table(ch, database, table, date, window_days):
    """A new empty staging table of this process for `table`'s day, dropped
    afterwards unless keep_staged took it."""
    name = staging_name(table.name, date, window_days)
    ch.execute(*sql.create_table(database, table, name))
    with dropped_after(ch, database, name):
        yield name


@contextmanager
def dropped_after(ch, database, name):
    try:
        yield name
    finally:
        drop_table(ch, database, name)


def keep_staged(ch, database, staging, table_name, date, window_days, download_id):
    """Hands a filled staging table over to the load of `download_id` that
    will swap it in (claim_staged): it then outlives this process."""
    ch.execute(*sql.rename_tables(database, [(staging, staging_name(table_name, date, window_days, download_id))]))


def claim_staged(ch, database, table_name, date, window_days, download_id, rows):
    """The table staged on this host from `download_id`, renamed to a staging
    table of this process, so that no other load takes it and it goes if
    this process dies; None when there is none holding `rows` rows (swept,
    staged through another replica, taken by a concurrent load). The caller
    drops it (dropped_after)."""
    prefix = _owned_prefix(table_name, date, window_days, download_id)
    for name, _ in listed(ch, sql.staging_tables(database)):
        if not name.startswith(prefix):
            continue
        mine = staging_name(table_name, date, window_days)
        try:
            ch.execute(*sql.rename_tables(database, [(name, mine)]))
        except ServerException as exc:
            if exc.code == ErrorCodes.UNKNOWN_TABLE:  # a concurrent load took it first
                continue
            raise
        if count_all_rows(ch, database, mine) == rows:
            return mine
        drop_table(ch, database, mine)
    return None


def drop_staged(ch, database, date, window_days):
    """Drops what is left staged of the day from any download (a concurrent
    run's stage that no load needed, a stage whose run was killed before
    its loads); returns the names."""
    prefixes = tuple(_day_prefix(t, date, window_days) for t in TABLES)
    left = [name for name, _ in listed(ch, sql.staging_tables(database))
            if name.startswith(prefixes) and staging_owner(name).startswith("d")]
    for name in left:
        drop_table(ch, database, name)
    return left


def drop_table(ch, database, name):
    ch.execute(*sql.drop_table(database, name))


def count_all_rows(ch, database, name):
    return ch.execute(*sql.count_rows(database, name))[0][0]


def swap_day(ch, database, table, staging, date, window_days, rows):
    """Makes the table's (date, window_days) slice the staging table's
    `rows` rows, atomically: a reader sees the old day or the new one. A day
    of zero rows is dropped, since current servers refuse to replace from an
    empty source. The day is counted afterwards, so a concurrent change
    cannot leave a day marked loaded with other rows than were loaded."""
    if rows:
        ch.execute(*sql.replace_partition(database, table, staging, date, window_days))
    else:
        ch.execute(*sql.drop_partition(database, table, date, window_days))
    found = count_rows(ch, database, table, date, window_days)
    if found != rows:
        raise DayCountMismatch(f"{table}: after the swap the day holds {found:,} rows, not the {rows:,} loaded;"
                               " did another load of the same day run at the same time?")


# What the product relies on inside clickhouse-driver, which has no public call
# for sending pre-encoded blocks; setup.cfg pins the version it was read from
# and tests/test_units.py checks these are still there.
DRIVER_INTERNALS = ("Client.establish_connection", "Client.receive_sample_block", "Client.receive_profile_events",
                    "Client.receive_end_of_insert_query", "Connection.send_query", "Connection.send_external_tables",
                    "Connection.send_data")


def insert_blocks(ch, database, table, columns, blocks, on_sent=None):
    """Inserts `blocks`, (n_rows, [(name, ch_type, [buffers])]) each, as one
    `INSERT INTO database.table (columns)` of pre-encoded Native column data,
    and calls `on_sent(n_rows)` after each block. The next block is read from
    `blocks` (and compressed) in a thread while this one is sent, so the
    server never waits for either. The insert is committed when the block
    stream ends; on an exception the connection is dropped, so the server
    discards the unfinished insert.

    This speaks clickhouse-driver's packet layer as `Client.send_data` does
    for an INSERT, our buffers in place of its per-value serialisation: after
    every block a current server (protocol 54456+) answers with ProfileEvents,
    and those, progress and log packets are read before the next block.
    A client with compression sends each block as an LZ4 frame. Returns the
    bytes of blocks sent (compressed, when they are)."""
    ch.establish_connection(None)
    ch.last_query = QueryInfo()
    connection = ch.connection
    sent = 0
    try:
        connection.send_query(sql.insert_rows(database, table, columns)[0])
        connection.send_external_tables(None)
        ch.receive_sample_block()
        revision = connection.server_info.used_revision
        custom_serialization = revision >= defines.DBMS_MIN_REVISION_WITH_CUSTOM_SERIALIZATION
        framed = _lz4_framed if connection.compression else _plain
        payloads = ((n_rows, framed(_block_info(revision), native_block(n_rows, encoded, custom_serialization)))
                    for n_rows, encoded in blocks)
        out = connection.fout
        for n_rows, payload in read_ahead(payloads, READ_AHEAD_BLOCKS):
            write_varint(ClientPacketTypes.DATA, out)
            if revision >= defines.DBMS_MIN_REVISION_WITH_TEMPORARY_TABLES:
                write_binary_str("", out)
            sent += _send(connection, payload)
            ch.receive_profile_events()
            if on_sent:
                on_sent(n_rows)
        connection.send_data(ColumnOrientedBlock())  # an empty block ends the stream
        ch.receive_profile_events()
        ch.receive_end_of_insert_query()
    except BaseException:
        ch.disconnect()
        raise
    return sent


def _block_info(revision):
    info = io.BytesIO()
    if revision >= defines.DBMS_MIN_REVISION_WITH_BLOCK_INFO:
        BlockInfo().write(info)
    return info.getvalue()


def _plain(block_info, block):
    return [block_info, *block]


def _lz4_framed(block_info, block):
    data = bytearray(block_info)
    for buffer in block:
        data += buffer  # the one copy of the block
    return compressed_frame(data)


def compressed_frame(data):
    """`data` as one LZ4 frame, as clickhouse-driver's
    CompressedBlockOutputStream and clickhouse-client send it: the
    CityHash128 of the rest, then method byte, compressed and uncompressed
    sizes, and the compressed data. Returns [checksum, rest]."""
    body = lz4.block.compress(data, store_size=False)
    frame = struct.pack("<BII", CompressionMethodByte.LZ4, _FRAME_HEADER + len(body), len(data)) + body
    checksum = io.BytesIO()
    write_binary_uint128(CityHash128(frame), checksum)
    return [checksum.getvalue(), frame]


def _send(connection, buffers):
    """Small buffers through the connection's write buffer, large ones
    straight to the socket, without a copy; returns the bytes sent."""
    out = connection.fout
    sent = 0
    for buffer in buffers:
        sent += len(buffer)
        if len(buffer) < _SMALL_BUFFER:
            out.write(bytes(buffer))  # the driver's writer takes bytes only
        else:
            out.flush()
            connection.socket.sendall(buffer)
    out.flush()
    return sent


def read_ahead(items, depth):
    """Iterates `items` in a thread, up to `depth` ahead, so that producing
    the next item (reading, encoding and compressing a block: all release
    the GIL) overlaps using this one. An exception in the thread is raised
    here; closing the iteration stops the thread."""
    pending = queue.Queue(maxsize=depth)
    stop = threading.Event()
    end = object()

    def put(entry):
        while not stop.is_set():
            try:
                pending.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce():
        try:
            for item in items:
                if not put((item, None)):
                    return
            put((end, None))
        except BaseException as exc:  # handed to the consumer
            put((end, exc))

    thread = threading.Thread(target=produce, name="insert-read-ahead", daemon=True)
    thread.start()
    try:
        while True:
            item, error = pending.get()
            if item is end:
                if error:
                    raise error
                return
            yield item
    finally:
        stop.set()
        thread.join()
