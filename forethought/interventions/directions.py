"""Probe-direction interventions: is what a probe *decodes* also what the model *uses*?

Given a direction ``[d_model]`` or a subspace ``[k, d_model]`` (or a trained probe, via
:func:`~forethought.interventions.subspaces.as_directions`), :func:`project_out` removes it from the residual
stream at chosen (layer, positions) and :func:`add_direction` adds it, scaled. :func:`direction_effect`
intervenes at one position ``t`` at a time and reports how the model's predictions at ``t + N`` change (the
prediction of token ``t + 1 + N``), beside the same intervention with norm-matched random directions (seeded
placebos): a direction that a probe reads the future from, but whose removal changes the future predictions no
more than a random one, is decodable but not used.

Example:
    >>> import torch
    >>> from forethought.interventions import project_out
    >>> from forethought.models import tiny_model
    >>> model = tiny_model(n_layers=2, d_model=16, n_heads=2, d_vocab=20, n_ctx=8)
    >>> direction = torch.randn(16)
    >>> seen = {}
    >>> def keep(x, hook):
    ...     seen["resid"] = x.detach()
    >>> with project_out(model, direction, layer=1), model.hooks([("blocks.1.hook_resid_pre", keep)]):
    ...     _ = model(torch.tensor([[1, 2, 3]]))
    >>> float((seen["resid"] @ direction).abs().max()) < 1e-4
    True
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from forethought.errors import InvalidArgumentError, OutOfRangeError, check_choice
from forethought.hook_names import RESID, check_layer, hook_name
from forethought.interventions._core import (
    Edit,
    device_of,
    require_deterministic,
    resolve_indices,
    run_variants,
)
from forethought.interventions.metrics import kl_divergence
from forethought.interventions.results import DirectionEffect
from forethought.interventions.subspaces import as_directions, orthonormal_basis, random_directions
from forethought.prompts import Prompts, as_tokens

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

MODES = ("project_out", "add")


def projection_edit(basis: Float[Tensor, "k d_model"], positions: list[int] | None) -> Edit:
    """An edit that removes the span of the orthonormal ``basis`` at ``positions`` (``None``: all)."""

    def edit(x: Float[Tensor, "batch pos d_model"]) -> Tensor:
        b = basis.to(x.device, x.dtype)
        projected = x - (x @ b.T) @ b
        return projected if positions is None else _at(x, projected, positions)

    return edit


def addition_edit(vector: Float[Tensor, " d_model"], positions: list[int] | None) -> Edit:
    """An edit that adds ``vector`` at ``positions`` (``None``: all)."""

    def edit(x: Float[Tensor, "batch pos d_model"]) -> Tensor:
        moved = x + vector.to(x.device, x.dtype)
        return moved if positions is None else _at(x, moved, positions)

    return edit


@contextmanager
def project_out(
    model: TransformerBridge,
    directions: Any,
    layer: int,
    *,
    positions: Sequence[int] | int | str | None = None,
    hook: str = RESID,
) -> Iterator[Any]:
    """Remove the span of ``directions`` from ``hook`` at ``layer`` and ``positions`` inside the block.

    Args:
        model: a ``TransformerBridge``.
        directions: ``[d_model]``, ``[k, d_model]`` or anything :func:`as_directions` accepts.
        layer: the layer (for ``"resid"``, 0 is the embeddings).
        positions: positions to edit (``None``/``"all"``: every position of every forward).
        hook: a hook whose activation is ``[batch, pos, d_model]`` (default the residual stream).

    Example:
        >>> import torch
        >>> from forethought.interventions import project_out
        >>> from forethought.models import tiny_model
        >>> model = tiny_model(n_layers=2, d_model=16, n_heads=2, d_vocab=20, n_ctx=8)
        >>> tokens = torch.tensor([[1, 2, 3]])
        >>> with project_out(model, torch.randn(2, 16), layer=1, positions=[2]):
        ...     edited = model(tokens)
        >>> torch.equal(edited[0, :2], model(tokens)[0, :2])  # earlier positions cannot see the edit
        True
    """
    basis = orthonormal_basis(directions)
    with _editing(model, hook, layer, projection_edit(basis, None), basis.shape[1], positions):
        yield model


@contextmanager
def add_direction(
    model: TransformerBridge,
    direction: Any,
    layer: int,
    *,
    scale: float = 1.0,
    normalize: bool = True,
    positions: Sequence[int] | int | str | None = None,
    hook: str = RESID,
) -> Iterator[Any]:
    """Add ``scale * direction`` to ``hook`` at ``layer`` and ``positions`` inside the block.

    Args:
        model: a ``TransformerBridge``.
        direction: one direction (``[d_model]``, or anything :func:`as_directions` turns into one row).
        layer: the layer (for ``"resid"``, 0 is the embeddings).
        scale: the multiplier; with ``normalize`` (default) it is the added vector's norm.
        normalize: scale the unit direction rather than the direction as given.
        positions: positions to edit (``None``/``"all"``: every position of every forward).
        hook: a hook whose activation is ``[batch, pos, d_model]`` (default the residual stream).

    Example:
        >>> import torch
        >>> from forethought.interventions import add_direction
        >>> from forethought.models import tiny_model
        >>> model = tiny_model(n_layers=2, d_model=16, n_heads=2, d_vocab=20, n_ctx=8)
        >>> tokens, v = torch.tensor([[1, 2, 3]]), torch.randn(16)
        >>> with add_direction(model, v, layer=1, scale=5.0), add_direction(model, v, layer=1, scale=-5.0):
        ...     restored = model(tokens)
        >>> torch.allclose(restored, model(tokens), atol=1e-5)
        True
    """
    vector = _scaled_vector(direction, scale, normalize)
    with _editing(model, hook, layer, addition_edit(vector, None), vector.shape[0], positions):
        yield model


def direction_effect(
    model: TransformerBridge,
    tokens: Prompts,
    directions: Any,
    layer: int,
    *,
    mode: Literal["project_out", "add"] = "project_out",
    scale: float = 1.0,
    normalize: bool = True,
    positions: Sequence[int] | int | str = "all",
    offsets: Sequence[int] = (0, 1, 2, 3),
    n_random: int = 3,
    seed: int = 0,
    hook: str = RESID,
    batch_size: int = 32,
    progress: bool = True,
) -> DirectionEffect:
    """Intervene at each position ``t`` alone and measure the change in the predictions at ``t + N``.

    Args:
        model: a ``TransformerBridge`` with a deterministic forward.
        tokens: sequences ``[batch, pos]`` (token tensors, or strings of equal token length), run teacher-forced.
        directions: what :func:`as_directions` accepts (a probe's class directions, a subspace, ...).
        layer: where to intervene: the residual depth for ``hook="resid"`` (0 is the embeddings, ``n_layers`` the
            final state; the result's ``depth`` column), the block index for a hook inside a block.
        mode: ``"project_out"`` (remove the span) or ``"add"`` (add ``scale`` times the direction).
        scale: as in :func:`add_direction` (``mode="add"`` only).
        normalize: as in :func:`add_direction` (``mode="add"`` only).
        positions: the positions ``t`` to intervene at, one at a time.
        offsets: the offsets ``N``: the prediction read at ``t + N`` is of token ``t + 1 + N``.
        n_random: random placebo draws, each norm-matched (same row norms, hence for ``project_out`` a random
            subspace of the same dimension).
        seed: seeds the random placebo draws.
        hook: a ``[batch, pos, d_model]`` hook template (default the residual stream).
        batch_size: rows per forward (intervened copies are stacked along the batch).
        progress: show a progress bar.

    Example:
        >>> import torch
        >>> from forethought.interventions import direction_effect
        >>> from forethought.models import tiny_model
        >>> model = tiny_model(n_layers=2, d_model=16, n_heads=2, d_vocab=20, n_ctx=8)
        >>> tokens = torch.randint(0, 20, (4, 8), generator=torch.Generator().manual_seed(0))
        >>> effect = direction_effect(model, tokens, torch.randn(16), layer=1, offsets=(0, 1), progress=False)
        >>> effect.summary()[["condition", "offset"]].values.tolist()
        [['direction', 0], ['direction', 1], ['random', 0], ['random', 1]]
    """
    check_choice("mode", mode, MODES)
    tokens = as_tokens(model, tokens).to(device_of(model))
    seq = tokens.shape[1]
    offset_list = _check_offsets(offsets, seq)
    pos_list = resolve_indices(positions, seq, "position")
    pos_list = [t for t in pos_list if t + offset_list[0] < seq]
    if isinstance(n_random, bool) or not isinstance(n_random, int) or n_random < 0:
        raise InvalidArgumentError(f"n_random={n_random!r} is not allowed; expected an integer >= 0")
    name = hook_name(model, hook, layer)
    layer = check_layer(model, layer, hook)
    axis = "depth" if hook == RESID else "layer"
    require_deterministic(model)

    rows = as_directions(directions)
    if mode == "project_out":
        conditions = [("direction", 0, orthonormal_basis(rows))]
        conditions += [("random", i, orthonormal_basis(random_directions(rows, seed + i))) for i in range(n_random)]
        make_edit = projection_edit
    else:
        vector = _scaled_vector(rows, scale, normalize)
        conditions = [("direction", 0, vector)]
        conditions += [("random", i, random_directions(vector, seed + i)[0]) for i in range(n_random)]
        make_edit = addition_edit
    plan = [(condition, draw, t) for condition, draw, _ in conditions for t in pos_list]
    edits = [(name, make_edit(value, [t])) for _, _, value in conditions for t in pos_list]

    records = []
    with torch.no_grad():
        base = model(tokens).float()
        base_logp = base.log_softmax(-1)
        next_tokens = tokens[:, 1:].unsqueeze(-1)
        bar = tqdm(total=len(edits), desc=f"{mode} at {name}", disable=not progress, unit="run")
        for i, logits in run_variants(model, tokens, edits, batch_size):
            condition, draw, t = plan[i]
            logits = logits.float()
            logp = logits.log_softmax(-1)
            for offset in offset_list:
                r = t + offset
                if r >= seq:
                    break
                delta = float("nan")
                if r + 1 < seq:
                    delta = float((logp[:, r].gather(-1, next_tokens[:, r]) -
                                   base_logp[:, r].gather(-1, next_tokens[:, r])).mean())
                records.append({
                    axis: layer, "condition": condition, "draw": draw, "pos": t, "offset": offset, "read_pos": r,
                    "kl": float(kl_divergence(base[:, r], logits[:, r]).mean()),
                    "top1_changed": float((logits[:, r].argmax(-1) != base[:, r].argmax(-1)).float().mean()),
                    "delta_logprob": delta,
                })
            bar.update()
        bar.close()
    return DirectionEffect(frame=pd.DataFrame(records), mode=mode, layer=layer, hook=hook)


@contextmanager
def _editing(model: TransformerBridge, hook: str, layer: int, edit: Edit, d_model: int,
             positions: Any) -> Iterator[None]:
    name = hook_name(model, hook, layer)

    def apply(activation: Tensor, hook: Any) -> Tensor:
        if activation.ndim != 3 or activation.shape[-1] != d_model:
            raise InvalidArgumentError(f"{name!r} has activations of shape {tuple(activation.shape)}; direction "
                                       f"edits need [batch, pos, {d_model}]")
        if positions is None or (isinstance(positions, str) and positions == "all"):
            return edit(activation)
        return _at(activation, edit(activation), resolve_indices(positions, activation.shape[1], "position"))

    with model.hooks(fwd_hooks=[(name, apply)]):
        yield


def _at(original: Tensor, edited: Tensor, positions: list[int]) -> Tensor:
    """``edited`` at ``positions``, ``original`` elsewhere."""
    mask = torch.zeros(original.shape[1], dtype=torch.bool, device=original.device)
    mask[positions] = True
    return torch.where(mask.view(1, -1, 1), edited, original)


def _scaled_vector(direction: Any, scale: float, normalize: bool) -> Float[Tensor, " d_model"]:
    rows = as_directions(direction)
    if rows.shape[0] != 1:
        raise InvalidArgumentError(f"add needs one direction; got {rows.shape[0]} (pick one with classes=[...])")
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not np.isfinite(scale):
        raise InvalidArgumentError(f"scale={scale!r} is not allowed; expected a finite number")
    vector = rows[0]
    if normalize:
        norm = vector.norm()
        if norm == 0:
            raise InvalidArgumentError("the direction is zero; it cannot be normalised")
        vector = vector / norm
    return vector * scale


def _check_offsets(offsets: Any, seq: int) -> list[int]:
    if isinstance(offsets, int):
        offsets = [offsets]
    values = sorted(set(offsets))
    if not values or any(isinstance(o, bool) or not isinstance(o, int) or not 0 <= o < seq for o in values):
        raise OutOfRangeError(f"offsets={list(offsets)!r} are not allowed; expected integers in [0, {seq})")
    return values
