"""SOT snapshot ingestion: `luigi --module workflows RunDaily`.

Importing a module of this package loads only what that module needs. The
luigi tasks (workflows.pipeline) are loaded when luigi itself is loaded:
`luigi --module workflows` imports this package and then looks the task up
by name in luigi's registry, so they must be registered by then."""
import importlib
import sys

TASKS = ("DownloadSOT", "ValidateMeta", "VerifyChecksums", "LoadTable", "Cleanup", "RunDaily", "RangeDaily")
__all__ = list(TASKS)


def __getattr__(name: str) -> object:
    """workflows.RunDaily and the other tasks, loading the pipeline at first use."""
    if name in TASKS:
        return getattr(importlib.import_module(".pipeline", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if "luigi" in sys.modules:  # luigi's --module loading: the tasks must be registered now
    importlib.import_module(".pipeline", __name__)
