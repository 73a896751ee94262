"""Shared machinery of the interventions: input checks and batched runs of edited copies of a batch.

:func:`run_variants` is what makes sweeps fast: ``n`` edited copies of the same ``[batch, pos]`` tokens are
stacked into one ``[n * batch, pos]`` forward, and one hook applies copy ``i``'s edit to rows
``i * batch : (i + 1) * batch`` only. Copies never see each other (every row is its own sequence), so the
result is that of ``n`` separate forwards.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from forethought.errors import InvalidArgumentError, OutOfRangeError, check_positive
from forethought.prompts import as_tokens

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

#: An edit takes one copy's activation ``[batch, pos, ...]`` and returns its replacement (same shape).
Edit = Callable[[Tensor], Tensor]


def require_deterministic(model: TransformerBridge) -> None:
    """Raise unless the forward is deterministic: no dropout that is active in the current mode.

    ``boot_native`` models have no dropout, so their default training mode is fine; HF checkpoints usually
    configure dropout, so they must be in ``eval()`` mode (they are after ``load_model``).
    """
    roots = [model, getattr(model, "original_model", None)]
    modules = [m for root in roots if isinstance(root, torch.nn.Module) for m in root.modules()]
    if not any(m.training for m in modules):
        return
    if any(isinstance(m, torch.nn.Dropout) and m.p > 0 and m.training for m in modules):
        raise InvalidArgumentError("the model has active dropout (training mode); call model.eval() first")
    config = getattr(getattr(model, "original_model", None), "config", None)
    rates = {key: value for key, value in (vars(config).items() if config is not None else ())
             if ("dropout" in key or "pdrop" in key) and isinstance(value, (int, float)) and value > 0}
    if rates:
        raise InvalidArgumentError(
            f"the model is in training mode with dropout {rates}; call model.eval() first"
        )


def check_pair(model: TransformerBridge, clean: Any, corrupt: Any) -> tuple[Tensor, Tensor]:
    """Clean and corrupted tokens, both valid for the model and of the same shape.

    Each may be a tensor or strings (see :func:`~forethought.prompts.as_tokens`).
    """
    clean, corrupt = as_tokens(model, clean, "clean_tokens"), as_tokens(model, corrupt, "corrupt_tokens")
    if clean.shape != corrupt.shape:
        raise InvalidArgumentError(
            f"clean_tokens {tuple(clean.shape)} and corrupt_tokens {tuple(corrupt.shape)} differ in shape; "
            "patching needs prompts of equal length, pair by pair"
        )
    return clean, corrupt


def resolve_index(value: Any, size: int, what: str) -> int:
    """An index into an axis of ``size`` (negative counts from the end), or :class:`OutOfRangeError`."""
    if isinstance(value, bool) or not isinstance(value, int) or not -size <= value < size:
        raise OutOfRangeError(f"{what}={value!r} is out of range; expected an integer in [0, {size})")
    return value % size


def resolve_indices(values: Any, size: int, what: str) -> list[int]:
    """``"all"``/``None``, an int or a sequence of ints → sorted distinct indices into an axis of ``size``."""
    if values is None or (isinstance(values, str) and values == "all"):
        return list(range(size))
    if isinstance(values, Tensor):
        values = values.tolist()
    if isinstance(values, int):
        values = [values]
    if isinstance(values, str) or not isinstance(values, Sequence) or not values:
        raise InvalidArgumentError(f"{what}={values!r} is not allowed; expected 'all', an int or a list of ints")
    return sorted({resolve_index(value, size, what) for value in values})


def device_of(model: TransformerBridge) -> torch.device:
    return next(model.parameters()).device


def run_variants(
    model: TransformerBridge,
    tokens: Int[Tensor, "batch pos"],
    edits: Sequence[tuple[str, Edit]],
    batch_size: int = 32,
) -> Iterator[tuple[int, Float[Tensor, "batch pos d_vocab"]]]:
    """Run one edited copy of ``tokens`` per ``(hook_name, edit)`` and yield ``(index, logits)`` in order.

    Consecutive edits at the same hook are batched, ``max(1, batch_size // batch)`` copies per forward.
    """
    check_positive("batch_size", batch_size, integer=True)
    per_forward = max(1, batch_size // tokens.shape[0])
    tokens = tokens.to(device_of(model))
    start = 0
    while start < len(edits):
        name = edits[start][0]
        stop = start
        while stop < len(edits) and stop - start < per_forward and edits[stop][0] == name:
            stop += 1
        chunk = [edit for _, edit in edits[start:stop]]
        with model.hooks(fwd_hooks=[(name, _stacked(chunk))]):
            logits = model(tokens.repeat(len(chunk), 1))
        for i, copy in enumerate(logits.unflatten(0, (len(chunk), tokens.shape[0]))):
            yield start + i, copy
        start = stop


def _stacked(edits: list[Edit]) -> Callable[[Tensor, Any], Tensor]:
    def hook(activation: Tensor, hook: Any) -> Tensor:
        copies = activation.unflatten(0, (len(edits), -1))
        return torch.stack([edit(copy) for edit, copy in zip(edits, copies, strict=True)]).flatten(0, 1)

    return hook
