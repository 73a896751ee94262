"""Past ablation: each position's attention without the keys and values of earlier positions (changes the forward).

``ablate_past(model)`` recomputes every layer's attention (:mod:`forethought.attention.recompute`) with each
query seeing only its own key and value (the paper's "transformer bigram"), or zero / mean keys and values for the
past. The transformer-bigram training regime and the past-ablation intervention both use it.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import Tensor

from forethought.attention.recompute import (
    LayerCapture,
    RecomputedAttention,
    attend,
    expand_kv,
    geometry,
    installed,
    qkv,
)
from forethought.errors import check_choice
from forethought.hook_names import resolve_layers
from forethought.options import ABLATIONS

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge


def ablate_past(
    model: TransformerBridge,
    layers: Any = "all",
    method: Literal["self", "zero", "mean"] = "self",
) -> AbstractContextManager[Any]:
    """Remove each position's access to earlier positions' keys and values (changes the forward pass).

    Args:
        model: a ``TransformerBridge``.
        layers: ``"all"`` (the paper's "transformer bigram" with ``method="self"``) or layer indices.
        method: ``"self"``: each position attends only to itself; ``"zero"``: past keys and values are zero
            (a zero key still takes softmax weight); ``"mean"``: past keys and values are replaced by their
            mean over the batch's positions.

    Example:
        >>> import torch
        >>> from forethought.models import tiny_model
        >>> model = tiny_model(n_layers=1, d_model=16, n_heads=2, d_vocab=20, n_ctx=8)
        >>> a, b = torch.tensor([[1, 2, 3]]), torch.tensor([[7, 2, 3]])
        >>> with ablate_past(model):
        ...     same = torch.allclose(model(a)[0, -1], model(b)[0, -1], atol=1e-6)
        >>> same
        True
    """
    check_choice("method", method, ABLATIONS)
    layers = resolve_layers(model, layers)

    def make_z(layer: int, capture: LayerCapture, z: Tensor) -> Tensor:
        geo = geometry(model, layer)
        q, k, v = qkv(capture, geo)
        k, v = expand_kv(k, geo.n_heads), expand_kv(v, geo.n_heads)
        if method == "self":
            return v.to(z.dtype)
        if method == "zero":
            k_past, v_past = torch.zeros_like(k), torch.zeros_like(v)
        else:
            k_past = k.mean(dim=(0, 1), keepdim=True).expand_as(k)
            v_past = v.mean(dim=(0, 1), keepdim=True).expand_as(v)
        return attend(q, k, v, k_past, v_past, geo.scale, window=geo.window, softcap=geo.softcap).to(z.dtype)

    return installed(RecomputedAttention(model, layers, make_z), model)
