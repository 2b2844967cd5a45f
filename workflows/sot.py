"""Where snapshots come from. A source fetches one snapshot into a directory:
META.json and the files it lists, nothing else. The tasks see only this
interface, so an S3 store or an export from the SOT ClickHouse is one more
class here."""
import os
import shutil
import stat
from abc import ABC, abstractmethod
from urllib.parse import unquote, urlparse

from .config import ConfigError
from .meta import META_FILENAME, MetaError, parse_meta

FILE_MODE = 0o600  # downloads are readable by the pipeline's user only
DIRECTORY_MODE = 0o700


class SnapshotMissing(Exception):
    """The snapshot is not (yet) complete at the source: no META.json."""


class UnsafeFile(Exception):
    """A snapshot file that must not be copied (a symlink, a device, ...)."""

    def __init__(self, filename, reason):
        self.filename, self.reason = filename, reason
        super().__init__(f"{filename}: {reason}")


class NoSpace(Exception):
    """The download directory's file system cannot hold the snapshot."""


def space_needed(snapshot_bytes):
    """What a download of this size needs free: the files plus a margin."""
    return snapshot_bytes + snapshot_bytes // 20 + (1 << 20)


class SnapshotSource(ABC):
    def fetch(self, network, date, window_days, destination):
        """Copies META.json, then the files it lists that the source has, into
        the existing directory `destination`. A META.json that does not parse
        is copied alone, for ValidateMeta to refuse with its reason; a listed
        file the source lacks is left for VerifyChecksums to name. Refuses
        with NoSpace before copying a listed file when they would not fit."""
        snapshot = self.snapshot_path(network, date, window_days)
        meta = self.read(snapshot, META_FILENAME)
        if meta is None:
            raise SnapshotMissing(f"missing at {self.describe(snapshot)}: the snapshot is not published yet")
        _write(destination, META_FILENAME, meta)
        try:
            names = [entry.filename for entry in parse_meta(meta).values()]
        except MetaError:
            return
        needed = space_needed(sum(self.size(snapshot, name) or 0 for name in names))
        free = shutil.disk_usage(destination).free
        if free < needed:
            raise NoSpace(f"{free / 1e6:,.0f} MB free, the snapshot needs {needed / 1e6:,.0f} MB with its margin")
        for name in names:
            self.copy(snapshot, name, destination)

    @abstractmethod
    def read(self, snapshot, filename):
        """The bytes of a small file of the snapshot, or None when it is not there."""

    @abstractmethod
    def size(self, snapshot, filename):
        """A file's size in bytes, or None when the source does not have it."""

    @abstractmethod
    def copy(self, snapshot, filename, destination):
        """Copies one file of the snapshot into `destination`, if the source has it."""

    @abstractmethod
    def describe(self, snapshot):
        """Where the snapshot is, for messages: no credentials."""

    @staticmethod
    def snapshot_path(network, date, window_days):
        return f"{network}/{date.isoformat()}/{int(window_days)}"


class LocalSnapshotSource(SnapshotSource):
    """A snapshot store on a local or mounted file system. Only regular files
    are copied: never through a symlink, never a device or a FIFO."""

    def __init__(self, root):
        self.root = root

    def describe(self, snapshot):
        return os.path.join(self.root, snapshot)

    def _open(self, snapshot, filename):
        path = os.path.join(self.root, snapshot, filename)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except FileNotFoundError:
            return None
        except OSError as exc:  # ELOOP: the last component is a symlink
            if os.path.islink(path):
                raise UnsafeFile(filename, "is a symlink in the SOT store; only regular files are copied") from None
            raise
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise UnsafeFile(filename, "is not a regular file in the SOT store")
        return os.fdopen(fd, "rb")

    def read(self, snapshot, filename):
        stream = self._open(snapshot, filename)
        if stream is None:
            return None
        with stream:
            return stream.read()

    def size(self, snapshot, filename):
        stream = self._open(snapshot, filename)
        if stream is None:
            return None
        with stream:
            return os.fstat(stream.fileno()).st_size

    def copy(self, snapshot, filename, destination):
        stream = self._open(snapshot, filename)
        if stream is None:
            return
        with stream, _create(destination, filename) as out:
            shutil.copyfileobj(stream, out, 1 << 20)


def _create(directory, filename):
    """A new file readable by the owner only, never through a symlink."""
    fd = os.open(os.path.join(directory, filename), os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, FILE_MODE)
    return os.fdopen(fd, "wb")


def _write(directory, filename, data):
    with _create(directory, filename) as out:
        out.write(data)


def open_source(sot_url):
    parsed = urlparse(sot_url)
    if parsed.scheme in ("", "file"):
        root = unquote(parsed.path) if parsed.scheme == "file" else sot_url
        return LocalSnapshotSource(root)
    raise ConfigError(f"SOT_URL: {parsed.scheme}:// stores are not supported yet; use a path or file:// URL")
