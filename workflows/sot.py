"""Where snapshots come from. A source fetches one snapshot into a directory:
META.json and the files it lists, nothing else, each file hashed as its
bytes arrive. The tasks see only this interface: a folder, an S3 prefix, or
the SOT ClickHouse (workflows.publish exports the day)."""
import hashlib
import logging
import os
import shutil
import stat
import time
from abc import ABC, abstractmethod
from urllib.parse import unquote, urlparse

from .config import ConfigError
from .meta import META_FILENAME, MetaError, parse_meta

logger = logging.getLogger("workflows.sot")

FILE_MODE = 0o600  # downloads are readable by the pipeline's user only
DIRECTORY_MODE = 0o700
CHUNK_BYTES = 8 << 20  # what one read asks for: memory stays flat whatever the file's size
RETRY_DELAYS = (1, 2, 4, 8, 16, 32)  # seconds before each retry of a transient error, with no byte between


class NotPublished(Exception):
    """The snapshot is not (yet) complete at the source: no META.json."""


class UnsafeFile(Exception):
    """A snapshot file that must not be copied (a symlink, a device, ...)."""

    def __init__(self, filename, reason):
        self.filename, self.reason = filename, reason
        super().__init__(f"{filename}: {reason}")


class NoSpace(Exception):
    """The download directory's file system cannot hold the snapshot."""


class SourceUnavailable(Exception):
    """The store failed in a way retrying will not fix now (access denied,
    retries used up); the message is one line without credentials."""


class Transient(Exception):
    """A failure worth retrying: a dropped connection, a 5xx, a slow-down."""


def space_needed(snapshot_bytes):
    """What a download of this size needs free: the files plus a margin."""
    return snapshot_bytes + snapshot_bytes // 20 + (1 << 20)


def snapshot_path(network, date, window_days):
    return f"{network}/{date.isoformat()}/{int(window_days)}"


class SnapshotSource(ABC):
    """What DownloadSOT sees of a store."""

    @abstractmethod
    def fetch(self, network, date, window_days, destination, progress=None):
        """Writes META.json and the snapshot's files into the existing
        directory `destination`; returns {filename: "algorithm:hex"} of the
        bytes written. Raises NotPublished when the snapshot is not there
        yet. `progress(message, percent)` follows the work."""

    @abstractmethod
    def describe(self, snapshot):
        """Where the snapshot is, for messages: no credentials."""


class FileSnapshotSource(SnapshotSource):
    """A store that holds the snapshot's files (a folder, an S3 prefix)."""

    def fetch(self, network, date, window_days, destination, progress=None):
        """Copies META.json, then the files it lists that the source has, into
        the existing directory `destination`; returns {filename: checksum}
        of the bytes that arrived, as "algorithm:hex" in META.json's
        algorithm. A META.json that does not parse is copied alone, for
        ValidateMeta to refuse with its reason; a listed file the source
        lacks is left for VerifyChecksums to name. Refuses with NoSpace
        before copying a listed file when they would not fit.
        `progress(message, percent)` follows the copy."""
        snapshot = snapshot_path(network, date, window_days)
        meta = self.retrying(f"{self.describe(snapshot)}/{META_FILENAME}", lambda: self.read(snapshot, META_FILENAME))
        if meta is None:
            raise NotPublished(f"not published yet: no {META_FILENAME} at {self.describe(snapshot)}")
        with create_private_file(destination, META_FILENAME) as out:
            out.write(meta)
        try:
            entries = list(parse_meta(meta).values())
        except MetaError:
            return {}
        sizes = {e.filename: self.retrying(f"{self.describe(snapshot)}/{e.filename}",
                                           lambda name=e.filename: self.size(snapshot, name)) for e in entries}
        total = sum(size or 0 for size in sizes.values())
        free = shutil.disk_usage(destination).free
        if free < space_needed(total):
            raise NoSpace(f"{free / 1e6:,.0f} MB free, the snapshot needs {space_needed(total) / 1e6:,.0f} MB"
                          " with its margin")
        arrived, copied = {}, 0
        for entry in entries:
            size = sizes[entry.filename]
            if size is None:
                continue
            digest, done = hashlib.new(entry.algorithm), 0
            with create_private_file(destination, entry.filename) as out:
                for chunk in self.resumed(snapshot, entry.filename):
                    out.write(chunk)
                    digest.update(chunk)
                    done += len(chunk)
                    if progress:
                        progress(f"{entry.filename}: {done / 1e6:,.0f} / {size / 1e6:,.0f} MB",
                                 100 * (copied + done) / max(total, 1))
            copied += done
            arrived[entry.filename] = f"{entry.algorithm}:{digest.hexdigest()}"
        return arrived

    def resumed(self, snapshot, filename):
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

    def retrying(self, what, call):
        """call(), with transient failures logged and retried after a pause."""
        failures = 0
        while True:
            try:
                return call()
            except Transient as exc:
                failures += 1
                self.pause(what, exc, failures)

    @staticmethod
    def pause(what, exc, failures):
        if failures > len(RETRY_DELAYS):
            raise SourceUnavailable(f"{what}: {exc} ({len(RETRY_DELAYS)} retries used up)") from None
        delay = RETRY_DELAYS[failures - 1]
        logger.warning("%s: %s; retry %d of %d in %d s", what, exc, failures, len(RETRY_DELAYS), delay)
        time.sleep(delay)

    @abstractmethod
    def read(self, snapshot, filename):
        """The bytes of a small file of the snapshot, or None when it is not there."""

    @abstractmethod
    def size(self, snapshot, filename):
        """A file's size in bytes, or None when the source does not have it."""

    @abstractmethod
    def chunks(self, snapshot, filename, offset):
        """The file's bytes from `offset` on, in chunks of CHUNK_BYTES at most."""


