"""META.json: the snapshot formats and the checksums they list. Pure
functions, no servers.

Three formats, told apart by their keys:
- the producer's (the analytics pipeline's export, `schema_version` 1.x):
  `{"counts": {"alerts": N, ...}, "sha256": {"alerts.parquet": "<hex>", ...}}`,
  short file names, the labels one file per network beside the snapshots;
- the README's: `{"files": [{"filename", "checksum": "sha256:<hex>"}]}`;
- the older exporter's: `{"files": {"<name>": {"md5": "<hex>"}}}`."""
import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .schema import TABLES

META_FILENAME = "META.json"
HASH_CHUNK = 4 << 20

_DIGEST_LENGTH = {"sha256": 64, "md5": 32}
_HEX = re.compile(r"[0-9a-f]+")
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*")


class MetaError(ValueError):
    """META.json is malformed; the message is the reason."""


# the producer's file (and META counts key) of each table
PRODUCER_NAMES = {"raw_alerts": "alerts", "raw_features": "features", "raw_clusters": "clusters",
                  "raw_address_labels": "address_labels"}
# tables the producer's newer versions may leave out on a day: no file, no rows
PRODUCER_OPTIONAL = ("raw_alerts", "raw_clusters")
PRODUCER_MAJOR = "1"


@dataclass(frozen=True)
class FileEntry:
    """One table's file in a snapshot."""

    table: str
    filename: str | None  # None: the producer published no file, the table has no rows that day
    algorithm: str = "sha256"  # "sha256" or "md5"
    digest: str = ""  # lower-case hex
    rows: int | None = None  # META's count, where the format gives one
    # the network's labels file, kept beside the snapshots and replaced in
    # place when the labels change: its checksum is the file's at export time
    shared_labels: bool = False

    @property
    def file(self) -> str:
        """The file's name, of an entry that has a file."""
        if self.filename is None:
            raise MetaError(f"{self.table}: the snapshot has no file of it")
        return self.filename


def labels_filename(network: str) -> str:
    """The producer's labels file of a network, under its labels folder."""
    return f"{network}_address_labels.parquet"


def parse_meta(text: str | bytes) -> dict[str, FileEntry]:
    """Returns {table: FileEntry} for the four tables in any of the three
    formats (the module's docstring), or raises MetaError."""
    try:
        doc = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MetaError(f"not valid JSON ({exc})") from None
    except RecursionError:
        raise MetaError("not valid JSON (nested too deeply)") from None
    if isinstance(doc, dict) and "sha256" in doc and "files" not in doc:
        return _producer_entries(doc)
    if not isinstance(doc, dict) or "files" not in doc:
        raise MetaError('no "files" key, nor the producer\'s "sha256"')
    files = doc["files"]
    if isinstance(files, list):
        entries = [_current_entry(item) for item in files]
    elif isinstance(files, dict):
        entries = [_legacy_entry(name, sums) for name, sums in files.items()]
    else:
        raise MetaError('"files" is neither a list nor an object')

    by_table: dict[str, FileEntry] = {}
    for entry in entries:
        if entry.table not in TABLES:
            continue  # files of tables this pipeline does not load
        if entry.table in by_table:
            raise MetaError(f"{entry.filename} is listed twice")
        by_table[entry.table] = entry
    missing = [t for t in TABLES if t not in by_table]
    if missing:
        raise MetaError("does not list " + ", ".join(f"{t}.parquet" for t in missing))
    return {t: by_table[t] for t in TABLES}


def _producer_entries(doc: dict[str, Any]) -> dict[str, FileEntry]:
    version = doc.get("schema_version")
    if not isinstance(version, str) or version.split(".")[0] != PRODUCER_MAJOR:
        raise MetaError(f"schema_version {version!r} is not {PRODUCER_MAJOR}.x")
    sums, counts = doc["sha256"], doc.get("counts")
    if not isinstance(sums, dict) or not isinstance(counts, dict):
        raise MetaError('"sha256" and "counts" must be objects')
    entries: dict[str, FileEntry] = {}
    for table, name in PRODUCER_NAMES.items():
        filename = f"{name}.parquet"
        if filename not in sums:
            if table not in PRODUCER_OPTIONAL:
                raise MetaError(f"does not list {filename}")
            entries[table] = FileEntry(table, None, rows=0)
            continue
        rows = counts.get(name)
        if isinstance(rows, bool) or not isinstance(rows, int) or rows < 0:
            raise MetaError(f"counts.{name} {rows!r} is not a row count")
        entry = _entry(filename, "sha256", sums[filename])
        entries[table] = FileEntry(table, filename, "sha256", entry.digest, rows,
                                   shared_labels=table == "raw_address_labels")
    return entries


def _current_entry(item: object) -> FileEntry:
    if not isinstance(item, dict):
        raise MetaError(f"file entry {item!r} is not an object")
    filename, checksum = item.get("filename"), item.get("checksum")
    _check_filename(filename)
    assert isinstance(filename, str)  # _check_filename refused anything else
    if not isinstance(checksum, str) or ":" not in checksum:
        raise MetaError(f"{filename}: checksum {checksum!r} is not of the form sha256:<hex>")
    algorithm, digest = checksum.split(":", 1)
    return _entry(filename, algorithm.lower(), digest)


def _legacy_entry(filename: str, sums: object) -> FileEntry:
    _check_filename(filename)
    if not isinstance(sums, dict) or "md5" not in sums:
        raise MetaError(f'{filename}: legacy entry has no "md5"')
    return _entry(filename, "md5", sums["md5"])


def _check_filename(filename: object) -> None:
    if not isinstance(filename, str) or not _PLAIN_NAME.fullmatch(filename):
        raise MetaError(f"file name {filename!r} is not a plain file name")


def _entry(filename: str, algorithm: str, digest: object) -> FileEntry:
    """The entry of a README-format file: its table is its name."""
    if algorithm not in _DIGEST_LENGTH:
        raise MetaError(f"{filename}: unknown checksum algorithm {algorithm!r}")
    if not isinstance(digest, str):
        raise MetaError(f"{filename}: {algorithm} checksum is not a string")
    digest = digest.lower()
    if len(digest) != _DIGEST_LENGTH[algorithm] or not _HEX.fullmatch(digest):
        raise MetaError(f"{filename}: {algorithm} checksum {digest!r} is not {_DIGEST_LENGTH[algorithm]} hex digits")
    return FileEntry(filename.removesuffix(".parquet"), filename, algorithm, digest)


def file_digest(path: str, algorithm: str, on_progress: Callable[[int], None] | None = None) -> str:
    """Hex digest of a file, read in chunks so memory stays flat.
    `on_progress(bytes_done)` is called after every chunk."""
    hasher = hashlib.new(algorithm)
    buffer = bytearray(HASH_CHUNK)
    view = memoryview(buffer)
    done = 0
    with open(path, "rb", buffering=0) as stream:
        while True:
            n = stream.readinto(buffer)
            if not n:
                break
            hasher.update(view[:n])
            done += n
            if on_progress:
                on_progress(done)
    return hasher.hexdigest()
