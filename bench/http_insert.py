"""The loader's Native blocks over ClickHouse's HTTP interface, the public
path: `POST /?query=INSERT INTO db.t (columns) FORMAT Native` with the blocks,
in the Native format, as a chunked body. The bench (j) measures it against
the driver's packet layer (workflows.insert), which needs private members of
one clickhouse-driver version."""
import base64
import http.client
import socket
import urllib.parse
from collections.abc import Callable

from workflows.insert import Blocks, Inserter, compressed_frame, read_ahead
from workflows.native import native_block

# As workflows.insert sends them: small buffers gathered, large ones straight
# to the socket, without a copy; one chunk per block, the next read ahead.
_SMALL_BUFFER = 64 << 10
READ_AHEAD_BLOCKS = 1


class HttpInsertError(RuntimeError):
    """The server refused the insert; the message is its error text."""


def http_insert(host: str, port: int, user: str = "default", password: str = "", lz4: bool = False,
                timeout: float = 600) -> Inserter:
    """An inserter (DayLoad's `insert`) that sends each INSERT as one POST,
    on a connection of its own; returns the body bytes of blocks sent. With
    `lz4`, each block is one ClickHouse LZ4 frame, as the driver's
    compression sends it, and the server is asked to `decompress=1`."""
    credentials = base64.b64encode(f"{user}:{password}".encode()).decode()

    def insert(statement: str, blocks: Blocks, on_sent: Callable[[int], None] | None = None) -> int:
        head, values, _ = statement.rpartition(" VALUES")
        if not values:
            raise ValueError(f"not an INSERT ... VALUES statement: {statement[:80]}")
        params = {"query": f"{head} FORMAT Native", **({"decompress": "1"} if lz4 else {})}
        connection = http.client.HTTPConnection(host, port, timeout=timeout)
        try:
            connection.putrequest("POST", "/?" + urllib.parse.urlencode(params))
            connection.putheader("Authorization", f"Basic {credentials}")
            connection.putheader("Transfer-Encoding", "chunked")
            connection.putheader("Content-Type", "application/octet-stream")
            connection.endheaders()
            # http.client leaves Nagle on: a small write behind a large one would wait for its ACK
            connection.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            framed = _lz4_framed if lz4 else _plain
            payloads = ((n_rows, framed(native_block(n_rows, encoded))) for n_rows, encoded in blocks)
            sent = 0
            try:
                for n_rows, payload in read_ahead(payloads, READ_AHEAD_BLOCKS):
                    sent += _send_chunk(connection.sock, payload)
                    if on_sent:
                        on_sent(n_rows)
                connection.sock.sendall(b"0\r\n\r\n")
            except OSError as exc:  # the server may have answered and closed: its error says why
                try:
                    _raise_refusal(connection)
                except (OSError, http.client.HTTPException):  # it did not: the send's error stands
                    pass
                raise exc
            _raise_refusal(connection)
            return sent
        finally:
            connection.close()

    return insert


def _plain(block: list) -> list:
    return block


def _lz4_framed(block: list) -> list:
    data = bytearray()
    for buffer in block:
        data += buffer  # the one copy of the block
    return compressed_frame(data)


def _send_chunk(sock: socket.socket, buffers: list) -> int:
    """`buffers` as one chunk of the chunked body; returns its data bytes."""
    size = sum(len(buffer) for buffer in buffers)
    pending = bytearray(b"%x\r\n" % size)
    for buffer in buffers:
        if len(buffer) < _SMALL_BUFFER:
            pending += buffer
        else:
            sock.sendall(pending)
            pending.clear()
            sock.sendall(buffer)
    pending += b"\r\n"
    sock.sendall(pending)
    return size


def _raise_refusal(connection: http.client.HTTPConnection) -> None:
    """Raises HttpInsertError with the server's text unless it answered 200."""
    response = connection.getresponse()
    body = response.read()
    if response.status != 200:
        text = body.decode(errors="replace").strip()
        raise HttpInsertError(f"HTTP {response.status} from ClickHouse: {text}")
