"""The one exception that bad SOT input raises."""


class SnapshotError(Exception):
    """Bad input in one snapshot: a one-line message naming network, date,
    file and reason. The task that raises it removes the download directory,
    so the retry downloads afresh."""

    def __init__(self, network, date, filename, reason):
        self.network, self.date, self.filename, self.reason = network, date, filename, reason
        line = " ".join(str(reason).split())  # always one line, whatever the cause said
        super().__init__(f"{network} {date} {filename}: {line}")
