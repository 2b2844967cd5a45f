"""What a snapshot store is to the pipeline: a source fetches one snapshot
into a directory (META.json and the files it lists, nothing else, each file
hashed as its bytes arrive), and the failures it reports."""
import hashlib
import logging
import os
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from io import BufferedWriter
from typing import TypeVar

from .. import disk
from ..meta import META_FILENAME, FileEntry, MetaError, labels_filename, parse_meta
from ..slices import Slice

Progress = Callable[[str, float], None]  # (message, percent done)

T = TypeVar("T")

logger = logging.getLogger("workflows.sources")

FILE_MODE = 0o600  # downloads are readable by the pipeline's user only
DIRECTORY_MODE = 0o700
CHUNK_BYTES = 8 << 20  # what one read asks for: memory stays flat whatever the file's size
RETRIES = 6  # of a transient error with no byte between, after 1, 2, 4, ... times SOT_RETRY_DELAY


class NotPublished(Exception):
    """The snapshot is not (yet) complete at the source: no META.json."""


class UnsafeFile(Exception):
    """A snapshot file that must not be copied (a symlink, a device, ...)."""

    def __init__(self, filename: str, reason: str) -> None:
        self.filename, self.reason = filename, reason
        super().__init__(f"{filename}: {reason}")


class NoSpace(Exception):
    """The download directory's file system cannot hold the snapshot."""


class SourceUnavailable(Exception):
    """The store failed in a way retrying will not fix now (access denied,
    retries used up); the message is one line without credentials."""


class Transient(Exception):
    """A failure worth retrying: a dropped connection, a 5xx, a slow-down."""


def space_needed(snapshot_bytes: int) -> int:
    """What a download of this size needs free: the files plus a margin."""
    return snapshot_bytes + snapshot_bytes // 20 + (1 << 20)


class SnapshotSource(ABC):
    """What DownloadSOT sees of a store."""

    @abstractmethod
    def fetch(self, day: Slice, destination: str, progress: Progress | None = None) -> dict[str, str]:
        """Writes META.json and the snapshot's files into the existing
        directory `destination`; returns {filename: "algorithm:hex"} of the
        bytes written. Raises NotPublished when the snapshot is not there
        yet. `progress(message, percent)` follows the work."""

    @abstractmethod
    def describe(self, snapshot: str) -> str:
        """Where the snapshot is, for messages: no credentials."""


