"""Clients of the servers the pipeline talks to, one per process and server:
luigi forks a process per task when it runs several workers, and a socket
must not cross a fork."""
import os

import redis
from clickhouse_driver import Client

_clients = {}


def _cached(key, make):
    key = (os.getpid(),) + key
    if key not in _clients:
        _clients[key] = make()
    return _clients[key]


def redis_client(settings):
    return _cached(("redis", settings.redis_url), lambda: redis.Redis.from_url(settings.redis_url))


def clickhouse_client(settings):
    s = settings
    return _cached(
        ("clickhouse", s.clickhouse_host, s.clickhouse_port, s.clickhouse_user, s.clickhouse_password,
         s.clickhouse_secure, s.clickhouse_ca_certs, s.clickhouse_verify),
        lambda: Client(
            host=s.clickhouse_host,
            port=s.clickhouse_port,
            user=s.clickhouse_user,
            password=s.clickhouse_password,
            secure=s.clickhouse_secure,
            verify=s.clickhouse_verify,
            ca_certs=s.clickhouse_ca_certs or None,  # None: the system's CAs
            client_name="sot-ingestion",
            send_receive_timeout=600,
        ),
    )
