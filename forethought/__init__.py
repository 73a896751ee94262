"""forethought: do language models plan ahead?

Future-token probes, interventions and myopic training on TransformerLens 4 ``TransformerBridge`` models.
The names below are imported on first use, so ``import forethought`` stays cheap.

Example:
    >>> import forethought
    >>> model = forethought.tiny_model(n_layers=1, d_model=16, n_heads=2, d_vocab=20, n_ctx=8)
    >>> model.cfg.n_layers
    1
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from forethought.errors import ForethoughtError

__version__ = "0.1.0"

#: Public name -> the module that defines it.
_EXPORTS = {
    "Activations": "forethought.activations",
    "collect_activations": "forethought.activations",
    "load_texts": "forethought.data",
    "make_token_splits": "forethought.data",
    "train_tokenizer": "forethought.data",
    "load_model": "forethought.models",
    "save_model": "forethought.models",
    "tiny_model": "forethought.models",
    "TrainConfig": "forethought.config",
    "gradient_split": "forethought.myopic_training",
    "myopic": "forethought.myopic_training",
    "train": "forethought.myopic_training",
    "probe_sweep": "forethought.probes",
    "lens_view": "forethought.probes",
    "patch_positions": "forethought.interventions",
    "transplant": "forethought.interventions",
    "Run": "forethought.runs",
    "load_run": "forethought.runs",
    "ablate_past": "forethought.attention",
    "run_myopia_gap": "forethought.experiments.myopia_gap",
    "compare_regimes": "forethought.experiments.compare",
    "run_size_sweep": "forethought.experiments.size_sweep",
}

__all__ = [
    "Activations",
    "ForethoughtError",
    "Run",
    "TrainConfig",
    "ablate_past",
    "collect_activations",
    "compare_regimes",
    "gradient_split",
    "lens_view",
    "load_model",
    "load_run",
    "load_texts",
    "make_token_splits",
    "myopic",
    "patch_positions",
    "probe_sweep",
    "run_myopia_gap",
    "run_size_sweep",
    "save_model",
    "tiny_model",
    "train",
    "train_tokenizer",
    "transplant",
]

if TYPE_CHECKING:
    from forethought.activations import Activations, collect_activations
    from forethought.attention import ablate_past
    from forethought.config import TrainConfig
    from forethought.data import load_texts, make_token_splits, train_tokenizer
    from forethought.experiments.compare import compare_regimes
    from forethought.experiments.myopia_gap import run_myopia_gap
    from forethought.experiments.size_sweep import run_size_sweep
    from forethought.interventions import patch_positions, transplant
    from forethought.models import load_model, save_model, tiny_model
    from forethought.myopic_training import gradient_split, myopic, train
    from forethought.probes import lens_view, probe_sweep
    from forethought.runs import Run, load_run


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'forethought' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
