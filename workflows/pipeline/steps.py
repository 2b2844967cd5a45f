"""The five steps of one network's day, each writing its marker target last:

    DownloadSOT -> ValidateMeta -> VerifyChecksums -> LoadTable x4 -> Cleanup

Bad input raises SnapshotError, whose one-line message names network, date,
file and reason; the download is then removed so that the retry downloads
afresh (failures.FailureAccounting)."""
import datetime as dt
import json
import logging
import os
import shutil
import uuid
from collections.abc import Callable
from contextlib import ExitStack

import luigi

from targets import ClickHouseMarkerTarget, RedisMarkerTarget

from .. import clickhouse, disk, loader, state
from ..config import ConfigError
from ..errors import OneLineFailure
from ..meta import FileEntry, file_digest
from ..schema import SCHEMAS, TABLES
from ..sources import DIRECTORY_MODE, NoSpace, NotPublished, SourceUnavailable, UnsafeFile, open_source
from ..state import ARRIVED_CHECKSUMS, DOWNLOAD_STAMP, last_failure_key, loaded_days, republished_labels_key
from .base import LOAD_RESOURCE, DownloadFailed, IngestionTask
from .failures import record_metrics

logger = logging.getLogger("workflows")


def counted(number: int, noun: str) -> str:
    """'1 file', '4 files': for a step's one line."""
    return f"{number} {noun}{'' if number == 1 else 's'}"


class SnapshotNotPublished(OneLineFailure):
    """No META.json at the source yet: not bad input; the retry looks again."""


class DownloadSOT(IngestionTask):
    """Copies the snapshot into {SOT_DOWNLOAD_DIR}/{network}/{date}/{window_days}/."""

    changes_download = True
    step_name = "download"

    def output(self) -> luigi.LocalTarget:
        return luigi.LocalTarget(os.path.join(self.download_dir, DOWNLOAD_STAMP))

    def remove_output(self) -> bool:
        existed = os.path.isdir(self.download_dir)
        shutil.rmtree(self.download_dir, ignore_errors=True)
        return existed

    def execute(self) -> None:
        try:
            source = open_source(self.settings)
        except ConfigError as exc:  # SOT_URL unset: RunDaily refuses it, a step run alone gets here
            raise DownloadFailed(f"{self.day}: configuration error: {exc}") from None
        parent = os.path.dirname(self.download_dir)
        os.makedirs(parent, exist_ok=True)
        # a download killed half-way leaves only a partial directory behind
        for name in os.listdir(parent):
            if name.startswith(f"{self.window_days}.partial-"):
                shutil.rmtree(os.path.join(parent, name), ignore_errors=True)
        partial = f"{self.download_dir}.partial-{uuid.uuid4().hex}"
        os.makedirs(partial, mode=DIRECTORY_MODE)
        try:
            arrived = source.fetch(self.day, partial, self.report_every_percent())
            with open(os.path.join(partial, ARRIVED_CHECKSUMS), "w") as stream:
                json.dump(arrived, stream)
            with open(os.path.join(partial, DOWNLOAD_STAMP), "w") as stamp:
                stamp.write(uuid.uuid4().hex)
            shutil.rmtree(self.download_dir, ignore_errors=True)
            os.rename(partial, self.download_dir)
            size = sum(entry.stat().st_size for entry in os.scandir(self.download_dir) if entry.is_file())
            self.outcome = f"{counted(len(arrived), 'file')}, {size / 1e6:,.1f} MB"
        except NotPublished as exc:
            raise SnapshotNotPublished(f"{self.day}: {exc}") from None
        except UnsafeFile as exc:
            raise self.bad_input(exc.filename, exc.reason) from None
        except NoSpace as exc:
            raise DownloadFailed(f"{self.day} download to {self.settings.download_dir}:"
                                 f" {exc}") from None
        except OSError as exc:
            if not disk.is_full(exc):
                raise
            free = shutil.disk_usage(self.settings.download_dir).free
            raise DownloadFailed(f"{self.day} download to {self.settings.download_dir}: no space left"
                                 f" while writing {os.path.basename(exc.filename or '') or 'a file'}"
                                 f" ({free / 1e6:,.0f} MB free)") from None
        except SourceUnavailable as exc:
            raise DownloadFailed(f"{self.day} download: {exc}") from None
        finally:
            shutil.rmtree(partial, ignore_errors=True)

    def report_every_percent(self) -> Callable[[str, float], None]:
        """report(), skipping the calls to luigid that would not move the percentage."""
        shown: list[int | None] = [None]

        def progress(message: str, percent: float) -> None:
            if int(percent) != shown[0]:
                shown[0] = int(percent)
                self.report(message, percent)
        return progress


class ValidateMeta(IngestionTask):
    """META.json is there, parses, and lists the four tables with
    well-formed checksums and plain file names."""

    step_name = "validate"

    def requires(self) -> "DownloadSOT":
        return DownloadSOT(self.network, self.date, self.window_days)

    def output(self) -> RedisMarkerTarget:
        # vouches for the download it checked, and only while that is on disk
        return self.download_marker("validate")

    def execute(self) -> None:
        listed = sum(1 for entry in self.meta().values() if entry.filename)
        self.outcome = f"META.json lists {counted(listed, 'file')}"
        self.output().touch()


