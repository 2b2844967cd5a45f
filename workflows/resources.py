"""Clients of the servers the pipeline talks to, one per process and server:
luigi forks a process per task when it runs several workers, and a socket
must not cross a fork."""
import os
import socket

import redis
from clickhouse_driver import Client
from clickhouse_driver.errors import Error as ClickHouseError

from . import sql
from .errors import one_line
from .sot import SourceUnavailable

_clients = {}


def _cached(key, make):
    key = (os.getpid(),) + key
    if key not in _clients:
        _clients[key] = make()
    return _clients[key]


# A load's blocks and the server's answers to them may take this long; the
# connection and its handshake get settings.connect_timeout.
LOAD_TIMEOUT_SECONDS = 600
S3_REQUEST_TIMEOUT = 60  # one ranged read of workflows.sot.CHUNK_BYTES


def redis_client(settings):
    # every command is small: the connect timeout bounds each answer too
    return _cached(("redis", settings.redis_url, settings.connect_timeout),
                   lambda: redis.Redis.from_url(settings.redis_url, socket_connect_timeout=settings.connect_timeout,
                                                socket_timeout=settings.connect_timeout))


def redis_address(client):
    """host:port of a Redis client, for messages: never its password."""
    options = client.connection_pool.connection_kwargs
    return f"{options.get('host', 'localhost')}:{options.get('port', 6379)}"


def clickhouse_client(settings):
    """The ClickHouse the pipeline loads into."""
    s = settings
    return _clickhouse(s.clickhouse_replicas, s.clickhouse_user, s.clickhouse_password, s.clickhouse_secure,
                       s.clickhouse_ca_certs, s.clickhouse_verify, s.connect_timeout, s.compression)


def replica_clients(settings):
    """{host:port: client} of each replica of CLICKHOUSE_HOST on its own, for `status`."""
    s = settings
    return {f"{host}:{port}": _clickhouse(((host, port),), s.clickhouse_user, s.clickhouse_password,
                                          s.clickhouse_secure, s.clickhouse_ca_certs, s.clickhouse_verify,
                                          s.connect_timeout, s.compression, connect=False)
            for host, port in s.clickhouse_replicas}


def sot_clickhouse_client(settings):
    """The SOT ClickHouse that snapshots are exported from (SOT_URL=clickhouse://, publish)."""
    s = settings
    try:
        return _clickhouse(((s.sot_host, s.sot_port),), s.sot_user, s.sot_password, s.sot_secure, "", True,
                           s.connect_timeout, s.compression)
    except (ClickHouseError, OSError) as exc:
        if _answers_http(s.sot_host, s.sot_port, s.connect_timeout):
            raise SourceUnavailable(f"SOT ClickHouse {s.sot_host}:{s.sot_port} answers HTTP: SOT_PORT must be"
                                    " its native protocol port (9000, or 9440 with SOT_SECURE=1)") from None
        raise SourceUnavailable(f"SOT ClickHouse {s.sot_host}:{s.sot_port}: {one_line(exc)}") from None


def _clickhouse(replicas, user, password, secure, ca_certs, verify, connect_timeout, compression, connect=True):
    """A client of the first of `replicas` ((host, port), ...) that turns to
    the next when one does not answer (clickhouse-driver's alt_hosts);
    connected now unless not `connect`."""
    (host, port), others = replicas[0], replicas[1:]

    def make():
        client = Client(
            host=host,
            port=port,
            alt_hosts=",".join(f"{h}:{p}" for h, p in others) or None,
            user=user,
            password=password,
            secure=secure,
            verify=verify,
            ca_certs=ca_certs or None,  # None: the system's CAs
            client_name="sot-ingestion",
            connect_timeout=connect_timeout,
            send_receive_timeout=connect_timeout,
            compression=compression or False,
        )
        return _connected(client) if connect else client
    return _cached(("clickhouse", replicas, user, password, secure, ca_certs, verify, connect_timeout, compression,
                    connect), make)


def _answers_http(host, port, timeout):
    """Whether host:port is an HTTP server (ClickHouse's 8123, say)."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(b"GET /ping HTTP/1.0\r\n\r\n")
            return sock.recv(5) == b"HTTP/"
    except OSError:
        return False


def s3_filesystem(settings):
    """pyarrow's S3 file system for the SOT store: the AWS credential chain,
    or unsigned requests (SOT_S3_ANONYMOUS=1). Its own retries are off:
    workflows.sot retries and logs each one."""
    from pyarrow.fs import AwsStandardS3RetryStrategy, S3FileSystem
    s = settings
    return _cached(("s3", s.sot_s3_endpoint, s.sot_s3_region, s.sot_s3_anonymous, s.connect_timeout),
                   lambda: S3FileSystem(anonymous=s.sot_s3_anonymous, region=s.sot_s3_region,
                                        endpoint_override=s.sot_s3_endpoint or None,
                                        connect_timeout=s.connect_timeout, request_timeout=S3_REQUEST_TIMEOUT,
                                        retry_strategy=AwsStandardS3RetryStrategy(max_attempts=1)))


def _connected(client):
    """Connects now, handshake and a first answer included, within the
    connect timeout (the driver would give the handshake the long timeout of
    a load), then allows the load's. A later reconnect gets the long one."""
    client.execute(*sql.ping())
    client.connection.send_receive_timeout = LOAD_TIMEOUT_SECONDS
    client.connection.socket.settimeout(LOAD_TIMEOUT_SECONDS)
    return client
