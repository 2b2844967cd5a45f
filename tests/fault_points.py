"""The `luigi` command with a fault injected at a known point, for
test_faults: `python tests/fault_points.py POINT luigi-arguments...`.

    mid-download             the worker SIGKILLs itself after copying the first listed file
    between-swap-and-marker  the worker SIGKILLs itself after a table's swap, before its marker
    redis-killed-after-validation
                             SIGKILLs the Redis of FAULT_REDIS_PID once ValidateMeta has run
"""
import contextlib
import os
import signal
import sys

import luigi
import luigi.retcodes

from workflows import clickhouse, disk
from workflows.sources.local import LocalSnapshotSource


def kill(pid=None):
    os.kill(pid or os.getpid(), signal.SIGKILL)


def then_kill(owner, name, pid=None):
    """Wraps owner.name so that the process is killed right after it returns."""
    original = getattr(owner, name)

    def wrapped(*args, **kwargs):
        result = original(*args, **kwargs)
        kill(pid)
        return result
    setattr(owner, name, wrapped)


def kill_after_the_first_file():
    original = LocalSnapshotSource.chunks

    def chunks(self, snapshot, filename, offset):
        yield from original(self, snapshot, filename, offset)
        kill()
    LocalSnapshotSource.chunks = chunks


def fill_the_disk_after_the_check():
    """Another writer takes the room once the download was granted it."""
    granted = disk.reserved

    @contextlib.contextmanager
    def reserved(root, needed):
        with granted(root, needed):
            with open(os.path.join(root, "filler"), "wb") as filler:
                with contextlib.suppress(OSError):
                    while True:
                        filler.write(b"\0" * (1 << 20))
                        filler.flush()
            yield
    disk.reserved = reserved


def main(point, arguments):
    if point == "mid-download":
        kill_after_the_first_file()
    elif point == "between-swap-and-marker":
        then_kill(clickhouse, "swap_day")
    elif point == "disk-filled-after-the-check":
        fill_the_disk_after_the_check()
    elif point == "redis-killed-after-validation":
        @luigi.Task.event_handler(luigi.Event.PROCESSING_TIME)
        def kill_redis(task, _seconds):
            if task.task_family == "ValidateMeta":
                kill(int(os.environ["FAULT_REDIS_PID"]))
    else:
        raise SystemExit(f"unknown fault point {point}")
    luigi.retcodes.run_with_retcodes(arguments)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
