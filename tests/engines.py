"""The two server generations the conformance suite runs the product on:
ClickHouse 18.16 over the native protocol (clickhouse-driver) and the current
26.x engine in this process (chdb-core). Both have clickhouse-driver's
`execute(query, params)` and `execute_iter`, so the product's own functions
run on either unchanged, `insert_native`, which sends the loader's Native
blocks, and `http_rows`, a query's rows as the SOT export reads them over
HTTP."""
import datetime as dt
import io
import json
import os
import uuid
from decimal import Decimal

import numpy as np
from clickhouse_driver.context import Context
from clickhouse_driver.util.escape import escape_params

from workflows import insert, sql
from workflows.native import native_block
from workflows.sources.sot_http import HttpClickHouse, native_context, native_rows


class Server1816:
    """clickhouse-server 18.16 through the product's own insert path."""

    generation = "18.16"

    def __init__(self, client, http_port):
        self.client, self.http_port = client, http_port

    def execute(self, query, params=None):
        return self.client.execute(query, params)

    def execute_iter(self, query, params=None, settings=None):
        return self.client.execute_iter(query, params, settings=settings)

    def insert_native(self, statement, blocks, on_sent=None):
        insert.insert_blocks(self.client, statement, blocks, on_sent)

    def http_rows(self, query):
        """The rows of `query` as the SOT export reads them over HTTP: FORMAT Native, read by sot_http."""
        return HttpClickHouse(f"http://127.0.0.1:{self.http_port}", ("default", ""), 10).connect().execute(query)


class Engine26:
    """The ClickHouse 26.x engine of chdb-core, in this process."""

    generation = "26.x"

    def __init__(self, path):
        import chdb.session  # a test dependency only

        self.path = path
        self.session = chdb.session.Session(os.path.join(path, "data"))

    def version(self):
        return self.execute("SELECT version()")[0][0]

    def execute(self, query, params=None):
        if params:
            query = query % escape_params(params, Context())
        result = self.session.query(query, "JSONCompact")
        text = result.bytes()
        if not text:
            return []
        doc = json.loads(text, parse_float=str, parse_int=str)
        types = [column["type"] for column in doc["meta"]]
        return [tuple(_value(t, v) for t, v in zip(types, row)) for row in doc["data"]]

    def execute_iter(self, query, params=None, settings=None):
        return iter(self.execute(query, params))

    def http_rows(self, query):
        """The rows of `query` as the SOT export reads them over HTTP: the
        engine's FORMAT Native output (what its HTTP interface sends), read
        by sot_http."""
        [(timezone,)] = self.execute(*sql.server_timezone())
        return list(native_rows(io.BytesIO(self.session.query(query, "Native").bytes()).read,
                                native_context(timezone)))

    def native_stream(self, blocks, on_sent=None):
        """The blocks framed as ClickHouse's Native format, as one byte string."""
        stream = bytearray()
        for n_rows, encoded in blocks:
            for buffer in native_block(n_rows, encoded):
                stream += buffer
            if on_sent:
                on_sent(n_rows)
        return bytes(stream)

    def insert_native(self, statement, blocks, on_sent=None):
        """The product's INSERT statement, its data read from a Native-format
        file that holds exactly the column bytes the loader sends."""
        path = os.path.join(self.path, f"{uuid.uuid4().hex}.native")
        with open(path, "wb") as stream:
            stream.write(self.native_stream(blocks, on_sent))
        try:
            self.execute(statement.removesuffix(" VALUES") + f" SELECT * FROM file('{path}', 'Native')")
        finally:
            os.remove(path)


def _value(ch_type, value):
    """A JSONCompact value as clickhouse-driver returns the type."""
    if ch_type.startswith("Array("):
        return [_value(ch_type[6:-1], v) for v in value]
    if ch_type == "Date":
        return dt.date.fromisoformat(value)
    if ch_type.startswith("DateTime"):
        return dt.datetime.strptime(value, "%Y-%m-%d %H:%M:%S")
    if ch_type.startswith("Decimal"):
        return Decimal(value)
    if ch_type == "Float32":
        return float(np.float32(value))
    if ch_type == "Float64":
        return float(value)
    if ch_type.startswith(("UInt", "Int")):
        return int(value)
    return value
