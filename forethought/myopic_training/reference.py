"""The myopic gradient by its definition, one target position at a time: slow, obviously correct.

For every target position ``t``, hooks detach what the mode treats as constant at positions ``i < t`` in every
layer (``strict``: keys and values as attention reads them; ``cutgrad``: the inputs of the key and value
projections; see :func:`detached_hooks`), and the loss at
``t`` alone is back-propagated; the gradients accumulate over ``t``. This costs one forward and backward pass per
position, so it is only for checking :func:`~forethought.myopic_training.myopic` (which must match it) and for
benchmarks.

Example:
    >>> import torch
    >>> from forethought.models import tiny_model
    >>> from forethought.myopic_training import myopic
    >>> model = tiny_model(n_layers=2, d_model=16, n_heads=2, d_vocab=20, n_ctx=8)
    >>> tokens = torch.randint(0, 20, (2, 8))
    >>> accumulate_per_position_gradients(model, tokens, mode="strict")
    >>> slow = [p.grad.clone() for p in model.parameters()]
    >>> model.zero_grad()
    >>> with myopic(model, mode="strict"):
    ...     model(tokens, return_type="loss").backward()
    >>> all(torch.allclose(a, p.grad, atol=1e-6) for a, p in zip(slow, model.parameters()))
    True
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import torch
from jaxtyping import Int
from torch import Tensor

from forethought.errors import check_choice

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

DETACHED_HOOKS = {"strict": ("attn.hook_k", "attn.hook_v"), "cutgrad": ("attn.k.hook_in", "attn.v.hook_in")}
#: Where a layer normalises its keys (Qwen3, OLMo-2, Gemma-3), the keys attention reads are the normalised ones.
NORMED_KEYS = "attn.hook_k_normed"


def detached_hooks(model: TransformerBridge, mode: Literal["strict", "cutgrad"]) -> list[str]:
    """The hooks whose past positions the mode holds constant, in every layer.

    ``strict``: the keys and values as attention reads them (the normalised key where the layer has a query/key
    norm, so that the norm's gain, like ``W_K``, does not learn through the past); ``cutgrad``: the inputs of the
    key and value projections.
    """
    names = []
    for layer in range(model.cfg.n_layers):
        for name in DETACHED_HOOKS[mode]:
            if name == "attn.hook_k" and f"blocks.{layer}.{NORMED_KEYS}" in model.hook_dict:
                name = NORMED_KEYS
            names.append(f"blocks.{layer}.{name}")
    return names


def accumulate_per_position_gradients(model: TransformerBridge, tokens: Int[Tensor, "batch pos"],
                                      mode: Literal["strict", "cutgrad"] = "strict") -> None:
    """Add the myopic gradient of the mean next-token loss to every parameter's ``.grad``, position by position."""
    check_choice("mode", mode, DETACHED_HOOKS)
    n_targets = tokens.shape[0] * (tokens.shape[1] - 1)
    for t in range(tokens.shape[1] - 1):
        def detach_past(x: Tensor, hook: Any, t: int = t) -> Tensor:
            axis = getattr(hook, "pos_dim", None) or 1  # per-head normalised keys are [batch, head, pos, d_head]
            shape = [1] * x.ndim
            shape[axis] = -1
            past = (torch.arange(x.shape[axis], device=x.device) < t).view(shape)
            return torch.where(past, x.detach(), x)

        hooks = [(name, detach_past) for name in detached_hooks(model, mode)]
        with model.hooks(fwd_hooks=hooks):
            per_token = model(tokens, return_type="loss", loss_per_token=True)
        (per_token[:, t].sum() / n_targets).backward()
