"""The gradient split: how much of a model's training signal is pre-caching?

For a model and a batch, the vanilla gradient ``g = ∇L`` (``L = Σ_t ℓ_t``) splits exactly into

* the **myopic gradient** ``g_m``, computed under :func:`~forethought.myopic_training.myopic` (what reaches the
  loss at ``t`` through position ``t``'s own computation), and
* the **pre-caching gradient** ``g_p = g − g_m``: what reaches a position's computation only from the losses of
  *later* positions.

Per parameter group (``embed``, ``blocks.{l}.attn.W_Q`` / ``W_K`` / ``W_V`` / ``W_O``, ``blocks.{l}.mlp``,
``blocks.{l}.ln``, ``unembed``; see :func:`parameter_groups`) and in ``total``, :func:`gradient_split` reports

* ``precaching_share = ⟨g_p, g⟩ / ‖g‖²``: the fraction of the first-order loss decrease of a gradient step
  ``−η g`` that is due to pre-caching (the myopic part gives the rest, ``⟨g_m, g⟩ / ‖g‖² = 1 − share``);
* ``norm_ratio = ‖g_p‖ / ‖g‖``;
* ``cos_precaching_myopic = cos(g_p, g_m)`` (NaN where ``g_p`` or ``g_m`` is zero).

These are computed on the **expected gradient**: ``g`` and ``g_m`` are accumulated (averaged) over all batches
before any ratio is taken. The same quantities for each batch alone are kept in :attr:`GradientSplit.per_batch`
and summarised as a spread (mean, standard deviation, min, max over batches) in :meth:`GradientSplit.to_frame`.
A per-batch share is noisier, and on average not equal to the share of the expected gradient.

Gradients are returned in float64, so ``g_m + g_p == g`` holds exactly. The model is run in eval mode (myopic
gradients need attention dropout off) and its ``.grad`` fields are left untouched. Memory: float64 copies of the
accumulated ``g`` and of each mode's ``g_m``, plus one batch's ``g`` and ``g_m``: about
``8 × n_params × (3 + modes)`` bytes.

Example:
    >>> import torch
    >>> from forethought.models import tiny_model
    >>> model = tiny_model(n_layers=2, d_model=16, n_heads=2, d_vocab=20, n_ctx=8)
    >>> tokens = torch.randint(0, 20, (8, 8), generator=torch.Generator().manual_seed(0))
    >>> split = gradient_split(model, tokens, batch_size=4)
    >>> split.n_batches, sorted(split.modes)
    (2, ['cutgrad', 'strict'])
    >>> frame = split.to_frame()
    >>> bool(frame.query("group == 'unembed'")["precaching_share"].abs().max() < 1e-6)  # W_U acts per position
    True
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pandas as pd
import torch
from jaxtyping import Int
from torch import Tensor
from tqdm.auto import tqdm

from forethought.errors import InvalidArgumentError, check_choice, check_positive
from forethought.myopic_training.gradient_split_results import (  # noqa: F401 - re-exported
    TOTAL,
    GradientSplit,
    plot_gradient_split,
    plot_gradient_split_over_training,
    split_history,
)
from forethought.myopic_training.hooks import MODES, myopic

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

#: Attention projections, as named by ``TransformerBridge`` (``blocks.{l}.attn.q`` ...), and their group names.
PROJECTIONS = {"q": "W_Q", "k": "W_K", "v": "W_V", "o": "W_O"}
#: Metrics computed for every group, mode and batch.
METRICS = ("precaching_share", "norm_ratio", "cos_precaching_myopic")

LossFunction = Callable[[Any, Any], Tensor]


def lm_loss(model: TransformerBridge, tokens: Int[Tensor, "batch pos"]) -> Tensor:
    """The model's own mean next-token cross-entropy (``model(tokens, return_type="loss")``)."""
    return model(tokens, return_type="loss")


