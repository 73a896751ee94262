"""The synthetic pre-caching study (Wu, Morris & Levine 2024, §4).

It holds the task D_p, the regression transformer that learns it, and the study that trains it vanilla and
myopic, evaluates and probes it.

* :mod:`~forethought.synthetic.task`: D_p, sampled on the fly, and the probe targets;
* :mod:`~forethought.synthetic.model`: :class:`RegressionTransformer`, a ``TransformerBridge`` with a linear input
  map and a scalar output per position;
* :class:`SyntheticConfig` and its :data:`PRESETS` (defined torch-free in :mod:`forethought.config`);
* :mod:`~forethought.synthetic.study`: training (through the shared training loop), evaluation, probes, reports.
"""

from forethought.config import SYNTHETIC_PRESETS as PRESETS
from forethought.config import SyntheticConfig
from forethought.synthetic.model import RegressionModelConfig, RegressionTransformer
from forethought.synthetic.study import (
    TrainingRun,
    evaluate,
    held_out,
    load_trained_model,
    probe_layers,
    run_experiment,
    run_sweep,
    train_regime,
)
from forethought.synthetic.task import PAPER_PS, PrecacheBatch, PrecacheTask

__all__ = [
    "PAPER_PS",
    "PRESETS",
    "PrecacheBatch",
    "PrecacheTask",
    "RegressionModelConfig",
    "RegressionTransformer",
    "SyntheticConfig",
    "TrainingRun",
    "evaluate",
    "held_out",
    "load_trained_model",
    "probe_layers",
    "run_experiment",
    "run_sweep",
    "train_regime",
]
