"""The SOT side, `python -m workflows publish`: one day of the SOT ClickHouse
written to a folder or an S3 prefix as the producer writes it
(workflows.sources.sot_clickhouse exports it): the day's files and META.json
under {to}/{network}/{date}/{window_days}/, the network's labels file in
address-labels/ beside to's last folder, where the pipeline looks for it by
default. Files first, META.json last."""
import os
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import BinaryIO
from urllib.parse import unquote, urlparse

from pyarrow import NativeFile
from pyarrow.fs import FileType

from .config import ConfigError, Settings
from .meta import META_FILENAME, labels_filename
from .slices import Slice
from .sources import LABELS_FOLDER, beside
from .sources.base import Progress
from .sources.s3 import s3_filesystem
from .sources.sot_clickhouse import LABELS_TABLE, SotDay, producer_filename, reading_the_sot, sot_clickhouse_client


class Folder:
    """A local folder to publish to; each file is written under a temporary
    name and renamed into place, so a reader of the labels file, which every
    day shares, never sees half of it."""

    @staticmethod
    def path(url: str, *parts: str) -> str:
        parsed = urlparse(url)
        return os.path.join(unquote(parsed.path) if parsed.scheme == "file" else url, *parts)

    @staticmethod
    @contextmanager
    def output(path: str) -> Iterator[BinaryIO]:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        partial = f"{path}.partial"
        try:
            with open(partial, "wb") as out:
                yield out
            os.rename(partial, path)
        finally:
            if os.path.exists(partial):
                os.remove(partial)

    @staticmethod
    def remove(path: str) -> None:
        if os.path.exists(path):
            os.remove(path)


class S3Prefix:
    """An S3 prefix to publish to (an object appears whole when its upload completes)."""

    def __init__(self, settings: Settings) -> None:
        self.filesystem = s3_filesystem(settings)

    @staticmethod
    def path(url: str, *parts: str) -> str:
        parsed = urlparse(url)
        return "/".join(part for part in (parsed.netloc, parsed.path.strip("/"), *parts) if part)

    def output(self, path: str) -> NativeFile:
        return self.filesystem.open_output_stream(path)

    def remove(self, path: str) -> None:
        if self.filesystem.get_file_info(path).type == FileType.File:
            self.filesystem.delete_file(path)


def publish(settings: Settings, day: Slice, to_url: str, progress: Progress | None = None) -> tuple[str, str]:
    """Writes the day from the SOT ClickHouse under `to_url` (a folder,
    file:// or s3://bucket/prefix): a META.json already there is removed
    first and written again last, so a reader never pairs it with files of
    another export. Returns where the snapshot and the labels file went."""
    scheme = urlparse(to_url).scheme
    store: Folder | S3Prefix
    if scheme in ("", "file"):
        store, shown = Folder(), ""
    elif scheme == "s3":
        store, shown = S3Prefix(settings), "s3://"
    else:
        raise ConfigError(f"--to: {scheme}:// is not a place to publish to; use a path, file:// or s3://")
    folder = store.path(to_url, day.path)
    labels = store.path(beside(to_url, LABELS_FOLDER), labels_filename(day.network))
    meta_path = f"{folder}/{META_FILENAME}"

    def output(filename: str) -> AbstractContextManager[BinaryIO]:
        return store.output(labels if filename == producer_filename(LABELS_TABLE) else f"{folder}/{filename}")

    with reading_the_sot(settings):
        sot = SotDay(sot_clickhouse_client(settings), settings.sot_database_for(day.network), day)
        store.remove(meta_path)
        meta = sot.export(output, progress)
    with store.output(meta_path) as out:
        out.write(meta)
    return shown + folder, shown + labels
