"""SOT snapshot ingestion: `luigi --module workflows RunDaily`."""
from .config import export_luigi_cfg_defaults

export_luigi_cfg_defaults()  # before luigi reads luigi.cfg

from luigi.tools.range import RangeDaily  # noqa: E402  (registers RangeDaily for --module workflows)

from .tasks import Cleanup, DownloadSOT, LoadTable, RunDaily, ValidateMeta, VerifyChecksums  # noqa: E402

__all__ = ["DownloadSOT", "ValidateMeta", "VerifyChecksums", "LoadTable", "Cleanup", "RunDaily", "RangeDaily"]
