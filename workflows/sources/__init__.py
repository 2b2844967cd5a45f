"""Where snapshots come from: one module per store (local, s3,
sot_clickhouse), what they share in base, and the one that SOT_URL names."""
import os
import posixpath
from urllib.parse import unquote, urlparse, urlunparse

from ..config import Settings, require_sot_url
from .base import (
    DIRECTORY_MODE,
    FileSnapshotSource,
    NoSpace,
    NotPublished,
    SnapshotSource,
    SourceUnavailable,
    UnsafeFile,
)

__all__ = ["DIRECTORY_MODE", "NoSpace", "NotPublished", "SnapshotSource", "SourceUnavailable", "UnsafeFile",
           "open_source"]

LABELS_FOLDER = "address-labels"  # the producer's, beside its snapshots/ prefix


def open_source(settings: Settings) -> SnapshotSource:
    """The source that SOT_URL names, with the labels store of SOT_LABELS_URL
    (default: the folder beside SOT_URL's)."""
    require_sot_url(settings)
    if urlparse(settings.sot_url).scheme == "clickhouse":
        from .sot_clickhouse import ClickHouseSnapshotSource
        return ClickHouseSnapshotSource(settings)
    source = _file_store(settings.sot_url, settings)
    source.room = settings.download_dir
    source.labels = _file_store(settings.sot_labels_url or beside(settings.sot_url, LABELS_FOLDER), settings)
    source.retry_delay = source.labels.retry_delay = settings.sot_retry_delay
    return source


def beside(url: str, name: str) -> str:
    """The folder `name` next to the last folder of `url` (a path or URL)."""
    parsed = urlparse(url)
    if parsed.scheme in ("", "file"):
        path = unquote(parsed.path) if parsed.scheme == "file" else url
        return os.path.join(os.path.dirname(path.rstrip("/")), name)
    parent = posixpath.dirname(parsed.path.rstrip("/"))
    return urlunparse(parsed._replace(path=posixpath.join(parent or "/", name)))


def _file_store(url: str, settings: Settings) -> FileSnapshotSource:
    """The store of a path, file:// or s3:// URL (config checked its form)."""
    parsed = urlparse(url)
    if parsed.scheme == "s3":
        from .s3 import S3SnapshotSource, s3_filesystem
        return S3SnapshotSource(parsed.netloc, parsed.path.strip("/"), s3_filesystem(settings))
    from .local import LocalSnapshotSource
    return LocalSnapshotSource(unquote(parsed.path) if parsed.scheme == "file" else url)
