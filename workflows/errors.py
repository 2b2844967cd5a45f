"""The exception that bad SOT input raises, and how any failure becomes the
one line an operator reads."""
from clickhouse_driver.errors import ServerException

REASON_MAX_CHARS = 500


class SnapshotError(Exception):
    """Bad input in one snapshot: a one-line message naming network, date,
    file and reason. The task that raises it removes the download directory,
    so the retry downloads afresh."""

    def __init__(self, network, date, filename, reason):
        self.network, self.date, self.filename, self.reason = network, date, filename, reason
        super().__init__(f"{network} {date} {filename}: {collapsed(reason)}")  # one line, whatever the cause said


def one_line(exc):
    """A failure as one short line. A ClickHouse server error keeps its code
    and its first sentence, not the server's stack trace (kilobytes)."""
    if isinstance(exc, ServerException):
        text = f"ClickHouse error {exc.code}: {str(exc.message).split('Stack trace')[0]}"
    else:
        text = f"{type(exc).__name__}: {exc}"
    text = collapsed(text)
    return text if len(text) <= REASON_MAX_CHARS else text[: REASON_MAX_CHARS - 1] + "…"


def collapsed(text):
    """`text` (or an exception's message) on one line, its whitespace runs made single spaces."""
    return " ".join(str(text).split())
