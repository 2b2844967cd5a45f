"""SOT snapshot ingestion: `luigi --module workflows RunDaily`."""
from .config import apply_luigi_config

apply_luigi_config()  # before luigi reads its settings

from luigi.tools.range import RangeDaily  # noqa: E402  (registers RangeDaily for --module workflows)

from .tasks import Cleanup, DownloadSOT, LoadTable, RunDaily, ValidateMeta, VerifyChecksums  # noqa: E402

__all__ = ["DownloadSOT", "ValidateMeta", "VerifyChecksums", "LoadTable", "Cleanup", "RunDaily", "RangeDaily"]