def parameter_groups(model: torch.nn.Module, bridge: TransformerBridge | None = None
                     ) -> dict[str, list[tuple[str, torch.nn.Parameter]]]:
    """Trainable parameters of ``model`` by group, read from the ``TransformerBridge`` component tree.

    Groups, in model order: ``embed`` (token and positional embeddings), per layer ``blocks.{l}.attn.W_Q``,
    ``W_K``, ``W_V``, ``W_O`` (each projection's weight and bias), ``blocks.{l}.attn`` (anything else in the
    attention module, e.g. a fused qkv weight), ``blocks.{l}.mlp``, ``blocks.{l}.ln`` (the block's norms and
    whatever else it holds), ``unembed`` (final norm and unembedding), then ``other`` for bridge parameters outside
    these, and one group per top-level module of ``model`` outside the bridge (e.g. ``input_map`` of a
    :class:`~forethought.synthetic.model.RegressionTransformer`). The component names are the bridge's, so the
    groups are the same on ``boot_native``, GPT-2, GPT-NeoX and Llama backends. A tied parameter (GPT-2's
    embedding and unembedding) belongs to the first group that holds it.

    Args:
        model: the module whose parameters are trained: a ``TransformerBridge``, or a module holding one.
        bridge: the ``TransformerBridge`` inside ``model``; default ``model.bridge`` if it exists, else ``model``.

    Example:
        >>> from forethought.models import tiny_model
        >>> model = tiny_model(n_layers=1, d_model=16, n_heads=2, d_vocab=20, n_ctx=8)
        >>> list(parameter_groups(model))  # doctest: +NORMALIZE_WHITESPACE
        ['embed', 'blocks.0.attn.W_Q', 'blocks.0.attn.W_K', 'blocks.0.attn.W_V', 'blocks.0.attn.W_O',
         'blocks.0.mlp', 'blocks.0.ln', 'unembed']
    """
    bridge = _bridge(model, bridge)
    components: list[tuple[str, Any]] = [("embed", getattr(bridge, "embed", None)),
                                         ("embed", getattr(bridge, "pos_embed", None))]
    for layer, block in enumerate(bridge.blocks):
        attn = getattr(block, "attn", None)
        for short, group in PROJECTIONS.items():
            components.append((f"blocks.{layer}.attn.{group}", getattr(attn, short, None)))
        components += [(f"blocks.{layer}.attn", attn), (f"blocks.{layer}.mlp", getattr(block, "mlp", None)),
                       (f"blocks.{layer}.ln", block)]
    components += [("unembed", getattr(bridge, "ln_final", None)), ("unembed", getattr(bridge, "unembed", None)),
                   ("other", bridge)]
    group_of: dict[int, str] = {}
    for group, module in components:
        if isinstance(module, torch.nn.Module):
            for parameter in module.parameters():
                group_of.setdefault(id(parameter), group)
    groups: dict[str, list[tuple[str, torch.nn.Parameter]]] = {group: [] for group, _ in components}
    seen: set[int] = set()
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad or id(parameter) in seen:
            continue
        seen.add(id(parameter))
        groups.setdefault(group_of.get(id(parameter), name.split(".")[0]), []).append((name, parameter))
    return {group: members for group, members in groups.items() if members}


@dataclass
class GradientParts:
    """The vanilla and myopic gradients of one batch (or their sums), per parameter name, in float64."""

    vanilla: dict[str, Tensor]
    myopic: dict[str, Tensor]

    @property
    def precaching(self) -> dict[str, Tensor]:
        """``g_p = g − g_m`` per parameter."""
        return {name: self.vanilla[name] - self.myopic[name] for name in self.vanilla}


def split_gradient(model: torch.nn.Module, batch: Any, loss_fn: LossFunction = lm_loss, mode: str = "strict",
                   bridge: TransformerBridge | None = None) -> GradientParts:
    """The vanilla and the myopic gradient of ``loss_fn(model, batch)`` (``g_p`` is their difference).

    Example:
        >>> import torch
        >>> from forethought.models import tiny_model
        >>> model = tiny_model(n_layers=1, d_model=16, n_heads=2, d_vocab=20, n_ctx=8)
        >>> parts = split_gradient(model, torch.randint(0, 20, (2, 8)))
        >>> all(torch.equal(parts.myopic[n] + parts.precaching[n], parts.vanilla[n]) for n in parts.vanilla)
        True
    """
    _check_mode(mode)
    named = [(name, p) for members in parameter_groups(model, bridge).values() for name, p in members]
    with _eval_mode(model):
        vanilla, loss = _gradients(model, named, batch, loss_fn)
        with myopic(_bridge(model, bridge), mode=mode):
            myopic_grads, myopic_loss = _gradients(model, named, batch, loss_fn)
    _check_same_loss(loss, myopic_loss)
    return GradientParts(_fill(vanilla, named), _fill(myopic_grads, named))


