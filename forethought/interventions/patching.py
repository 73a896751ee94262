"""Activation patching: swap activations between a clean and a corrupted run, and score the result.

Patching goes one (layer, position, head) cell at a time.

* **Denoising** (``direction="denoise"``, the TransformerLens convention) runs the corrupted tokens and writes
  in one clean activation: how much of the clean behaviour does that cell restore?
* **Noising** (``direction="noise"``) runs the clean tokens and writes in one corrupted activation: how much
  of the clean behaviour does that cell destroy?

The score is a :mod:`~forethought.interventions.metrics` metric read at one position of the patched run's
logits: a fixed ``read_pos`` (``-1``, the last position, by default) or, for the planning question, a
``read_offset`` ``N`` after the patched position (patch position ``t``, read the prediction made at
``t + N``, i.e. of token ``t + 1 + N``).

Cells are batched: ``batch_size // batch`` patched copies of the prompts run in one forward, which gives the
same numbers as one forward per cell (and as ``transformer_lens.patching`` where it covers the case).

Example:
    >>> import torch
    >>> from forethought.interventions import LogitDiff, patch_positions
    >>> from forethought.models import tiny_model
    >>> model = tiny_model(n_layers=2, d_model=16, n_heads=2, d_vocab=20, n_ctx=8)
    >>> clean = torch.tensor([[1, 2, 3, 4, 5]])
    >>> corrupt = torch.tensor([[1, 7, 3, 4, 5]])
    >>> result = patch_positions(model, clean, corrupt, metric=LogitDiff(answer=3, wrong=4), progress=False)
    >>> result.values.shape  # [depth, pos]: residual depths 0 (the embeddings) .. n_layers
    torch.Size([3, 5])
    >>> frame = result.to_frame()
    >>> list(frame.columns[:4])
    ['depth', 'pos', 'read_pos', 'value']

The swept layer axis is named by what it indexes: ``"depth"`` for the residual stream (``hook="resid"``: 0 is the
embeddings, ``n_layers`` the final state), ``"layer"`` (a block index) for a hook inside a block.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from typing import TYPE_CHECKING, Any, Literal

import torch
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from forethought.errors import (
    InvalidArgumentError,
    OutOfRangeError,
    UnsupportedArchitectureError,
    check_choice,
)
from forethought.hook_names import RESID, hook_name, resolve_layers
from forethought.interventions._core import (
    check_pair,
    device_of,
    require_deterministic,
    resolve_index,
    resolve_indices,
    run_variants,
)
from forethought.interventions.metrics import Metric, Readout, resolve_metric
from forethought.interventions.results import VARIES, PatchResult
from forethought.prompts import Prompts

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

DIRECTIONS = ("denoise", "noise")


@contextmanager
def patch_activation(
    model: TransformerBridge,
    hook: str,
    source: Float[Tensor, "batch pos ..."],
    *,
    layer: int | None = None,
    positions: Sequence[int] | int | str | None = None,
    heads: Sequence[int] | int | str | None = None,
) -> Iterator[Any]:
    """Overwrite an activation with ``source`` at chosen positions (and heads) in every forward of the block.

    Args:
        model: a ``TransformerBridge``.
        hook: a hook template (``"resid"``, ``"hook_resid_pre"``, ``"attn.hook_z"``, ...) with ``layer``, or a
            full hook name.
        source: the values to write, shaped like the activation (a batch of 1 is broadcast).
        layer: the layer of ``hook`` (for ``"resid"``, 0 is the embeddings).
        positions: positions to overwrite (``None``/``"all"``: all).
        heads: heads to overwrite, for activations with a head axis (``[batch, pos, head, d_head]``).

    Example:
        >>> import torch
        >>> from forethought.interventions import patch_activation
        >>> from forethought.models import tiny_model
        >>> model = tiny_model(n_layers=2, d_model=16, n_heads=2, d_vocab=20, n_ctx=8)
        >>> clean, corrupt = torch.tensor([[1, 2, 3]]), torch.tensor([[4, 5, 6]])
        >>> _, cache = model.run_with_cache(clean)
        >>> final = cache["blocks.1.hook_resid_post"]
        >>> with patch_activation(model, "resid", final, layer=2):
        ...     patched = model(corrupt)
        >>> torch.allclose(patched, model(clean), atol=1e-5)
        True
    """
    name = hook_name(model, hook, layer)
    if not isinstance(source, Tensor) or source.ndim < 3:
        raise InvalidArgumentError(f"source must be a tensor [batch, pos, ...]; got "
                                   f"{getattr(source, 'shape', type(source).__name__)}")
    pos_list = None if positions is None else resolve_indices(positions, source.shape[1], "position")
    head_list = None
    if heads is not None:
        if source.ndim != 4:
            raise InvalidArgumentError(f"heads={heads!r} given, but {name!r} has no head axis "
                                       f"(source shape {tuple(source.shape)})")
        head_list = resolve_indices(heads, source.shape[2], "head")
    source = source.detach()

    def overwrite(activation: Tensor, hook: Any) -> Tensor:
        if activation.shape[1:] != source.shape[1:] or source.shape[0] not in (1, activation.shape[0]):
            raise InvalidArgumentError(f"source shape {tuple(source.shape)} does not fit activation "
                                       f"{name!r} of shape {tuple(activation.shape)}")
        return write(activation, source, pos_list, head_list)

    with model.hooks(fwd_hooks=[(name, overwrite)]):
        yield model


def write(activation: Tensor, source: Tensor, positions: list[int] | None, heads: list[int] | None) -> Tensor:
    """``activation`` with ``source`` written at ``positions`` (and ``heads``); ``None`` means all."""
    mask = _axis_mask(positions, activation.shape[1], axis=1, ndim=activation.ndim, device=activation.device)
    if heads is not None:
        mask = mask & _axis_mask(heads, activation.shape[2], axis=2, ndim=activation.ndim, device=activation.device)
    return torch.where(mask, source.to(activation.device, activation.dtype), activation)


def _axis_mask(indices: list[int] | None, size: int, axis: int, ndim: int, device: Any) -> Tensor:
    """A boolean mask selecting ``indices`` along ``axis``, broadcastable to an ``ndim`` tensor."""
    mask = torch.ones(size, dtype=torch.bool, device=device)
    if indices is not None:
        mask = torch.zeros_like(mask)
        mask[indices] = True
    return mask.reshape((1,) * axis + (size,) + (1,) * (ndim - axis - 1))


def patch_positions(
    model: TransformerBridge,
    clean_tokens: Prompts,
    corrupt_tokens: Prompts,
    metric: Metric | str | Any = "logit_diff",
    *,
    hook: str = RESID,
    layers: Sequence[int] | int | str = "all",
    positions: Sequence[int] | int | str = "all",
    direction: Literal["denoise", "noise"] = "denoise",
    read_pos: int = -1,
    read_offset: int | None = None,
    batch_size: int = 32,
    progress: bool = True,
) -> PatchResult:
    """Patch one (layer, position) cell at a time at ``hook``: a ``[depth, pos]`` or ``[layer, pos]`` sweep.

    The residual stream (``hook="resid"``) is swept by depth (dims ``("depth", "pos")``), a hook inside a block by
    block index (dims ``("layer", "pos")``).

    Args:
        model: a ``TransformerBridge`` with a deterministic forward (``eval()`` if it has dropout).
        clean_tokens: the clean prompts ``[batch, pos]``: token tensors, or strings (one or a list, tokenised
            with ``model.tokenizer``, of equal token length).
        corrupt_tokens: the corrupted prompts, of the same shape as ``clean_tokens``.
        metric: a :class:`~forethought.interventions.metrics.Metric` (``LogitDiff(answer, wrong)``,
            ``LogProb(target)``, ``KLToClean()``), a name (``"logit_diff"``, ``"log_prob"``, ``"kl"``) or a
            function ``Readout -> [batch]``.
        hook: any hook whose activation is ``[batch, pos, ...]``: ``"resid"`` (residual stream, layers
            ``0..n_layers``), ``"hook_resid_pre"``, ``"hook_attn_out"``, ``"hook_mlp_out"``, ``"attn.hook_z"``
            (all heads at once), ...
        layers: depths (for ``"resid"``) or blocks to sweep (``"all"``, an int or a list).
        positions: positions to sweep (``"all"``: every position whose read position exists).
        direction: ``"denoise"`` (clean into corrupted run) or ``"noise"`` (corrupted into clean run).
        read_pos: the position the metric is read at (ignored when ``read_offset`` is given).
        read_offset: read the metric ``read_offset`` positions after the patched one instead.
        batch_size: rows per forward (patched copies are stacked along the batch).
        progress: show a progress bar.

    Example:
        >>> import torch
        >>> from forethought.interventions import patch_positions
        >>> from forethought.models import tiny_model
        >>> model = tiny_model(n_layers=2, d_model=16, n_heads=2, d_vocab=20, n_ctx=8)
        >>> clean, corrupt = torch.tensor([[1, 2, 3, 4, 5]]), torch.tensor([[1, 7, 3, 4, 5]])
        >>> planning = patch_positions(model, clean, corrupt, "kl", read_offset=2, progress=False)
        >>> planning.coords["pos"], planning.read_positions[0].tolist()  # patch t, read the prediction at t + 2
        ([0, 1, 2], [2, 3, 4])
    """
    clean_tokens, corrupt_tokens = check_pair(model, clean_tokens, corrupt_tokens)
    seq = clean_tokens.shape[1]
    layer_list = resolve_layers(model, layers, hook)
    offset = _check_offset(read_offset, seq)
    pos_list = _patched_positions("all" if positions is None else positions, seq, offset)
    cells = [(layer, pos, None) for layer in layer_list for pos in pos_list]
    axis = layer_axis(hook)
    return _sweep(model, clean_tokens, corrupt_tokens, metric, hook, cells, (axis, "pos"),
                  {axis: layer_list, "pos": pos_list}, direction, read_pos, offset, batch_size, progress)


def patch_heads(
    model: TransformerBridge,
    clean_tokens: Prompts,
    corrupt_tokens: Prompts,
    metric: Metric | str | Any = "logit_diff",
    *,
    hook: str = "attn.hook_z",
    layers: Sequence[int] | int | str = "all",
    heads: Sequence[int] | int | str = "all",
    positions: Sequence[int] | int | str | None = None,
    direction: Literal["denoise", "noise"] = "denoise",
    read_pos: int = -1,
    read_offset: int | None = None,
    batch_size: int = 32,
    progress: bool = True,
) -> PatchResult:
    """Patch one attention head at a time: ``[layer, head]`` (all positions together) or ``[layer, pos, head]``.

    Args:
        model: a ``TransformerBridge`` with a deterministic forward (``eval()`` if it has dropout).
        clean_tokens: the clean prompts, as in :func:`patch_positions`.
        corrupt_tokens: the corrupted prompts, of the same shape as ``clean_tokens``.
        metric: a metric, a metric name or a function, as in :func:`patch_positions`.
        hook: a per-head activation ``[batch, pos, head, d_head]``: ``"attn.hook_z"`` (the head's output
            before ``W_O``, default), ``"attn.hook_q"``, ``"attn.hook_k"``, ``"attn.hook_v"`` (``k``/``v`` have
            ``n_key_value_heads`` heads on grouped-query models).
        layers: layers to sweep (``"all"``, an int or a list).
        heads: heads to sweep.
        positions: ``None`` patches each head at every position at once (dims ``layer, head``); ``"all"`` or
            a list patches one position at a time (dims ``layer, pos, head``).
        direction: ``"denoise"`` (clean into corrupted run) or ``"noise"`` (corrupted into clean run).
        read_pos: the position the metric is read at (ignored when ``read_offset`` is given).
        read_offset: with per-position patching, read the metric this many positions after the patched one.
        batch_size: rows per forward (patched copies are stacked along the batch).
        progress: show a progress bar.

    Example:
        >>> import torch
        >>> from forethought.interventions import patch_heads
        >>> from forethought.models import tiny_model
        >>> model = tiny_model(n_layers=2, d_model=16, n_heads=2, d_vocab=20, n_ctx=8)
        >>> clean, corrupt = torch.tensor([[1, 2, 3, 4]]), torch.tensor([[1, 7, 3, 4]])
        >>> patch_heads(model, clean, corrupt, "kl", progress=False).values.shape
        torch.Size([2, 2])
        >>> patch_heads(model, clean, corrupt, "kl", positions="all", progress=False).dims
        ('layer', 'pos', 'head')
    """
    clean_tokens, corrupt_tokens = check_pair(model, clean_tokens, corrupt_tokens)
    seq = clean_tokens.shape[1]
    layer_list = resolve_layers(model, layers, hook)
    n_heads = _head_count(model, hook, layer_list[0])
    head_list = resolve_indices(heads, n_heads, "head")
    offset = _check_offset(read_offset, seq)
    if positions is None:
        if offset is not None:
            raise InvalidArgumentError("read_offset needs per-position patching; pass positions='all' or a list")
        cells = [(layer, None, head) for layer in layer_list for head in head_list]
        dims, coords = ("layer", "head"), {"layer": layer_list, "head": head_list}
    else:
        pos_list = _patched_positions(positions, seq, offset)
        cells = [(layer, pos, head) for layer in layer_list for pos in pos_list for head in head_list]
        dims, coords = ("layer", "pos", "head"), {"layer": layer_list, "pos": pos_list, "head": head_list}
    return _sweep(model, clean_tokens, corrupt_tokens, metric, hook, cells, dims, coords, direction, read_pos,
                  offset, batch_size, progress)


def layer_axis(hook: str) -> str:
    """The name of a sweep's layer axis: ``"depth"`` (residual depth) for ``"resid"``, ``"layer"`` (block) otherwise."""
    return "depth" if hook == RESID else "layer"


