"""A snapshot store under an S3 prefix (AWS or an S3-compatible store)."""
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

from ..clients import cached
from ..config import Settings
from .base import CHUNK_BYTES, FileSnapshotSource, SourceUnavailable, Transient

if TYPE_CHECKING:
    from pyarrow.fs import S3FileSystem

T = TypeVar("T")

# Errors of the AWS SDK that a retry will not fix
_PERMANENT_S3_ERRORS = ("ACCESS_DENIED", "INVALID_ACCESS_KEY_ID", "SIGNATURE_DOES_NOT_MATCH", "HTTP status 403",
                        "HTTP status 400", "HTTP status 301")


class S3SnapshotSource(FileSnapshotSource):
    """A snapshot store under an S3 prefix, read with pyarrow's S3 file
    system: the AWS credential chain, or unsigned requests to a public
    bucket. Objects are read in ranged requests of CHUNK_BYTES, so a
    dropped connection resumes where it stopped."""

    def __init__(self, bucket: str, prefix: str, filesystem: "S3FileSystem") -> None:
        self.bucket, self.prefix, self.filesystem = bucket, prefix, filesystem
        self.url = f"s3://{bucket}/{prefix}".rstrip("/")

    def describe(self, snapshot: str) -> str:
        return f"{self.url}/{snapshot}"

    def _key(self, snapshot: str, filename: str) -> str:
        return "/".join(part for part in (self.bucket, self.prefix, snapshot, filename) if part)

    def _call(self, call: Callable[..., T], *args: Any) -> T:
        try:
            return call(*args)
        except OSError as exc:
            message = _without_request_id(str(exc))
            if any(code in message for code in _PERMANENT_S3_ERRORS):
                raise SourceUnavailable(message) from None
            raise Transient(message) from None

    def size(self, snapshot: str, filename: str) -> int | None:
        from pyarrow.fs import FileType
        info = self._call(self.filesystem.get_file_info, self._key(snapshot, filename))
        return info.size if info.type == FileType.File else None

    def read(self, snapshot: str, filename: str) -> bytes | None:
        if self.size(snapshot, filename) is None:
            return None
        with self._call(self.filesystem.open_input_stream, self._key(snapshot, filename)) as stream:
            return self._call(stream.read)

    def chunks(self, snapshot: str, filename: str, offset: int) -> Iterator[bytes]:
        with self._call(self.filesystem.open_input_file, self._key(snapshot, filename)) as stream:
            size = stream.size()
            while offset < size:
                chunk = self._call(stream.read_at, min(CHUNK_BYTES, size - offset), offset)
                if not chunk:
                    raise Transient("the object ended early")
                offset += len(chunk)
                yield chunk


def _without_request_id(message: str) -> str:
    """The SDK's message without its request id, which only clutters the one line."""
    return message.split(" (Request ID:")[0]


S3_REQUEST_TIMEOUT = 60  # one ranged read of CHUNK_BYTES


def s3_filesystem(settings: Settings) -> "S3FileSystem":
    """pyarrow's S3 file system for the SOT store: the AWS credential chain,
    or unsigned requests (SOT_S3_ANONYMOUS=1). Its own retries are off: the
    source retries and logs each one."""
    from pyarrow.fs import AwsStandardS3RetryStrategy, S3FileSystem
    s = settings
    return cached(("s3", s.sot_s3_endpoint, s.sot_s3_region, s.sot_s3_anonymous, s.connect_timeout),
                  lambda: S3FileSystem(anonymous=s.sot_s3_anonymous, region=s.sot_s3_region,
                                       endpoint_override=s.sot_s3_endpoint or None,
                                       connect_timeout=s.connect_timeout, request_timeout=S3_REQUEST_TIMEOUT,
                                       retry_strategy=AwsStandardS3RetryStrategy(max_attempts=1)))
