"""Which staging tables still have an owner: each process that stages holds
a lease in Redis, renewed by a thread while the process lives. A staging
table whose owner's lease has lapsed belongs to a load that died, whatever
host, container or PID namespace it ran in: process ids are not unique
across containers that share a host name, leases are. A lease names its
process's id and where that id means something (kernel and PID
namespace), so a sweep there knows a dead owner at once."""
import logging
import os
import threading
import time
import uuid
from collections.abc import Iterable
from typing import cast

import redis

logger = logging.getLogger("workflows")

LEASE_SECONDS = 60  # a dead owner's staging tables are dropped at most this long after it died
RENEWALS_PER_LEASE = 4  # so that a renewal late by most of a lease (a busy host, a slow Redis) still keeps it
KEY_PREFIX = "sot_ingestion:staging_owner:"

# pid: (owner, renewing thread) of this process; a forked child holds its own
_held: dict[int, tuple[str, threading.Thread | None]] = {}


def owner() -> str:
    """This process's owner id: random, one per process (a forked child gets its own)."""
    pid = os.getpid()
    if pid not in _held:
        _held[pid] = ("p" + uuid.uuid4().hex[:11], None)  # "p": a process; "d" names a download (clickhouse)
    return _held[pid][0]


def process_space() -> str:
    """Where this process's id means something: the kernel (its boot id) and
    the PID namespace. Within the same space a dead owner is known at once."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as stream:
            boot = stream.read().strip()
        return f"{boot}/{os.readlink('/proc/self/ns/pid')}"
    except OSError:
        return "unknown"


def _lease_value() -> str:
    return f"{process_space()} {os.getpid()}"


def hold(client: redis.Redis, lease_seconds: int = LEASE_SECONDS) -> None:
    """Takes this process's lease and keeps renewing it until the process
    ends. A lease lapses `lease_seconds` after its last renewal; the first
    call's value stays for the life of the process."""
    pid, name = os.getpid(), owner()
    if _held[pid][1] is not None:
        return
    _set_lease(client, name, lease_seconds)
    thread = threading.Thread(target=_renew, args=(client, name, lease_seconds), name="staging-lease", daemon=True)
    _held[pid] = (name, thread)
    thread.start()


def _set_lease(client: redis.Redis, name: str, lease_seconds: int) -> None:
    client.set(KEY_PREFIX + name, _lease_value(), ex=lease_seconds)


def _renew(client: redis.Redis, name: str, lease_seconds: int) -> None:
    while True:  # a daemon thread: it ends with its process, and so does the lease, lease_seconds later
        time.sleep(lease_seconds / RENEWALS_PER_LEASE)
        try:
            _set_lease(client, name, lease_seconds)
        except redis.RedisError as exc:  # the tables then stay until their lease is read again, or two hours
            logger.warning("could not renew the staging lease in Redis: %s", exc)


def holders(client: redis.Redis, owners: Iterable[str]) -> set[str]:
    """Those of `owners` whose lease is held; all of them when Redis does not
    answer, so that no live load's table is dropped on a guess."""
    owners = list(owners)
    if not owners:
        return set()
    try:
        # bytes: the client does not decode responses (redis-py types them bytes | str)
        held = cast("list[bytes | None]", client.mget([KEY_PREFIX + name for name in owners]))
    except redis.RedisError:
        return set(owners)
    here = process_space()
    return {name for name, value in zip(owners, held) if value is not None and _lives(value.decode(), here)}


def _lives(value: str, here: str) -> bool:
    """A lease's process, unless it shares this process's space and has died (its lease not yet lapsed)."""
    space, _, pid = value.rpartition(" ")
    if space != here or not pid.isdigit():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True