class FileSnapshotSource(SnapshotSource):
    """A store that holds the snapshot's files (a folder, an S3 prefix)."""

    labels: "FileSnapshotSource | None" = None  # the store of the producer's per-network labels files
    room: str | None = None  # the download folder, whose downloads under way reserve their room (workflows.disk)
    retry_delay: float = 1.0  # seconds before the first retry (SOT_RETRY_DELAY), doubled for each next

    def fetch(self, day: Slice, destination: str, progress: Progress | None = None) -> dict[str, str]:
        """Copies META.json, then the files it lists, into the existing
        directory `destination`; returns {filename: checksum} of the bytes
        that arrived, as "algorithm:hex" in META.json's algorithm. The
        producer's labels file comes from the labels store, under its name
        in META.json. A META.json that does not parse is copied alone, for
        ValidateMeta to refuse with its reason. A listed file the source
        lacks is not published yet: the producer uploads in no particular
        order. Refuses with NoSpace before copying a listed file when they
        would not fit. `progress(message, percent)` follows the copy."""
        snapshot = day.path
        meta = self.retrying(f"{self.describe(snapshot)}/{META_FILENAME}", lambda: self.read(snapshot, META_FILENAME))
        if meta is None:
            raise NotPublished(f"not published yet: no {META_FILENAME} at {self.describe(snapshot)}")
        with create_private_file(destination, META_FILENAME) as out:
            out.write(meta)
        try:
            entries = [e for e in parse_meta(meta).values() if e.filename]
        except MetaError:
            return {}
        where = {e.filename: (self._labels_store(), "", labels_filename(day.network)) if e.shared_labels else
                 (self, snapshot, e.filename) for e in entries if e.filename}  # (entries all have a file)
        sizes: dict[str, int] = {}
        for name, (store, folder, key) in where.items():
            size = store.retrying(f"{store.describe(folder)}/{key}", lambda: store.size(folder, key))
            if size is None:
                raise NotPublished(f"not published yet: {name}, listed in {META_FILENAME}, is not at"
                                   f" {store.describe(folder).rstrip('/')}/{key} yet")
            sizes[name] = size
        try:
            with disk.reserved(self.room or destination, space_needed(sum(sizes.values()))):
                return self.copy(entries, where, sizes, destination, progress)
        except disk.NotEnoughSpace as exc:
            raise NoSpace(str(exc)) from None

    def _labels_store(self) -> "FileSnapshotSource":
        """The store of the labels file, which open_source always sets."""
        assert self.labels is not None, "a file store without its labels store (open_source sets one)"
        return self.labels

    def copy(self, entries: list[FileEntry], where: Mapping[str, tuple["FileSnapshotSource", str, str]],
             sizes: Mapping[str, int], destination: str, progress: Progress | None) -> dict[str, str]:
        """The files into `destination`, each hashed as it arrives."""
        total = sum(sizes.values())
        arrived, copied = {}, 0
        for entry in entries:
            assert entry.filename is not None  # fetch copies only the entries that have a file
            store, folder, key = where[entry.filename]
            size, digest, done = sizes[entry.filename], hashlib.new(entry.algorithm), 0
            try:
                with create_private_file(destination, entry.filename) as out:
                    for chunk in store.resumed(folder, key):
                        out.write(chunk)
                        digest.update(chunk)
                        done += len(chunk)
                        if progress:
                            progress(f"{entry.filename}: {done / 1e6:,.0f} / {size / 1e6:,.0f} MB",
                                     100 * (copied + done) / max(total, 1))
            except OSError as exc:  # a write names no file: the message should
                if disk.is_full(exc) and exc.filename is None:
                    raise OSError(exc.errno, exc.strerror, entry.filename) from None
                raise
            copied += done
            arrived[entry.filename] = f"{entry.algorithm}:{digest.hexdigest()}"
        return arrived

    def resumed(self, snapshot: str, filename: str) -> Iterator[bytes]:
        """The file's bytes, in chunks; a transient failure is logged and
        retried after a pause, from the byte where it stopped."""
        offset, failures = 0, 0
        while True:
            try:
                for chunk in self.chunks(snapshot, filename, offset):
                    offset += len(chunk)
                    failures = 0
                    yield chunk
                return
            except Transient as exc:
                failures += 1
                self.pause(f"{self.describe(snapshot)}/{filename} at {offset / 1e6:,.1f} MB", exc, failures)

    def retrying(self, what: str, call: Callable[[], T]) -> T:
        """call(), with transient failures logged and retried after a pause."""
        failures = 0
        while True:
            try:
                return call()
            except Transient as exc:
                failures += 1
                self.pause(what, exc, failures)

    def pause(self, what: str, exc: Exception, failures: int) -> None:
        if failures > RETRIES:
            raise SourceUnavailable(f"{what}: {exc} ({RETRIES} retries used up)") from None
        delay = self.retry_delay * 2 ** (failures - 1)
        logger.warning("%s: %s; retry %d of %d in %g s", what, exc, failures, RETRIES, delay)
        time.sleep(delay)

    @abstractmethod
    def read(self, snapshot: str, filename: str) -> bytes | None:
        """The bytes of a small file of the snapshot, or None when it is not there."""

    @abstractmethod
    def size(self, snapshot: str, filename: str) -> int | None:
        """A file's size in bytes, or None when the source does not have it."""

    @abstractmethod
    def chunks(self, snapshot: str, filename: str, offset: int) -> Iterator[bytes]:
        """The file's bytes from `offset` on, in chunks of CHUNK_BYTES at most."""


def create_private_file(directory: str, filename: str) -> BufferedWriter:
    """A new file readable by the owner only, never through a symlink."""
    fd = os.open(os.path.join(directory, filename), os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, FILE_MODE)
    return os.fdopen(fd, "wb")


