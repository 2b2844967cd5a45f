"""Clients of the servers the pipeline talks to, one per process and server:
luigi forks a process per task when it runs several workers, and a socket
must not cross a fork."""
import ipaddress
import os
from collections.abc import Callable, Hashable
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import redis
from clickhouse_driver import Client

from . import sql
from .config import Settings
from .errors import one_line

T = TypeVar("T")
_clients: dict[Hashable, Any] = {}


def cached(key: tuple, make: Callable[[], T]) -> T:
    key = (os.getpid(),) + key
    if key not in _clients:
        _clients[key] = make()
    return _clients[key]


# A load's blocks and the server's answers to them may take this long; the
# connection and its handshake get settings.connect_timeout.
LOAD_TIMEOUT_SECONDS = 600


def redis_client(settings: Settings) -> redis.Redis:
    # every command is small: the connect timeout bounds each answer too
    return cached(("redis", settings.redis_url, settings.connect_timeout),
                   lambda: redis.Redis.from_url(settings.redis_url, socket_connect_timeout=settings.connect_timeout,
                                                socket_timeout=settings.connect_timeout))


def redis_address(client: redis.Redis) -> str:
    """host:port of a Redis client, for messages: never its password."""
    options = client.connection_pool.connection_kwargs
    return f"{options.get('host', 'localhost')}:{options.get('port', 6379)}"


def failed_server(settings: Settings, exc: BaseException) -> str:
    """A failure of Redis or ClickHouse as one line naming the server (never a password)."""
    if isinstance(exc, redis.RedisError):
        return f"Redis {redis_address(redis_client(settings))}: {one_line(exc)}"
    return f"ClickHouse {settings.clickhouse_address}: {one_line(exc)}"


@dataclass(frozen=True)
class ClickHouseServer:
    """How to reach a ClickHouse: the first of `replicas` ((host, port),
    ...), then the others in turn when one does not answer."""

    replicas: tuple[tuple[str, int], ...]
    user: str
    password: str
    secure: bool
    ca_certs: str  # "" for the system's CAs
    verify: bool
    connect_timeout: int
    compression: str | None


def clickhouse_server(settings: Settings) -> ClickHouseServer:
    """The ClickHouse the pipeline loads into."""
    s = settings
    return ClickHouseServer(s.clickhouse_replicas, s.clickhouse_user, s.clickhouse_password, s.clickhouse_secure,
                            s.clickhouse_ca_certs, s.clickhouse_verify, s.connect_timeout, s.compression)


def clickhouse_client(settings: Settings) -> Client:
    """The ClickHouse the pipeline loads into, connected."""
    return connected_client(clickhouse_server(settings))


def replica_clients(settings: Settings) -> dict[str, Client]:
    """{host:port: client} of each replica of CLICKHOUSE_HOST on its own, for
    `status`; not connected, so that one down costs only its own query."""
    server = clickhouse_server(settings)
    return {f"{host}:{port}": cached(("clickhouse-replica", server, host, port),
                                     lambda: _client(replace(server, replicas=((host, port),))))
            for host, port in server.replicas}


def connected_client(server: ClickHouseServer) -> Client:
    """A client of `server`, connected now (clickhouse-driver's alt_hosts
    turns to the next replica when one does not answer)."""
    return cached(("clickhouse", server), lambda: _connected(_client(server)))


def _client(server: ClickHouseServer) -> Client:
    (host, port), others = server.replicas[0], server.replicas[1:]
    return Client(
        host=host,
        port=port,
        alt_hosts=",".join(f"{h}:{p}" for h, p in others) or None,
        user=server.user,
        password=server.password,
        secure=server.secure,
        verify=server.verify,
        ca_certs=server.ca_certs or None,  # None: the system's CAs
        client_name="sot-ingestion",
        connect_timeout=server.connect_timeout,
        send_receive_timeout=server.connect_timeout,
        compression=wire_compression(server),
    )


def wire_compression(server: ClickHouseServer) -> str | bool:
    """INGESTION_COMPRESSION for `server`: `auto` sends LZ4 blocks unless
    every replica is on this machine, where compressing costs the worker's
    CPU and saves no network (clickhouse-client decides the same way)."""
    if server.compression == "auto":
        return False if all(_loopback(host) for host, _ in server.replicas) else "lz4"
    return server.compression or False


def _loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name
        return False


def _connected(client: Client) -> Client:
    """Connects now, handshake and a first answer included, within the
    connect timeout (the driver would give the handshake the long timeout of
    a load), then allows the load's. A later reconnect gets the long one."""
    client.execute(*sql.ping())
    client.connection.send_receive_timeout = LOAD_TIMEOUT_SECONDS
    client.connection.socket.settimeout(LOAD_TIMEOUT_SECONDS)
    return client
