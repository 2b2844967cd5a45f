"""The streaming insert: pre-encoded Native column blocks sent as one
INSERT over clickhouse-driver's connection, the next block read, encoded
and compressed in a thread while this one is sent."""
import io
import queue
import struct
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

import lz4.block
from clickhouse_cityhash.cityhash import CityHash128
from clickhouse_driver import Client, defines
from clickhouse_driver.block import BlockInfo, ColumnOrientedBlock
from clickhouse_driver.connection import Connection
from clickhouse_driver.protocol import ClientPacketTypes, CompressionMethodByte
from clickhouse_driver.result import QueryInfo
from clickhouse_driver.varint import write_varint
from clickhouse_driver.writer import write_binary_str, write_binary_uint128

from .native import EncodedColumn, native_block

# Buffers smaller than this go through the connection's write buffer;
# larger ones straight to the socket, without a copy.
_SMALL_BUFFER = 64 << 10
_FRAME_HEADER = 9  # method byte, compressed size, uncompressed size
READ_AHEAD_BLOCKS = 1

Blocks = Iterable[tuple[int, list[EncodedColumn]]]  # (rows, the columns' Native data) per block
# sends `blocks` as the INSERT statement's data, calling on_sent(rows) after each
Inserter = Callable[[str, Blocks, "Callable[[int], None] | None"], Any]
T = TypeVar("T")


# What the product relies on inside clickhouse-driver, which has no public call
# for sending pre-encoded blocks; setup.cfg pins the version it was read from
# and tests/test_units.py checks these are still there.
DRIVER_INTERNALS = ("Client.establish_connection", "Client.receive_sample_block", "Client.receive_profile_events",
                    "Client.receive_end_of_insert_query", "Connection.send_query", "Connection.send_external_tables",
                    "Connection.send_data")


def insert_blocks(ch: Client, statement: str, blocks: Blocks, on_sent: Callable[[int], None] | None = None) -> int:
    """Inserts `blocks`, (n_rows, [(name, ch_type, [buffers])]) each, as the
    data of `statement` (sql.insert_rows: `INSERT INTO db.table (columns)
    VALUES`) in pre-encoded Native columns, and calls `on_sent(n_rows)`
    after each block. The next block is read from
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
        connection.send_query(statement)
        connection.send_external_tables(None)
        ch.receive_sample_block()
        revision = connection.server_info.used_revision
        framed = _lz4_framed if connection.compression else _plain
        payloads = ((n_rows, framed(_block_info(revision), native_block(n_rows, encoded, revision)))
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


def _block_info(revision: int) -> bytes:
    info = io.BytesIO()
    if revision >= defines.DBMS_MIN_REVISION_WITH_BLOCK_INFO:
        BlockInfo().write(info)
    return info.getvalue()


def _plain(block_info: bytes, block: list) -> list:
    return [block_info, *block]


def _lz4_framed(block_info: bytes, block: list) -> list:
    data = bytearray(block_info)
    for buffer in block:
        data += buffer  # the one copy of the block
    return compressed_frame(data)


def compressed_frame(data: bytes | bytearray) -> list[bytes]:
    """`data` as one LZ4 frame, as clickhouse-driver's
    CompressedBlockOutputStream and clickhouse-client send it: the
    CityHash128 of the rest, then method byte, compressed and uncompressed
    sizes, and the compressed data. Returns [checksum, rest]."""
    body = lz4.block.compress(data, store_size=False)
    frame = struct.pack("<BII", CompressionMethodByte.LZ4, _FRAME_HEADER + len(body), len(data)) + body
    checksum = io.BytesIO()
    write_binary_uint128(CityHash128(frame), checksum)
    return [checksum.getvalue(), frame]


def _send(connection: Connection, buffers: list) -> int:
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


def read_ahead(items: Iterable[T], depth: int) -> Iterator[T]:
    """Iterates `items` in a thread, up to `depth` ahead, so that producing
    the next item (reading, encoding and compressing a block: all release
    the GIL) overlaps using this one. An exception in the thread is raised
    here; closing the iteration stops the thread."""
    pending: queue.Queue[tuple[Any, BaseException | None]] = queue.Queue(maxsize=depth)
    stop = threading.Event()
    end = object()

    def put(entry: tuple[Any, BaseException | None]) -> bool:
        while not stop.is_set():
            try:
                pending.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
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
