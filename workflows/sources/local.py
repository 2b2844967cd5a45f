"""A snapshot store on a local or mounted file system."""
import os
import stat
from collections.abc import Iterator
from io import BufferedReader

from .base import CHUNK_BYTES, FileSnapshotSource, SourceUnavailable, UnsafeFile


class LocalSnapshotSource(FileSnapshotSource):
    """A snapshot store on a local or mounted file system. Only regular files
    are copied: never through a symlink, never a device or a FIFO."""

    def __init__(self, root: str) -> None:
        self.root = root

    def describe(self, snapshot: str) -> str:
        return os.path.join(self.root, snapshot)

    def _open(self, snapshot: str, filename: str) -> BufferedReader | None:
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

    def read(self, snapshot: str, filename: str) -> bytes | None:
        stream = self._open(snapshot, filename)
        if stream is None:
            return None
        with stream:
            return stream.read()

    def size(self, snapshot: str, filename: str) -> int | None:
        stream = self._open(snapshot, filename)
        if stream is None:
            return None
        with stream:
            return os.fstat(stream.fileno()).st_size

    def chunks(self, snapshot: str, filename: str, offset: int) -> Iterator[bytes]:
        stream = self._open(snapshot, filename)
        if stream is None:
            raise SourceUnavailable(f"{self.describe(snapshot)}/{filename} vanished during the download")
        with stream:
            stream.seek(offset)
            while chunk := stream.read(CHUNK_BYTES):
                yield chunk