def gradient_split(
    model: torch.nn.Module,
    batches: Iterable[Any] | Tensor,
    loss_fn: LossFunction = lm_loss,
    modes: Sequence[str] | str = MODES,
    bridge: TransformerBridge | None = None,
    batch_size: int = 32,
    progress: bool = False,
) -> GradientSplit:
    """Split the gradient of ``loss_fn`` into its myopic and pre-caching parts, per parameter group.

    Each batch costs one forward and backward pass for ``g`` and one more per mode for ``g_m``.

    Args:
        model: the module whose parameters are split: a ``TransformerBridge``, or a module that holds one (a
            :class:`~forethought.synthetic.model.RegressionTransformer`).
        batches: a token tensor ``[n, pos]`` (cut into batches of ``batch_size`` and moved to the model's device)
            or any iterable of batches, each passed as it is to ``loss_fn``.
        loss_fn: ``loss_fn(model, batch) -> scalar``, deterministic; default :func:`lm_loss`, the model's own LM
            loss. For the synthetic task, e.g. ``lambda m, b: F.huber_loss(m(b.inputs), b.targets)``.
        modes: ``"strict"`` and/or ``"cutgrad"`` (see :func:`~forethought.myopic_training.myopic`).
        bridge: the ``TransformerBridge`` the myopic hooks go on; default ``model.bridge`` or ``model``.
        batch_size: sequences per batch when ``batches`` is a tensor.
        progress: show a progress bar over batches.

    Returns:
        A :class:`GradientSplit`.

    Raises:
        InvalidArgumentError: an unknown mode, no batches, or a ``loss_fn`` that is not deterministic.
        UnsupportedArchitectureError: the model's attention cannot be made myopic exactly.
    """
    modes = (modes,) if isinstance(modes, str) else tuple(modes)
    if not modes:
        raise InvalidArgumentError(f"modes is empty; choose one or more of {MODES}")
    for mode in modes:
        _check_mode(mode)
    groups = parameter_groups(model, bridge)
    named = [(name, p) for members in groups.values() for name, p in members]
    batches = _batches(model, batches, batch_size)
    target = _bridge(model, bridge)

    sums: dict[str, dict[str, Tensor]] = {}
    used: set[str] = set()
    per_batch, losses = [], []
    with _eval_mode(model):
        for index, batch in enumerate(tqdm(batches, desc="gradient split", disable=not progress, leave=False)):
            vanilla, loss = _gradients(model, named, batch, loss_fn)
            used.update(vanilla)
            losses.append(loss.item())
            g = _fill(vanilla, named)
            _accumulate(sums, "vanilla", g)
            for mode in modes:
                with myopic(target, mode=mode):
                    myopic_grads, myopic_loss = _gradients(model, named, batch, loss_fn)
                _check_same_loss(loss, myopic_loss)
                used.update(myopic_grads)
                g_m = _fill(myopic_grads, named)
                _accumulate(sums, mode, g_m)
                per_batch += [{"batch": index, **row} for row in _group_metrics(groups, g, g_m, mode)]
    if not losses:
        raise InvalidArgumentError("batches is empty; pass at least one batch")
    groups = {group: [(n, p) for n, p in members if n in used] for group, members in groups.items()}
    groups = {group: members for group, members in groups.items() if members}
    rows = [row for mode in modes for row in _group_metrics(groups, sums["vanilla"], sums[mode], mode)]
    kept = {*groups, TOTAL}
    frame = pd.DataFrame(per_batch)
    frame = frame[frame["group"].isin(kept)].reset_index(drop=True)
    return GradientSplit(rows=rows, per_batch=frame, n_batches=len(losses), modes=modes,
                         mean_loss=sum(losses) / len(losses), groups=[*groups, TOTAL])


# -- helpers ------------------------------------------------------------------------------------------------------


def _bridge(model: torch.nn.Module, bridge: TransformerBridge | None) -> TransformerBridge:
    if bridge is not None:
        return bridge
    return getattr(model, "bridge", model)


def _check_mode(mode: str) -> None:
    check_choice("mode", mode, MODES)


def _batches(model: torch.nn.Module, batches: Iterable[Any] | Tensor, batch_size: int) -> Iterable[Any]:
    if not isinstance(batches, Tensor):
        return batches
    check_positive("batch_size", batch_size, integer=True)
    device = next(model.parameters()).device
    return [batches[start : start + batch_size].to(device) for start in range(0, len(batches), batch_size)]