class VerifyChecksums(IngestionTask):
    """Every listed file is present, matches its checksum, and fits its
    table, so that a bad snapshot is refused before any table is loaded.
    Proving a file fits is staging it: streaming it into a staging table of
    its own, which LoadTable then swaps in, so each file is decoded once. A
    table already loaded is checked without being staged."""

    resources = {LOAD_RESOURCE: 1}
    step_name = "checksums"

    def requires(self) -> ValidateMeta:
        return ValidateMeta(self.network, self.date, self.window_days)

    def output(self) -> RedisMarkerTarget:
        return self.download_marker("checksums")

    def execute(self) -> None:
        entries = list(self.meta().values())
        files = [e for e in entries if e.filename]  # a table the producer left out has no rows that day
        paths = {e.file: os.path.join(self.download_dir, e.file) for e in files}
        for entry in files:
            if not os.path.isfile(paths[entry.file]):
                raise self.bad_input(entry.file, "listed in META.json but missing")
        self.verify_counts(self.verify_checksums(files, paths), paths)
        sizes = {name: os.path.getsize(path) for name, path in paths.items()}
        checked, total = 0, sum(sizes.values()) or 1
        ch = self.clickhouse
        loaded = loaded_days(ch, self.database, self.network, [self.date], self.window_days).get(self.date, {})
        self.sweep_staging(ch)
        # every table is staged before any is handed to its load, so a file
        # that does not fit leaves them all untouched
        with ExitStack() as staging:
            staged = {}
            for entry in entries:
                if entry.table not in loaded:
                    staged[entry.table] = staging.enter_context(clickhouse.staging_table(
                        self.destination(entry.table), self.day))
                size = sizes.get(entry.filename or "", 0)
                self.stage_or_check(entry, paths.get(entry.filename or ""), staged.get(entry.table),
                                    self.progress_of_all_files(entry, staged, (checked, size, total)))
                checked += size
            download = self.download_id()
            if download is None:  # removed under the lock's holder: cannot be
                raise RuntimeError(f"{self.day}: the download went while it was verified")
            for table, name in staged.items():
                clickhouse.keep_staged(self.destination(table), name, self.day, download)
        self.outcome = f"{counted(len(files), 'file')} verified, {counted(len(staged), 'table')} staged"
        self.output().touch()

    def verify_checksums(self, entries: list[FileEntry], paths: dict[str, str]) -> list[FileEntry]:
        """Against the checksums taken as the bytes arrived; a file without
        one is hashed here. The producer's labels file is replaced in place
        when the labels change: one that differs from its checksum at export
        time is the current list, loaded, and said (log and `status`).
        Returns the entries whose file is the one META.json describes."""
        arrived = self.arrived_checksums()
        described = []
        for entry in entries:
            actual = arrived.get(entry.file)
            if actual is None:
                actual = f"{entry.algorithm}:{file_digest(paths[entry.file], entry.algorithm)}"
            actual = actual.split(":", 1)[1]
            if actual == entry.digest:
                described.append(entry)
                if entry.shared_labels:  # a note of an earlier download no longer holds
                    self.redis.delete(republished_labels_key(self.day))
                continue
            if entry.shared_labels:
                self.note_republished_labels(entry, actual)
                continue
            raise self.bad_input(entry.file, f"{entry.algorithm} checksum mismatch: META.json has"
                                                 f" {entry.digest}, file has {actual}")
        return described

    def note_republished_labels(self, entry: FileEntry, actual: str) -> None:
        note = (f"{self.network} {self.date} {entry.filename}: the labels were republished since the export"
                f" (META.json has sha256 {entry.digest}, the current file {actual}); loading the current file")
        logger.warning(note)
        self.redis.set(republished_labels_key(self.day),
                       json.dumps({"meta": entry.digest, "file": actual}), ex=state.KEPT_SECONDS)

    def verify_counts(self, entries: list[FileEntry], paths: dict[str, str]) -> None:
        """The rows each file's footer declares against META.json's count, where it gives one."""
        for entry in entries:
            if entry.rows is None:
                continue
            try:
                rows = loader.file_rows(paths[entry.file])
            except loader.FileMismatch as exc:
                raise self.bad_input(entry.file, exc) from None
            if rows != entry.rows:
                raise self.bad_input(entry.file, f"META.json counts {entry.rows:,} rows of {entry.table},"
                                                     f" the file holds {rows:,}")

    def progress_of_all_files(self, entry: FileEntry, staged: dict[str, str], span: tuple[int, int, int]
                              ) -> loader.Progress:
        """report() of a file's rows staged (or checked, when its table is
        loaded already) as a percentage of all the files' bytes, so that it
        only grows. `span`: (bytes before this file, its bytes, all bytes)."""
        verb = "staged" if entry.table in staged else "checked"
        before, size, total = span

        def progress(done: int, rows: int) -> None:
            self.report(f"{entry.filename}: {done:,} / {rows:,} rows {verb}",
                        100 * (before + size * done / max(rows, 1)) / total)
        return progress

    def stage_or_check(self, entry: FileEntry, path: str | None, staging: str | None,
                       progress: loader.Progress) -> None:
        """Streams one file into `staging`, or only checks it when its table
        is loaded already (no staging). No file (a table the producer left
        out) stages no rows."""
        try:
            if staging:
                self.day_load(entry.table).stage(path, staging, progress)
            elif path:
                loader.check_parquet(path, SCHEMAS[entry.table], self.day, progress)
        except loader.FileMismatch as exc:
            raise self.bad_input(entry.filename or f"{entry.table} (no file)", exc) from None


