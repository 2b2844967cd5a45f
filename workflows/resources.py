"""Clients of the servers the pipeline talks to, one per process and server:
luigi forks a process per task when it runs several workers, and a socket
must not cross a fork."""
import os

import redis
from clickhouse_driver import Client

from . import sql
from .errors import one_line

_clients = {}


def cached(key, make):
    key = (os.getpid(),) + key
    if key not in _clients:
        _clients[key] = make()
    return _clients[key]


# A load's blocks and the server's answers to them may take this long; the
# connection and its handshake get settings.connect_timeout.
LOAD_TIMEOUT_SECONDS = 600


def redis_client(settings):
    # every command is small: the connect timeout bounds each answer too
    return cached(("redis", settings.redis_url, settings.connect_timeout),
                   lambda: redis.Redis.from_url(settings.redis_url, socket_connect_timeout=settings.connect_timeout,
                                                socket_timeout=settings.connect_timeout))


def redis_address(client):
    """host:port of a Redis client, for messages: never its password."""
    options = client.connection_pool.connection_kwargs
    return f"{options.get('host', 'localhost')}:{options.get('port', 6379)}"


def failed_server(settings, exc):
    """A failure of Redis or ClickHouse as one line naming the server (never a password)."""
    if isinstance(exc, redis.RedisError):
        return f"Redis {redis_address(redis_client(settings))}: {one_line(exc)}"
    return f"ClickHouse {settings.clickhouse_address}: {one_line(exc)}"


def clickhouse_client(settings):
    """The ClickHouse the pipeline loads into."""
    s = settings
    return clickhouse_client_of(s.clickhouse_replicas, s.clickhouse_user, s.clickhouse_password, s.clickhouse_secure,
                       s.clickhouse_ca_certs, s.clickhouse_verify, s.connect_timeout, s.compression)


def replica_clients(settings):
    """{host:port: client} of each replica of CLICKHOUSE_HOST on its own, for `status`."""
    s = settings
    return {f"{host}:{port}": clickhouse_client_of(((host, port),), s.clickhouse_user, s.clickhouse_password,
                                          s.clickhouse_secure, s.clickhouse_ca_certs, s.clickhouse_verify,
                                          s.connect_timeout, s.compression, connect=False)
            for host, port in s.clickhouse_replicas}


def clickhouse_client_of(replicas, user, password, secure, ca_certs, verify, connect_timeout, compression,
                         connect=True):
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
    return cached(("clickhouse", replicas, user, password, secure, ca_certs, verify, connect_timeout, compression,
                    connect), make)


def _connected(client):
    """Connects now, handshake and a first answer included, within the
    connect timeout (the driver would give the handshake the long timeout of
    a load), then allows the load's. A later reconnect gets the long one."""
    client.execute(*sql.ping())
    client.connection.send_receive_timeout = LOAD_TIMEOUT_SECONDS
    client.connection.socket.settimeout(LOAD_TIMEOUT_SECONDS)
    return client
