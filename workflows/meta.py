"""META.json: parsing and the checksums it lists. Pure functions, no servers."""
import hashlib
import json
import re
from dataclasses import dataclass

META_FILENAME = "META.json"
TABLES = ("raw_alerts", "raw_features", "raw_clusters", "raw_address_labels")
HASH_CHUNK = 4 << 20

_DIGEST_LENGTH = {"sha256": 64, "md5": 32}
_HEX = re.compile(r"[0-9a-f]+")
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*")


class MetaError(ValueError):
    """META.json is malformed; the message is the reason."""


@dataclass(frozen=True)
class FileEntry:
    filename: str
    algorithm: str  # "sha256" or "md5"
    digest: str  # lower-case hex

    @property
    def table(self):
        return self.filename.removesuffix(".parquet")


def parse_meta(text):
    """Returns {table: FileEntry} for the four tables, or raises MetaError.

    Accepts the current form, {"files": [{"filename", "checksum": "sha256:<hex>"}]},
    and the older exporter's {"files": {"<name>": {"md5": "<hex>"}}}."""
    try:
        doc = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MetaError(f"not valid JSON ({exc})") from None
    except RecursionError:
        raise MetaError("not valid JSON (nested too deeply)") from None
    if not isinstance(doc, dict) or "files" not in doc:
        raise MetaError('no "files" key')
    files = doc["files"]
    if isinstance(files, list):
        entries = [_current_entry(item) for item in files]
    elif isinstance(files, dict):
        entries = [_legacy_entry(name, sums) for name, sums in files.items()]
    else:
        raise MetaError('"files" is neither a list nor an object')

    by_table = {}
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


def _current_entry(item):
    if not isinstance(item, dict):
        raise MetaError(f"file entry {item!r} is not an object")
    filename, checksum = item.get("filename"), item.get("checksum")
    _check_filename(filename)
    if not isinstance(checksum, str) or ":" not in checksum:
        raise MetaError(f"{filename}: checksum {checksum!r} is not of the form sha256:<hex>")
    algorithm, digest = checksum.split(":", 1)
    return _entry(filename, algorithm.lower(), digest)


def _legacy_entry(filename, sums):
    _check_filename(filename)
    if not isinstance(sums, dict) or "md5" not in sums:
        raise MetaError(f'{filename}: legacy entry has no "md5"')
    return _entry(filename, "md5", sums["md5"])


def _check_filename(filename):
    if not isinstance(filename, str) or not _PLAIN_NAME.fullmatch(filename):
        raise MetaError(f"file name {filename!r} is not a plain file name")


def _entry(filename, algorithm, digest):
    if algorithm not in _DIGEST_LENGTH:
        raise MetaError(f"{filename}: unknown checksum algorithm {algorithm!r}")
    if not isinstance(digest, str):
        raise MetaError(f"{filename}: {algorithm} checksum is not a string")
    digest = digest.lower()
    if len(digest) != _DIGEST_LENGTH[algorithm] or not _HEX.fullmatch(digest):
        raise MetaError(f"{filename}: {algorithm} checksum {digest!r} is not {_DIGEST_LENGTH[algorithm]} hex digits")
    return FileEntry(filename, algorithm, digest)


def file_digest(path, algorithm, on_progress=None):
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
