"""Where snapshots come from. A source fetches one snapshot into a directory;
the tasks see only this interface, so an S3 store or an export from the SOT
ClickHouse is one more class here."""
import os
import shutil
from abc import ABC, abstractmethod
from urllib.parse import unquote, urlparse

from .config import ConfigError
from .meta import META_FILENAME


class SnapshotMissing(Exception):
    """The snapshot is not (yet) complete at the source: no META.json."""


class SnapshotSource(ABC):
    @abstractmethod
    def fetch(self, network, date, window_days, destination):
        """Copies every file of the snapshot into the existing directory
        `destination`; raises SnapshotMissing when it has no META.json."""

    @staticmethod
    def snapshot_path(network, date, window_days):
        return f"{network}/{date.isoformat()}/{int(window_days)}"


class LocalSnapshotSource(SnapshotSource):
    """A snapshot store on a local or mounted file system."""

    def __init__(self, root):
        self.root = root

    def fetch(self, network, date, window_days, destination):
        folder = os.path.join(self.root, self.snapshot_path(network, date, window_days))
        if not os.path.isfile(os.path.join(folder, META_FILENAME)):
            raise SnapshotMissing(f"missing at {folder}: the snapshot is not published or not complete")
        for entry in os.scandir(folder):
            if entry.is_file():
                shutil.copyfile(entry.path, os.path.join(destination, entry.name))


def open_source(sot_url):
    parsed = urlparse(sot_url)
    if parsed.scheme in ("", "file"):
        root = unquote(parsed.path) if parsed.scheme == "file" else sot_url
        return LocalSnapshotSource(root)
    raise ConfigError(f"SOT_URL: {parsed.scheme}:// stores are not supported yet; use a path or file:// URL")
