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
}

__all__ = [
    "Activations",
    "ForethoughtError",
    "collect_activations",
    "load_model",
    "load_texts",
    "make_token_splits",
    "save_model",
    "tiny_model",
    "train_tokenizer",
]

if TYPE_CHECKING:
    from forethought.activations import Activations, collect_activations
    from forethought.data import load_texts, make_token_splits, train_tokenizer
    from forethought.models import load_model, save_model, tiny_model


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'forethought' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
