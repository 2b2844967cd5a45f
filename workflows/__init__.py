"""SOT snapshot ingestion: `luigi --module workflows RunDaily`."""
import os

# Arrow's C++ code, the Parquet reader's pages among it, allocates from the
# process's default memory pool, chosen once, at its first use, from this
# variable: jemalloc, which workflows.loader has return freed memory soon.
# Left to pyarrow's default (mimalloc), a 1M-row load holds 75 MB more.
os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "jemalloc")

from .config import apply_luigi_config  # noqa: E402

apply_luigi_config()  # before luigi reads its settings

from luigi.tools.range import RangeDaily  # noqa: E402  (registers RangeDaily for --module workflows)

from .tasks import Cleanup, DownloadSOT, LoadTable, RunDaily, ValidateMeta, VerifyChecksums  # noqa: E402

__all__ = ["DownloadSOT", "ValidateMeta", "VerifyChecksums", "LoadTable", "Cleanup", "RunDaily", "RangeDaily"]