@contextmanager
def _eval_mode(model: torch.nn.Module) -> Iterator[None]:
    """Put ``model`` in eval mode inside the block and restore its mode afterwards."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def _gradients(model: torch.nn.Module, named: list[tuple[str, torch.nn.Parameter]], batch: Any,
               loss_fn: LossFunction) -> tuple[dict[str, Tensor], Tensor]:
    """Gradients of ``loss_fn(model, batch)`` for the parameters that receive one, without touching ``.grad``."""
    loss = loss_fn(model, batch)
    if not isinstance(loss, Tensor) or loss.ndim != 0:
        raise InvalidArgumentError(f"loss_fn must return a scalar tensor; got {type(loss).__name__} "
                                   f"{tuple(loss.shape) if isinstance(loss, Tensor) else ''}".rstrip())
    grads = torch.autograd.grad(loss, [p for _, p in named], allow_unused=True)
    return ({name: grad.detach().double() for (name, _), grad in zip(named, grads, strict=True)
             if grad is not None}, loss.detach())


def _fill(grads: dict[str, Tensor], named: list[tuple[str, torch.nn.Parameter]]) -> dict[str, Tensor]:
    """Every parameter's gradient, zero where it received none."""
    return {name: grads[name] if name in grads else torch.zeros_like(p, dtype=torch.float64) for name, p in named}


def _check_same_loss(vanilla: Tensor, myopic_loss: Tensor) -> None:
    # Myopic forward values are the vanilla ones bit for bit; the tolerance only absorbs nondeterministic kernels.
    if not torch.allclose(vanilla.float(), myopic_loss.float(), rtol=1e-5, atol=1e-7):
        raise InvalidArgumentError(
            f"loss_fn gave {vanilla.item()!r} and then {myopic_loss.item()!r} on the same batch; the gradient split "
            "needs a deterministic loss (no dropout, no sampling inside loss_fn)"
        )


def _accumulate(sums: dict[str, dict[str, Tensor]], key: str, grads: dict[str, Tensor]) -> None:
    if key not in sums:
        sums[key] = {name: grad.clone() for name, grad in grads.items()}
    else:
        for name, grad in grads.items():
            sums[key][name] += grad


def _group_metrics(groups: dict[str, list[tuple[str, Any]]], g: dict[str, Tensor], g_m: dict[str, Tensor],
                   mode: str) -> list[dict[str, Any]]:
    """The metrics of every group and of the total, from the per-parameter gradients ``g`` and ``g_m``."""
    rows, totals = [], torch.zeros(5, dtype=torch.float64, device="cpu")
    for group, members in groups.items():
        sums = torch.zeros(5, dtype=torch.float64, device="cpu")
        for name, _ in members:
            vanilla, myopic_grad = g[name].flatten(), g_m[name].flatten()
            precaching = vanilla - myopic_grad
            sums += torch.stack([vanilla @ vanilla, myopic_grad @ myopic_grad, precaching @ precaching,
                                 precaching @ vanilla, precaching @ myopic_grad]).cpu()
        totals += sums
        rows.append(_metrics_row(group, mode, sums, sum(p.numel() for _, p in members)))
    rows.append(_metrics_row(TOTAL, mode, totals, sum(row["n_params"] for row in rows)))
    return rows


def _metrics_row(group: str, mode: str, sums: Tensor, n_params: int) -> dict[str, Any]:
    gg, mm, pp, pg, pm = sums.tolist()
    layer, component = _layer_and_component(group)
    return {
        "group": group, "layer": layer, "component": component, "mode": mode,
        "precaching_share": pg / gg if gg > 0 else math.nan,
        "norm_ratio": math.sqrt(pp / gg) if gg > 0 else math.nan,
        "cos_precaching_myopic": pm / math.sqrt(pp * mm) if pp > 0 and mm > 0 else math.nan,
        "grad_norm": math.sqrt(gg), "myopic_norm": math.sqrt(mm), "precaching_norm": math.sqrt(pp),
        "n_params": n_params,
    }


def _layer_and_component(group: str) -> tuple[int | None, str]:
    parts = group.split(".")
    if parts[0] == "blocks" and len(parts) >= 3 and parts[1].isdigit():
        return int(parts[1]), parts[-1]
    return None, group
