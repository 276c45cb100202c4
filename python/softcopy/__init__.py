"""softcopy: copy Zarr archives live, while the microscope writes them, gently and provably complete.

>>> import softcopy
>>> report = softcopy.copy("/acquisition/data.zarr", "/cluster/project/data.zarr")  # doctest: +SKIP
>>> report.ok  # doctest: +SKIP
True
"""

from softcopy._softcopy import SoftcopyError, __version__
from softcopy.config import ConfigError, Target, load_targets
from softcopy.run import Copier, Progress, Report, TargetReport, copy

__all__ = (
    "ConfigError",
    "Copier",
    "Progress",
    "Report",
    "SoftcopyError",
    "Target",
    "TargetReport",
    "__version__",
    "copy",
    "load_targets",
)
