"""Past ablation: how much does each position's prediction depend on earlier positions' keys and values?

The intervention itself is :func:`forethought.attention.ablate_past` (re-exported here): inside it,
each position's attention sees only itself (``"self"``, the paper's "transformer bigram" when applied in
every layer), or zero / mean keys and values for the past. :func:`past_ablation_effect` measures what that
costs, position by position, with :func:`per_position_loss` (the one next-token loss by position,
:func:`forethought.losses.loss_by_position`, under its name here).

Example:
    >>> import torch
    >>> from forethought.interventions import past_ablation_effect
    >>> from forethought.models import tiny_model
    >>> model = tiny_model(n_layers=2, d_model=16, n_heads=2, d_vocab=20, n_ctx=8)
    >>> tokens = torch.randint(0, 20, (4, 8), generator=torch.Generator().manual_seed(0))
    >>> frame = past_ablation_effect(model, tokens, layer_sets="each", progress=False)
    >>> sorted(frame["layers"].unique())
    ['0', '1', 'all']
    >>> float(frame.query("pos == 0")["delta"].abs().max())  # position 0 has no past
    0.0
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import pandas as pd
from tqdm.auto import tqdm

from forethought.attention.ablation import ablate_past
from forethought.errors import InvalidArgumentError
from forethought.hook_names import resolve_layers
from forethought.interventions._core import require_deterministic
from forethought.losses import loss_by_position
from forethought.options import ABLATIONS
from forethought.prompts import Prompts, as_tokens

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

__all__ = ["ablate_past", "past_ablation_effect", "per_position_loss"]

#: Mean cross-entropy of predicting token ``t + 1`` at each position ``t``, under the active hooks (e.g. inside
#: ``ablate_past``): :func:`forethought.losses.loss_by_position` under its name here.
per_position_loss = loss_by_position


def past_ablation_effect(
    model: TransformerBridge,
    tokens: Prompts,
    *,
    layer_sets: Sequence[Any] | str = ("all",),
    methods: Sequence[str] | str = ("self",),
    batch_size: int = 32,
    progress: bool = True,
) -> pd.DataFrame:
    """Per-position loss with and without the past's keys/values, for several layer sets and methods.

    Args:
        model: a ``TransformerBridge`` with a deterministic forward.
        tokens: sequences ``[batch, pos]``, or strings of equal token length.
        layer_sets: the layers ablated together, one entry per condition: ``"all"``, an int or a list of ints;
            ``"each"`` means every single layer and then all of them.
        methods: ``"self"``, ``"zero"`` and/or ``"mean"`` (see ``ablate_past``; ``"mean"`` averages over the
            positions of each batch of ``batch_size`` sequences).
        batch_size: sequences per forward.
        progress: show a progress bar.

    Returns:
        A tidy frame, one row per (layers, method, pos): ``layers`` (a label such as ``"all"`` or ``"0,1"``),
        ``method``, ``pos`` (predicting token ``pos + 1``), ``loss``, ``ablated_loss`` and ``delta``.
    """
    tokens = as_tokens(model, tokens)
    if tokens.shape[1] < 2:
        raise InvalidArgumentError("tokens need at least 2 positions to have a next-token loss")
    require_deterministic(model)
    if isinstance(layer_sets, str) and layer_sets == "each":
        layer_sets = [[layer] for layer in range(model.cfg.n_layers)] + ["all"]
    elif isinstance(layer_sets, (str, int)):
        layer_sets = [layer_sets]
    methods = [methods] if isinstance(methods, str) else list(methods)
    for method in methods:
        if method not in ABLATIONS:
            raise InvalidArgumentError(f"method={method!r} is unknown; choose one of {ABLATIONS}")
    conditions = [(layers, method) for layers in layer_sets for method in methods]
    labels = [_label(model, layers) for layers, _ in conditions]

    base = loss_by_position(model, tokens, batch_size)
    rows = []
    bar = tqdm(conditions, desc="past ablation", disable=not progress)
    for (layers, method), label in zip(bar, labels, strict=True):
        with ablate_past(model, layers=layers, method=method):
            ablated = loss_by_position(model, tokens, batch_size)
        for pos, (loss, loss_ablated) in enumerate(zip(base.tolist(), ablated.tolist(), strict=True)):
            rows.append({"layers": label, "method": method, "pos": pos, "loss": loss,
                         "ablated_loss": loss_ablated, "delta": loss_ablated - loss})
    return pd.DataFrame(rows)


def _label(model: TransformerBridge, layers: Any) -> str:
    if isinstance(layers, str) and layers == "all":
        return "all"
    return ",".join(str(layer) for layer in resolve_layers(model, layers))
