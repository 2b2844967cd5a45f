"""The SOT side, `python -m workflows publish`: one day of the SOT
ClickHouse written as a snapshot to a folder or an S3 prefix, META.json
last (workflows.sources.sot_clickhouse exports it)."""
import os
from urllib.parse import unquote, urlparse

from pyarrow.fs import FileType

from .config import ConfigError
from .meta import META_FILENAME
from .sources import snapshot_path
from .sources.s3 import s3_filesystem
from .sources.sot_clickhouse import export_day, sot_clickhouse_client

def publish(settings, network, date, window_days, to_url, progress=None):
    """Writes the day from the SOT ClickHouse as a snapshot under `to_url` (a
    folder, file:// or s3://bucket/prefix): a META.json already there is
    removed first and written again last, so a reader never pairs it with
    files of another export. Returns the snapshot's location."""
    client = sot_clickhouse_client(settings)
    database = settings.sot_database_for(network)
    parsed = urlparse(to_url)
    relative = snapshot_path(network, date, window_days)
    if parsed.scheme in ("", "file"):
        folder = os.path.join(unquote(parsed.path) if parsed.scheme == "file" else to_url, relative)
        os.makedirs(folder, exist_ok=True)
        meta_path = os.path.join(folder, META_FILENAME)
        if os.path.exists(meta_path):
            os.remove(meta_path)
        meta = export_day(client, database, network, date, window_days,
                          lambda filename: open(os.path.join(folder, filename), "wb"), progress)
        with open(meta_path + ".partial", "wb") as out:
            out.write(meta)
        os.rename(meta_path + ".partial", meta_path)
        return folder
    if parsed.scheme == "s3":
        filesystem = s3_filesystem(settings)
        prefix = "/".join(part for part in (parsed.netloc, parsed.path.strip("/"), relative) if part)
        if filesystem.get_file_info(f"{prefix}/{META_FILENAME}").type == FileType.File:
            filesystem.delete_file(f"{prefix}/{META_FILENAME}")
        meta = export_day(client, database, network, date, window_days,
                          lambda filename: filesystem.open_output_stream(f"{prefix}/{filename}"), progress)
        with filesystem.open_output_stream(f"{prefix}/{META_FILENAME}") as out:
            out.write(meta)
        return f"s3://{prefix}"
    raise ConfigError(f"--to: {parsed.scheme}:// is not a place to publish to; use a path, file:// or s3://")
