"""forethought: do language models plan ahead?

Future-token probes, interventions and myopic training on TransformerLens 4 ``TransformerBridge`` models.

Example:
    >>> import forethought
    >>> model = forethought.tiny_model(n_layers=1, d_model=16, n_heads=2, d_vocab=20, n_ctx=8)
    >>> model.cfg.n_layers
    1
"""

from forethought.activations import Activations, collect_activations
from forethought.data import load_texts, make_token_splits, train_tokenizer
from forethought.errors import ForethoughtError
from forethought.models import load_model, save_model, tiny_model
from forethought.runs import Run, load_run

__version__ = "0.1.0"

__all__ = [
    "Activations",
    "ForethoughtError",
    "Run",
    "collect_activations",
    "load_model",
    "load_run",
    "load_texts",
    "make_token_splits",
    "save_model",
    "tiny_model",
    "train_tokenizer",
]
