"""Room on the download folder's file system for the downloads under way:
each reserves what it needs before its first byte, and a download is
refused when the free space less the others' reservations cannot hold it.
A reservation is a file held locked by its download, so one whose process
died, in any container, no longer counts."""
import contextlib
import errno
import fcntl
import os
import shutil
import uuid
from collections.abc import Iterator

RESERVATIONS = ".reservations"


class NotEnoughSpace(Exception):
    """The message says how much is free, reserved and needed."""


@contextlib.contextmanager
def reserved(root: str, needed: int) -> Iterator[None]:
    """Holds a reservation of `needed` bytes under `root` while the block runs;
    NotEnoughSpace when the free space, less what the downloads under way
    reserved, is short of it."""
    folder = os.path.join(root, RESERVATIONS)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one check at a time: two downloads cannot both count the same room
        others = _held_elsewhere(folder)
        free = shutil.disk_usage(root).free
        if free - others < needed:
            under_way = f", {others / 1e6:,.0f} MB of it reserved by downloads under way;" if others else ","
            raise NotEnoughSpace(f"{free / 1e6:,.0f} MB free{under_way} the snapshot needs {needed / 1e6:,.0f} MB"
                                 " with its margin")
        path = os.path.join(folder, uuid.uuid4().hex)
        mine = open(path, "w")
        fcntl.flock(mine, fcntl.LOCK_EX)
        mine.write(str(needed))
        mine.flush()
    try:
        yield
    finally:
        os.remove(path)
        mine.close()


def _held_elsewhere(folder: str) -> int:
    """Bytes of the reservations whose downloads still hold them; the others are removed."""
    total = 0
    for name in os.listdir(folder):
        if name.startswith("."):
            continue
        path = os.path.join(folder, name)
        try:
            with open(path) as stream:
                try:
                    fcntl.flock(stream, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:  # its download is under way
                    total += int(stream.read() or 0)
                    continue
                os.remove(path)  # left by a download that died
        except (FileNotFoundError, ValueError):
            continue
    return total


def is_full(exc: BaseException) -> bool:
    """Whether an OSError says the file system is full (or over a quota)."""
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)
