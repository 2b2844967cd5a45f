"""ClickHouse's HTTP interface (8123, or 8443 with TLS), for a SOT ClickHouse
whose SOT_PORT is that port: the two calls the export makes of a
clickhouse-driver Client, `execute` and `execute_iter`, each one POST.

The HTTP client is the standard library's http.client: one POST whose body is
read as it streams in, with timeouts and TLS, and no new dependency (requests,
already here through luigi, adds a connection pool this does not need and
proxy settings from the environment that should not reroute a database).
Results come as FORMAT Native, read by clickhouse-driver's own block reader,
so a value is what the native protocol gives: Decimal128 exact, Date, arrays,
strings, NaN and infinities, on 18.16 and on current servers. 18.16 has no
Parquet or Arrow format; TSV and JSON are text to parse again, and JSON
writes NaN as null. One block (max_block_size rows) is in memory at a time."""
import base64
import http.client
import re
import socket
import ssl
from collections.abc import Callable, Iterator
from typing import Any, Self
from urllib.parse import urlencode, urlsplit

# clickhouse-driver's readers, of the pinned version (setup.cfg): tests/test_conformance.py
# reads both server generations' Native output through them
from clickhouse_driver import Client
from clickhouse_driver.bufferedreader import CompressedBufferedReader
from clickhouse_driver.connection import ServerInfo
from clickhouse_driver.context import Context
from clickhouse_driver.errors import NetworkError, ServerException
from clickhouse_driver.streams.native import BlockInputStream
from clickhouse_driver.util.escape import escape_params

from .. import sql
from ..clients import LOAD_TIMEOUT_SECONDS

CHUNK_BYTES = 1 << 20
# ClickHouse appends an error that happens after the first bytes are sent to
# the body, as text; the body's last bytes are kept to find it
ERROR_TAIL_BYTES = 4096
ERROR_BODY_MAX_BYTES = 1 << 20  # what is read of an error's body, at most
_ERROR_CODE = re.compile(r"Code: (\d+)")


class HttpServerError(ServerException):
    """An error the server answered over HTTP, with its code, as the native protocol gives one."""


def answers_http(url: str, timeout: float) -> bool:
    """Whether `url` (http(s)://host:port) is ClickHouse's HTTP interface: its /ping says "Ok.".
    A native port answers an HTTP request too, with a 400 ("Port 9000 is for
    clickhouse-client program"), so only the status tells them apart. No
    server there (refused, no answer in `timeout`, no such host) raises:
    the native protocol would only meet the same, and be blamed for it."""
    connection = _connection(url, timeout)
    try:
        connection.request("GET", "/ping")
        response = connection.getresponse()
        return response.status == 200 and response.read(16).strip() == b"Ok."
    except (ConnectionRefusedError, TimeoutError, socket.gaierror):
        raise
    except (OSError, http.client.HTTPException):  # something else answers there (a TLS failure, not HTTP)
        return False
    finally:
        connection.close()


def _connection(url: str, timeout: float) -> http.client.HTTPConnection:
    parsed = urlsplit(url)
    if parsed.scheme == "https":  # the system's CAs, as the native client's SOT connection
        return http.client.HTTPSConnection(parsed.hostname or "", parsed.port, timeout=timeout,
                                           context=ssl.create_default_context())
    return http.client.HTTPConnection(parsed.hostname or "", parsed.port, timeout=timeout)


