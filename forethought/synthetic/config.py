"""The settings of the synthetic pre-caching study (:class:`SyntheticConfig`) and its presets (:data:`PRESETS`).

Defined in :mod:`forethought.config`, torch-free, so that the command line reads them without importing torch.

Example:
    >>> PRESETS["smoke"].task()
    PrecacheTask(k=2, frequency=8.0, p=1.0, seq_len=8)
"""

from forethought.config import MYOPIC_MODES, SyntheticConfig
from forethought.config import SYNTHETIC_PRESETS as PRESETS

__all__ = ["MYOPIC_MODES", "PRESETS", "SyntheticConfig"]