class LoadTable(IngestionTask):
    """Replaces the table's (processing_date, window_days) slice with the file's rows."""

    table = luigi.ChoiceParameter(choices=TABLES, description="the table to load: " + ", ".join(TABLES))
    resources = {LOAD_RESOURCE: 1}
    step_name = "load"

    def requires(self) -> VerifyChecksums:
        return VerifyChecksums(self.network, self.date, self.window_days)

    def output(self) -> ClickHouseMarkerTarget:
        return ClickHouseMarkerTarget(self.clickhouse, self.database, self.day, self.table)

    def execute(self) -> None:
        entry = self.meta()[self.table]
        path = os.path.join(self.download_dir, entry.filename) if entry.filename else None
        load = self.day_load(self.table)
        self.sweep_staging(load.into.client)
        try:
            rows, accounting = loader.file_footer(path, load.into.table) if path else (0, ((), ()))
            staged = clickhouse.claim_staged(load.into, self.day, self.download_id(), rows)
            if staged:
                self.report(f"{self.table}: swapping in {rows:,} staged rows", 0)
                with clickhouse.dropped_after(load.into.client, self.database, staged):
                    load.swap_in(staged, rows)
            else:  # swept, staged through another replica, or taken by a concurrent run: load the file
                if path:
                    self.verify_again(entry, path)
                rows = load.load(path, self.report_rows)
        except loader.FileMismatch as exc:
            raise self.bad_input(entry.filename or f"{self.table} (no file)", exc) from None
        self.output().touch(rows, accounting)
        self.report(f"{self.table}: {rows:,} rows loaded", 100)
        ignored, defaulted = accounting
        # on the step's own line: the producer's files always leave created_at to its DEFAULT
        self.outcome = f"{rows:,} rows" + (f"; file columns ignored: {', '.join(ignored) or 'none'}; table columns"
                                           f" that took their DEFAULT: {', '.join(defaulted) or 'none'}"
                                           if ignored or defaulted else "")

    def verify_again(self, entry: FileEntry, path: str) -> None:
        """The file on disk is still the one VerifyChecksums proved: hashed
        again, against the checksum taken as it arrived (META.json's, or for
        republished labels the current file's)."""
        expected = self.arrived_checksums().get(entry.file, f"{entry.algorithm}:{entry.digest}")
        actual = f"{entry.algorithm}:{file_digest(path, entry.algorithm)}"
        if actual != expected:
            raise self.bad_input(entry.file, f"changed on disk since it was verified: {entry.algorithm}"
                                                 f" {expected.split(':', 1)[1]} then, {actual.split(':', 1)[1]} now")

    def report_rows(self, done: int, total: int) -> None:
        self.report(f"{self.table}: {done:,} / {total:,} rows", 100 * done / max(total, 1))


class Cleanup(IngestionTask):
    """Removes the download once all four tables are loaded."""

    changes_download = True
    step_name = "cleanup"
    outcome = "download removed"

    def done_by_another_run(self) -> bool:
        # check_done() follows the table markers; removing the download again is harmless
        return False

    def requires(self) -> list["LoadTable"]:
        return [LoadTable(self.network, self.date, self.window_days, table) for table in TABLES]

    def output(self) -> RedisMarkerTarget:
        return state.cleanup_marker(self.redis, self.day)

    def targets_say_done(self) -> bool:
        # and this host holds no copy of the day: a host under the same
        # luigid that downloaded it too removes its own at its next run
        return not os.path.isdir(self.download_dir) and self.date in self.finished_dates([self])

    @staticmethod
    def finished_dates(cleanups: list["Cleanup"]) -> set[dt.date]:
        """The dates of these tasks (one network and window) whose four tables are loaded and cleaned up."""
        first = cleanups[0]
        return state.finished_dates(first.redis, first.clickhouse, first.database, [c.day for c in cleanups])

    def execute(self) -> None:
        clickhouse.drop_staged(self.clickhouse, self.database, self.day)
        shutil.rmtree(self.download_dir, ignore_errors=True)
        self.output().touch()
        self.redis.delete(last_failure_key(self.day))

    def finished(self, seconds: float) -> None:
        super().finished(seconds)
        record_metrics(self, None)  # the network-day is done
