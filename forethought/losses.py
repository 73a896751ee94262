"""Next-token loss, position by position: the one definition the interventions and the myopia measurements share.

``loss_by_position(model, tokens)[t]`` is the mean over sequences of the cross-entropy (nats) of predicting
token ``t + 1`` from tokens ``0..t``, for ``t = 0 .. pos - 2``. The model runs as it is, under whatever hooks
are active (inside :func:`~forethought.attention.ablate_past`, a regime's ``forward_context()``, ...),
in eval mode for the pass (its mode is restored afterwards), without gradients, in batches.

Example:
    >>> import torch
    >>> from forethought.losses import loss_by_position
    >>> from forethought.models import tiny_model
    >>> model = tiny_model(n_layers=1, d_model=16, n_heads=2, d_vocab=20, n_ctx=8)
    >>> loss_by_position(model, torch.randint(0, 20, (3, 8))).shape
    torch.Size([7])
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from forethought.errors import InvalidArgumentError, NumericalError, check_positive
from forethought.prompts import as_tokens

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

__all__ = ["loss_by_position", "token_losses"]


def token_losses(
    model: TransformerBridge,
    tokens: Any,
    batch_size: int = 32,
    progress: bool = False,
) -> Float[Tensor, "n_seq targets"]:
    """The next-token loss of every sequence at every position (float64, on the CPU).

    Args:
        model: a ``TransformerBridge``, run as it is under the active hooks.
        tokens: ``[n_seq, pos]`` tokens with ``pos >= 2``, or strings (see :func:`forethought.prompts.as_tokens`).
        batch_size: sequences per forward.
        progress: show a progress bar.

    Raises:
        InvalidArgumentError: fewer than 2 positions or a bad ``batch_size``.
        NumericalError: a NaN or infinite loss.

    Example:
        >>> import torch
        >>> from forethought.models import tiny_model
        >>> model = tiny_model(n_layers=1, d_model=16, n_heads=2, d_vocab=20, n_ctx=8)
        >>> token_losses(model, torch.randint(0, 20, (3, 8))).dtype
        torch.float64
    """
    tokens = as_tokens(model, tokens)
    check_positive("batch_size", batch_size, integer=True)
    if tokens.shape[1] < 2:
        raise InvalidArgumentError(f"sequences of {tokens.shape[1]} token(s) have no next token; need at least 2")
    device = next(model.parameters()).device
    losses = []
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for start in tqdm(range(0, len(tokens), batch_size), desc="eval", disable=not progress, leave=False):
                batch = tokens[start : start + batch_size].to(device)
                per_token = model(batch, return_type="loss", loss_per_token=True)
                losses.append(per_token.detach().double().cpu())
    finally:
        model.train(was_training)
    result = torch.cat(losses)
    if not torch.isfinite(result).all():
        raise NumericalError("the loss is NaN or infinite; the model's weights or inputs are not finite")
    return result


def loss_by_position(
    model: TransformerBridge,
    tokens: Any,
    batch_size: int = 32,
    progress: bool = False,
) -> Float[Tensor, " targets"]:
    """Mean next-token loss at each position (float64): entry ``t`` is the loss of predicting token ``t + 1``.

    The arguments are those of :func:`token_losses`, whose rows this averages.

    Example:
        >>> import torch
        >>> from forethought.models import tiny_model
        >>> model = tiny_model(n_layers=1, d_model=16, n_heads=2, d_vocab=20, n_ctx=8)
        >>> tokens = torch.randint(0, 20, (3, 8))
        >>> losses = loss_by_position(model, tokens)
        >>> bool(torch.isclose(losses.mean(), torch.as_tensor(model(tokens, return_type="loss").item(),
        ...                                                   dtype=torch.float64)))
        True
    """
    losses = token_losses(model, tokens, batch_size=batch_size, progress=progress)
    return losses.sum(0) / len(losses)