def _patched_positions(positions: Sequence[int] | int | str, seq: int, offset: int | None) -> list[int]:
    """The positions to patch; with a read offset, ``"all"`` means every position whose read position exists."""
    if offset is not None and isinstance(positions, str) and positions == "all":
        return list(range(seq - offset))
    pos_list = resolve_indices(positions, seq, "position")
    if offset is not None and pos_list[-1] + offset >= seq:
        raise OutOfRangeError(f"position {pos_list[-1]} + read_offset {offset} is past the last position "
                              f"{seq - 1}; drop positions >= {seq - offset}")
    return pos_list


def _sweep(
    model: TransformerBridge,
    clean: Tensor,
    corrupt: Tensor,
    metric: Any,
    hook: str,
    cells: list[tuple[int, int | None, int | None]],
    dims: tuple[str, ...],
    coords: dict[str, list[int]],
    direction: str,
    read_pos: int,
    read_offset: int | None,
    batch_size: int,
    progress: bool,
) -> PatchResult:
    check_choice("direction", direction, DIRECTIONS)
    metric = resolve_metric(metric)
    batch, seq = clean.shape
    metric.check(batch, seq, model.cfg.d_vocab)
    if read_offset is None:
        read_pos = resolve_index(read_pos, seq, "read_pos")
    require_deterministic(model)
    names = {layer: hook_name(model, hook, layer) for layer in coords[dims[0]]}

    with torch.no_grad():
        clean_logits, clean_acts = capture(model, clean, list(names.values()))
        corrupt_logits, corrupt_acts = capture(model, corrupt, list(names.values()))
        source, run_tokens = (clean_acts, corrupt) if direction == "denoise" else (corrupt_acts, clean)
        edits = []
        for layer, pos, head in cells:
            name = names[layer]
            if head is not None and source[name].ndim != 4:
                raise UnsupportedArchitectureError(f"{name!r} has no head axis (shape "
                                                   f"{tuple(source[name].shape)}); patch heads at attn.hook_z")
            edits.append((name, partial(write, source=source[name], positions=None if pos is None else [pos],
                                        heads=None if head is None else [head])))

        reads = [pos + read_offset if read_offset is not None else read_pos for _, pos, _ in cells]
        baselines: dict[int, tuple[Tensor, Tensor]] = {}
        for r in set(reads):
            readout = partial(Readout, clean=clean_logits[:, r], corrupt=corrupt_logits[:, r], pos=r)
            baselines[r] = (_score(metric, readout(logits=clean_logits[:, r]), batch),
                            _score(metric, readout(logits=corrupt_logits[:, r]), batch))
        values = torch.empty(len(cells), batch, device="cpu")  # scores are gathered on the host
        bar = tqdm(total=len(cells), desc=f"patching {hook}", disable=not progress, unit="cell")
        for i, logits in run_variants(model, run_tokens, edits, batch_size):
            r = reads[i]
            values[i] = _score(metric, Readout(logits[:, r], clean_logits[:, r], corrupt_logits[:, r], r), batch)
            bar.update()
        bar.close()

    shape = tuple(len(coords[d]) for d in dims)
    return PatchResult(
        per_example=values.reshape(*shape, batch),
        clean_baseline=torch.stack([baselines[r][0] for r in reads]).reshape(*shape, batch),
        corrupt_baseline=torch.stack([baselines[r][1] for r in reads]).reshape(*shape, batch),
        dims=dims,
        coords=coords,
        read_positions=torch.tensor(reads, device="cpu").reshape(shape),
        metric=metric.name,
        hook=hook,
        direction=direction,
        labels=_labels(model, clean),
    )


