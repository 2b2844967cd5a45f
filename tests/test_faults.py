"""Faults around the data: the machine, not the snapshot. Each case checks
the outcome, the one line, and that a plain rerun then loads exactly the
published rows."""
import os
import subprocess

import pytest
from conftest import DATE, WINDOW

from workflows.meta import TABLES
from workflows.sample import make_snapshot


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MB tmpfs of the test's own, for the download directory."""
    mount = tmp_path / "small-disk"
    mount.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True)
    if mounted.returncode:
        pytest.skip(f"mounting a tmpfs is not allowed here: {mounted.stderr.decode().strip()}")
    yield str(mount)
    subprocess.run(["umount", "-l", str(mount)], check=True)


def test_a_snapshot_larger_than_the_free_space_is_refused_before_a_byte_is_copied(pipeline, small_disk,
                                                                                  monkeypatch):
    pipeline.publish(tables=make_snapshot("ethereum", DATE, WINDOW, 20_000))  # 11 MB
    monkeypatch.setenv("SOT_DOWNLOAD_DIR", small_disk)
    pipeline.downloads = small_disk

    assert not pipeline.run()

    [(task, reason)] = pipeline.failures
    assert type(task).__name__ == "DownloadSOT"
    assert reason == f"ethereum 2024-10-30 download to {small_disk}: 4 MB free, the snapshot needs" \
                     " 13 MB with its margin"
    copied = [name for _, _, files in os.walk(small_disk) for name in files if name.endswith(".parquet")]
    assert copied == []
    assert pipeline.counts() == {t: 0 for t in TABLES}

    tables = pipeline.publish()  # a day that fits: the same directory works again
    assert pipeline.run()
    assert pipeline.counts() == {t: tables[t].num_rows for t in TABLES}
