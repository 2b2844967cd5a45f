"""The luigi tasks, one per step:

    RunDaily(date) -> Cleanup -> LoadTable x4 -> VerifyChecksums -> ValidateMeta -> DownloadSOT

params (the parameters), base (the shared step), failures (their
accounting), steps (the five steps), daily (RunDaily and the step list).
Importing this package sets luigi up for them (apply_luigi_config)."""
import os
from collections.abc import Mapping

from dotenv import load_dotenv
from luigi.configuration import LuigiConfigParser

from ..config import LUIGI_DEFAULTS, LUIGI_FROM_ENVIRONMENT


def apply_luigi_config(environ: Mapping[str, str] = os.environ) -> None:
    """Loads `.env`, puts the package's luigi.cfg under the operator's
    (luigi reads its paths in order, later ones overriding) and sets what
    the environment gives. Without this a `luigi` run outside the project
    directory would read no [retcode] and exit 0 on failure."""
    load_dotenv(os.path.join(os.getcwd(), ".env"), override=False)
    paths = LuigiConfigParser._config_paths
    if LUIGI_DEFAULTS not in paths:
        paths.insert(0, LUIGI_DEFAULTS)
    LuigiConfigParser.reload()
    config = LuigiConfigParser.instance()
    for (section, option), (variable, _) in LUIGI_FROM_ENVIRONMENT.items():
        value = environ.get(variable, "").strip()
        if value:
            if not config.has_section(section):
                config.add_section(section)
            config.set(section, option, value)


apply_luigi_config()  # before luigi reads its settings

from luigi.tools.range import RangeDaily  # noqa: E402  (registers RangeDaily for --module workflows)

from .daily import RunDaily  # noqa: E402
from .steps import Cleanup, DownloadSOT, LoadTable, ValidateMeta, VerifyChecksums  # noqa: E402

__all__ = ["DownloadSOT", "ValidateMeta", "VerifyChecksums", "LoadTable", "Cleanup", "RunDaily", "RangeDaily",
           "apply_luigi_config"]