def capture(model: TransformerBridge, tokens: Tensor, names: list[str]) -> tuple[Tensor, dict[str, Tensor]]:
    """Logits of ``tokens`` and the activations at ``names`` (bound by the names asked for, not aliases)."""
    acts: dict[str, Tensor] = {}

    def keep(name: str) -> Any:
        def hook(activation: Tensor, hook: Any) -> None:
            acts[name] = activation.detach().clone()

        return hook

    with model.hooks(fwd_hooks=[(name, keep(name)) for name in dict.fromkeys(names)]):
        logits = model(tokens.to(device_of(model)))
    return logits, acts


def _score(metric: Metric, readout: Readout, batch: int) -> Tensor:
    value = torch.as_tensor(metric(readout), device=readout.logits.device).detach().float().cpu()
    if value.shape != (batch,):
        raise InvalidArgumentError(f"metric {metric.name!r} returned shape {tuple(value.shape)}; "
                                   f"a metric must return one value per example, shape ({batch},)")
    return value


def _check_offset(read_offset: Any, seq: int) -> int | None:
    if read_offset is None:
        return None
    if isinstance(read_offset, bool) or not isinstance(read_offset, int) or not 0 <= read_offset < seq:
        raise OutOfRangeError(f"read_offset={read_offset!r} is out of range; expected an integer in [0, {seq})")
    return read_offset


def _head_count(model: TransformerBridge, hook: str, layer: int) -> int:
    name = hook_name(model, hook, layer)
    if name.rsplit(".", 1)[-1] not in ("hook_z", "hook_q", "hook_k", "hook_v"):
        raise InvalidArgumentError(f"hook={hook!r} has no head axis; patch heads at 'attn.hook_z', 'attn.hook_q', "
                                   "'attn.hook_k' or 'attn.hook_v'")
    if name.endswith(("hook_k", "hook_v")):
        return getattr(model.cfg, "n_key_value_heads", None) or model.cfg.n_heads
    return model.cfg.n_heads


def _labels(model: TransformerBridge, tokens: Int[Tensor, "batch pos"]) -> list[str] | None:
    """The clean token at each position, shared by all examples; ``"(varies)"`` where the examples differ."""
    tokenizer = getattr(model, "tokenizer", None)
    if tokenizer is None:
        return None
    same = (tokens == tokens[:1]).all(0).tolist()
    try:
        return [tokenizer.decode([int(t)]) if shared else VARIES for t, shared in zip(tokens[0], same, strict=True)]
    except Exception:  # noqa: BLE001 - labels are decoration; a tokenizer that cannot decode gives none
        return None
