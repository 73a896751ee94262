"""Past ablation: how much does each position's prediction depend on earlier positions' keys and values?

The intervention itself is :func:`forethought.attention.ablate_past` (re-exported here): inside it,
each position's attention sees only itself (``"self"``, the paper's "transformer bigram" when applied in
every layer), or zero / mean keys and values for the past. :func:`past_ablation_effect` measures what that
costs, position by position, with :func:`per_position_loss` (the one next-token loss by position,
:func:`forethought.losses.loss_by_position`, under its name here).

Where the past is ablated is named by residual depth, as everywhere in forethought: at depth ``d`` the keys and
values that the attention computes from the residual stream at depth ``d`` (the attention of block ``d``, which
reads depth ``d`` and writes into depth ``d + 1``) are ablated for the past. Depths run from 0 (the embeddings)
to ``n_layers - 1``; the final depth ``n_layers`` feeds no attention.

Example:
    >>> import torch
    >>> from forethought.interventions import past_ablation_effect
    >>> from forethought.models import tiny_model
    >>> model = tiny_model(n_layers=2, d_model=16, n_heads=2, d_vocab=20, n_ctx=8)
    >>> tokens = torch.randint(0, 20, (4, 8), generator=torch.Generator().manual_seed(0))
    >>> frame = past_ablation_effect(model, tokens, depth_sets="each", progress=False)
    >>> sorted(frame["depths"].unique())
    ['0', '1', 'all']
    >>> float(frame.query("pos == 0")["delta"].abs().max())  # position 0 has no past
    0.0
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import pandas as pd
from tqdm.auto import tqdm

from forethought.attention.ablation import ablate_past
from forethought.errors import InvalidArgumentError, OutOfRangeError, check_choice
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
    depth_sets: Sequence[Any] | str = ("all",),
    methods: Sequence[str] | str = ("self",),
    batch_size: int = 32,
    progress: bool = True,
    layer_sets: Sequence[Any] | str | None = None,
) -> pd.DataFrame:
    """Per-position loss with and without the past's keys/values, for several layer sets and methods.

    Args:
        model: a ``TransformerBridge`` with a deterministic forward.
        tokens: sequences ``[batch, pos]``, or strings of equal token length.
        depth_sets: the residual depths whose past is ablated together (see the module docstring), one entry
            per condition: ``"all"``, an int or a list of ints in ``0 .. n_layers - 1``; ``"each"`` means every
            single depth and then all of them.
        methods: ``"self"``, ``"zero"`` and/or ``"mean"`` (see ``ablate_past``; ``"mean"`` averages over the
            positions of each batch of ``batch_size`` sequences).
        batch_size: sequences per forward.
        progress: show a progress bar.
        layer_sets: deprecated name of ``depth_sets`` (the same numbers).

    Returns:
        A tidy frame, one row per (depths, method, pos): ``depths`` (a label such as ``"all"`` or ``"0,1"``),
        ``method``, ``pos`` (predicting token ``pos + 1``), ``loss``, ``ablated_loss`` and ``delta``.
    """
    if layer_sets is not None:
        warnings.warn("past_ablation_effect(layer_sets=...) is deprecated; the same numbers are residual depths: "
                      "pass depth_sets=...", DeprecationWarning, stacklevel=2)
        depth_sets = layer_sets
    tokens = as_tokens(model, tokens)
    if tokens.shape[1] < 2:
        raise InvalidArgumentError("tokens need at least 2 positions to have a next-token loss")
    require_deterministic(model)
    if isinstance(depth_sets, str) and depth_sets == "each":
        depth_sets = [[depth] for depth in range(model.cfg.n_layers)] + ["all"]
    elif isinstance(depth_sets, (str, int)):
        depth_sets = [depth_sets]
    methods = [methods] if isinstance(methods, str) else list(methods)
    for method in methods:
        check_choice("method", method, ABLATIONS)
    conditions = [(_depths(model, depths), method) for depths in depth_sets for method in methods]
    labels = [_label(depths) for depths, _ in conditions]

    base = loss_by_position(model, tokens, batch_size)
    rows = []
    bar = tqdm(conditions, desc="past ablation", disable=not progress)
    for (depths, method), label in zip(bar, labels, strict=True):
        with ablate_past(model, layers=depths, method=method):  # the attention of block d reads depth d
            ablated = loss_by_position(model, tokens, batch_size)
        for pos, (loss, loss_ablated) in enumerate(zip(base.tolist(), ablated.tolist(), strict=True)):
            rows.append({"depths": label, "method": method, "pos": pos, "loss": loss,
                         "ablated_loss": loss_ablated, "delta": loss_ablated - loss})
    return pd.DataFrame(rows)


def _depths(model: TransformerBridge, depths: Any) -> str | list[int]:
    """``"all"`` or the sorted residual depths of one condition, each checked to feed an attention."""
    if isinstance(depths, str) and depths == "all":
        return "all"
    n = model.cfg.n_layers
    values = [depths] if isinstance(depths, int) else depths
    if isinstance(values, str) or not isinstance(values, Sequence) or not values:
        raise InvalidArgumentError(f"depth set {depths!r} is not allowed; expected 'all', an int or a list of ints")
    for depth in values:
        if isinstance(depth, bool) or not isinstance(depth, int) or not -n <= depth < n:
            raise OutOfRangeError(f"depth={depth!r} is out of range for a past ablation; the attention of this model "
                                  f"reads residual depths 0..{n - 1} (depth {n} is the final state)")
    return sorted({depth % n for depth in values})


def _label(depths: str | list[int]) -> str:
    return depths if isinstance(depths, str) else ",".join(str(depth) for depth in depths)