class LocalSnapshotSource(FileSnapshotSource):
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
        except OSError:  # ELOOP: the last component is a symlink
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

    def chunks(self, snapshot, filename, offset):
        stream = self._open(snapshot, filename)
        if stream is None:
            raise SourceUnavailable(f"{self.describe(snapshot)}/{filename} vanished during the download")
        with stream:
            stream.seek(offset)
            while chunk := stream.read(CHUNK_BYTES):
                yield chunk


# Errors of the AWS SDK that a retry will not fix
_PERMANENT_S3_ERRORS = ("ACCESS_DENIED", "INVALID_ACCESS_KEY_ID", "SIGNATURE_DOES_NOT_MATCH", "HTTP status 403",
                        "HTTP status 400", "HTTP status 301")


class S3SnapshotSource(FileSnapshotSource):
    """A snapshot store under an S3 prefix, read with pyarrow's S3 file
    system: the AWS credential chain, or unsigned requests to a public
    bucket. Objects are read in ranged requests of CHUNK_BYTES, so a
    dropped connection resumes where it stopped."""

    def __init__(self, bucket, prefix, filesystem):
        self.bucket, self.prefix, self.filesystem = bucket, prefix, filesystem
        self.url = f"s3://{bucket}/{prefix}".rstrip("/")

    def describe(self, snapshot):
        return f"{self.url}/{snapshot}"

    def _key(self, snapshot, filename):
        return "/".join(part for part in (self.bucket, self.prefix, snapshot, filename) if part)

    def _call(self, call, *args):
        try:
            return call(*args)
        except OSError as exc:
            message = _without_request_id(str(exc))
            if any(code in message for code in _PERMANENT_S3_ERRORS):
                raise SourceUnavailable(message) from None
            raise Transient(message) from None

    def size(self, snapshot, filename):
        from pyarrow.fs import FileType
        info = self._call(self.filesystem.get_file_info, self._key(snapshot, filename))
        return info.size if info.type == FileType.File else None

    def read(self, snapshot, filename):
        if self.size(snapshot, filename) is None:
            return None
        with self._call(self.filesystem.open_input_stream, self._key(snapshot, filename)) as stream:
            return self._call(stream.read)

    def chunks(self, snapshot, filename, offset):
        with self._call(self.filesystem.open_input_file, self._key(snapshot, filename)) as stream:
            size = stream.size()
            while offset < size:
                chunk = self._call(stream.read_at, min(CHUNK_BYTES, size - offset), offset)
                if not chunk:
                    raise Transient("the object ended early")
                offset += len(chunk)
                yield chunk


def _without_request_id(message):
    """The SDK's message without its request id, which only clutters the one line."""
    return message.split(" (Request ID:")[0]


def create_private_file(directory, filename):
    """A new file readable by the owner only, never through a symlink."""
    fd = os.open(os.path.join(directory, filename), os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, FILE_MODE)
    return os.fdopen(fd, "wb")


def open_source(settings):
    """The source that SOT_URL names."""
    url = settings.sot_url
    parsed = urlparse(url)
    if parsed.scheme in ("", "file"):
        return LocalSnapshotSource(unquote(parsed.path) if parsed.scheme == "file" else url)
    if parsed.scheme == "s3":
        if "@" in parsed.netloc or not parsed.hostname:
            raise ConfigError("SOT_URL: give s3://bucket/prefix; credentials go in AWS_ACCESS_KEY_ID and"
                              " AWS_SECRET_ACCESS_KEY (or the AWS credential chain), not in the URL")
        from .resources import s3_filesystem
        return S3SnapshotSource(parsed.netloc, parsed.path.strip("/"), s3_filesystem(settings))
    if parsed.scheme == "clickhouse":
        from .publish import ClickHouseSnapshotSource
        return ClickHouseSnapshotSource(settings)
    raise ConfigError(f"SOT_URL: {parsed.scheme}:// is not a snapshot store; use a path, file://, s3:// or"
                      " clickhouse://")
