"""The exception that bad SOT input raises, and how any failure becomes the
one line an operator reads."""
import logging
import re
from typing import Any, ClassVar

from clickhouse_driver.errors import ServerException

REASON_MAX_CHARS = 500


class OneLineFailure(Exception):
    """A failure whose message says all there is to say: logged and reported
    to luigid as that line, without a traceback."""

    qualified_names: ClassVar[set[str]] = set()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        OneLineFailure.qualified_names.add(f"{cls.__module__}.{cls.__qualname__}")


class WithoutTracebacks(logging.Filter):
    """For luigi's logger: a task failed by a OneLineFailure is logged as
    luigi's line plus the failure's, not with forty lines of traceback. luigi
    logs a failed complete() with the traceback already in its text; that
    is cut to its last line the same way."""

    def filter(self, record: logging.LogRecord) -> bool:
        failure = record.exc_info[1] if record.exc_info else None
        if isinstance(failure, OneLineFailure):
            record.msg, record.args = "%s: %s", (record.getMessage(), failure)
            record.exc_info = record.exc_text = None
        elif isinstance(record.msg, str) and record.msg.startswith("Will not run "):
            head, _, trace = record.msg.partition("\n")
            name, _, message = (trace.strip().splitlines() or [""])[-1].partition(": ")
            if name in OneLineFailure.qualified_names:
                record.msg = f"{head} {message}"
        return True


class QuietLuigi(logging.Filter):
    """For luigi's logger: its INFO chatter (each task scheduled, running,
    done) left out unless DEBUG was asked for ([core] log_level, luigi's
    --log-level, INGESTION_LOG_LEVEL); its warnings and its execution summary stay."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.INFO or logging.getLogger(record.name).getEffectiveLevel() <= logging.DEBUG:
            return True
        return record.getMessage().lstrip().startswith("===== Luigi Execution Summary")


class AtLuigisLevel(logging.Filter):
    """For the pipeline's own lines: shown at the level luigi's are (INFO by
    default under `luigi`: one line per step), so that a quiet run is quiet."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= min(logging.getLogger("luigi-interface").getEffectiveLevel(), logging.WARNING)


_URL_PASSWORD = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^\s/:@'\"]*):[^\s/@'\"]*@", re.IGNORECASE)


def without_passwords(text: str) -> str:
    """`text` with the password of each scheme://user:password@ URL in it left out (the user kept)."""
    return _URL_PASSWORD.sub(r"\1@", text)


class NoPasswords(logging.Filter):
    """For luigi's logger: luigi prints its scheduler URL as given, a
    user:password@ in it too, when luigid stops answering mid-run."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        shown = without_passwords(message)
        failure = record.exc_info[1] if record.exc_info else None
        if failure is not None and without_passwords(str(failure)) != str(failure):
            # the traceback would show the failure's message again: one line instead
            shown = f"{shown}: {without_passwords(one_line(failure))}"
            record.exc_info = record.exc_text = None
        if shown != message:
            record.msg, record.args = shown, ()
        return True


class OneLineTracebacks(logging.Filter):
    """For a logger whose every failure is raised again and reported in one
    line (clickhouse-driver logs each failed connect with a traceback, then
    raises): any traceback becomes one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        failure = record.exc_info[1] if record.exc_info else None
        if failure is not None:
            line = str(failure) if isinstance(failure, OneLineFailure) else one_line(failure)
            record.msg, record.args = "%s: %s", (record.getMessage(), line)
            record.exc_info = record.exc_text = None
        return True


class SnapshotError(OneLineFailure):
    """Bad input in one snapshot: a one-line message naming network, date,
    file and reason. The task that raises it removes the download directory,
    so the retry downloads afresh."""

    def __init__(self, network: str, date: str, filename: str, reason: object) -> None:
        self.network, self.date, self.filename, self.reason = network, date, filename, reason
        super().__init__(f"{network} {date} {filename}: {collapsed(reason)}")  # one line, whatever the cause said


def one_line(exc: BaseException) -> str:
    """A failure as one short line. A ClickHouse server error keeps its code
    and its first sentence, not the server's stack trace (kilobytes)."""
    if isinstance(exc, ServerException):
        text = f"ClickHouse error {exc.code}: {str(exc.message).split('Stack trace')[0]}"
    else:
        text = f"{type(exc).__name__}: {exc}"
    return shortened(text, REASON_MAX_CHARS)


def shortened(text: str, chars: int) -> str:
    """`text` on one line, cut to `chars` with "…" where it is longer."""
    text = collapsed(text)
    return text if len(text) <= chars else text[: chars - 1] + "…"


def collapsed(text: object) -> str:
    """`text` (or an exception's message) on one line, its whitespace runs made single spaces."""
    return " ".join(str(text).split())