class HttpClickHouse:
    """A ClickHouse server over HTTP, read as clickhouse-driver reads one.
    `url` is http(s)://host:port; `credentials` is (user, password), sent as
    HTTP basic authentication, never in the URL."""

    def __init__(self, url: str, credentials: tuple[str, str], timeout: float) -> None:
        self.url, self.timeout = url, timeout
        token = base64.b64encode(":".join(credentials).encode()).decode()
        self.headers = {"Authorization": f"Basic {token}", "Content-Type": "text/plain; charset=utf-8"}
        self.context = native_context("UTC")

    def connect(self) -> Self:
        """Proves that the server answers and takes the credentials, and
        learns its time zone, which DateTime values are read in (as the
        native protocol's handshake tells the driver)."""
        [(timezone,)] = self.execute(*sql.server_timezone())
        self.context.server_info.timezone = timezone
        return self

    def execute(self, query: str, params: dict[str, Any] | None = None,
                settings: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        return list(self.execute_iter(query, params, settings))

    def execute_iter(self, query: str, params: dict[str, Any] | None = None,
                     settings: dict[str, Any] | None = None) -> Iterator[tuple[Any, ...]]:
        """The rows of `query` (params substituted as clickhouse-driver does),
        block by block; `settings` go along as the query's settings."""
        if params:
            query = query % escape_params(params, self.context)
        connection = _connection(self.url, self.timeout)
        try:
            connection.connect()
            connection.sock.settimeout(LOAD_TIMEOUT_SECONDS)  # a large export's first block may take long
            connection.request("POST", "/?" + urlencode(settings or {}), body=f"{query} FORMAT Native".encode(),
                               headers=self.headers)
            response = connection.getresponse()
            if response.status != 200:
                raise answered_error(response.read(ERROR_BODY_MAX_BYTES), response.status)
            yield from native_rows(response.read, self.context)
        except (OSError, http.client.HTTPException) as exc:
            raise NetworkError(f"{type(exc).__name__}: {exc}") from None
        finally:
            connection.close()


def native_context(timezone: str) -> Context:
    """What clickhouse-driver's readers need to know: its own client settings,
    and a server of protocol revision 0, which is what FORMAT Native over HTTP
    is written for (no block info, no serialization flags)."""
    context = Context()
    context.settings = {}
    context.client_settings = Client("localhost").connection.context.client_settings  # the driver's defaults
    context.server_info = ServerInfo("ClickHouse", 0, 0, 0, 0, timezone, "", 0)
    return context


def native_rows(read: Callable[[int], bytes], context: Context) -> Iterator[tuple[Any, ...]]:
    """The rows of a FORMAT Native body, block by block; `read(n)` gives its
    next bytes, b"" at its end."""
    body = _Body(read)
    # the driver's buffered reader over any source of chunks (it reads a socket for the native protocol)
    reader = CompressedBufferedReader(body.chunk, CHUNK_BYTES)
    blocks = BlockInputStream(reader, context)
    while not body.ended(reader):
        try:
            block = blocks.read()
        except Exception as exc:  # noqa: BLE001 (whatever the parser makes of bytes that are not a block)
            raise body.failure(exc) from None
        yield from block.get_rows()


class _Body:
    """A response body in chunks, read one ahead, so that its end is known at
    a block boundary; its last bytes kept for the error they may hold."""

    def __init__(self, read: Callable[[int], bytes]) -> None:
        self.read, self.tail = read, b""
        self.ahead = read(CHUNK_BYTES)

    def chunk(self) -> bytes:
        chunk, self.ahead = self.ahead, self.read(CHUNK_BYTES) if self.ahead else b""
        self.tail = (self.tail + chunk)[-ERROR_TAIL_BYTES:]
        return chunk

    def ended(self, reader: CompressedBufferedReader) -> bool:
        return not self.ahead and reader.position >= reader.current_buffer_size

    def failure(self, exc: Exception) -> Exception:
        """The error the server appended, or what the parser said."""
        rest = self.ahead + self.read(ERROR_BODY_MAX_BYTES)
        tail = (self.tail + rest)[-ERROR_TAIL_BYTES:]
        if b"Code: " in tail:
            return answered_error(tail[tail.rindex(b"Code: "):], 200)
        return NetworkError(f"not a Native block stream ({type(exc).__name__}: {exc})")


def answered_error(body: bytes, status: int) -> HttpServerError:
    """An HTTP error body as the native protocol's exception: 18.16 writes
    "Code: 193, e.displayText() = DB::Exception: Wrong password ..., e.what()
    = DB::Exception", current servers "Code: 516. DB::Exception: ... (AUTHENTICATION_FAILED)"."""
    text = body.decode(errors="replace").strip()
    code = _ERROR_CODE.match(text)
    message = text.partition("DB::Exception: ")[2] or text
    return HttpServerError(message.split(", e.what() = ")[0] or f"HTTP {status}", int(code[1]) if code else None)
