"""The Future-Lens linear model: ``h_t^ℓ`` → the model's final-layer residual at ``t + N``, decoded by the model.

For every (layer ``ℓ``, offset ``N``) an affine map ``A, c`` predicts ``ĥ = ((h_t^ℓ - μ_ℓ) / σ_ℓ) A + c`` of
the last block's output at position ``t + N`` (the input of the final norm), and the model's own final norm
and unembedding turn ``ĥ`` into logits over the token at ``t + 1 + N``: ``unembed(ln_final(ĥ))``. This is
the "linear model approximation" of Pal et al., *Future Lens* (CoNLL 2023). Its size is ``d × d`` per pair,
independent of the vocabulary, which is what makes it practical on big models where a direct vocabulary
probe is not: ``L·O·d²`` floats for the maps (13 depths × 4 offsets × 768² ≈ 31 M floats for GPT-2 small,
against 2 G for direct full-vocabulary probes).

Fitting has two stages, both for all pairs at once:

1. **least squares**: the ridge solution ``(X̃ᵀX̃ + λnI)⁻¹X̃ᵀ(H - H̄)`` from sufficient statistics (one Gram
   matrix per layer, ``X̃ᵀH`` per pair, float64, accumulated a chunk at a time; :mod:`forethought.probes.gram`)
   and one ``d × d`` solve per pair (``max_epochs=0`` stops here);
2. **fine-tuning** with AdamW on the decoded distribution: the soft cross-entropy (KL up to a constant)
   between the model's own next-token distribution at ``t + N`` and the lens's, with per-probe early
   stopping on held-out data, as in :mod:`forethought.probes.vocabulary`; a pair frozen by early stopping is no
   longer computed.

Features and future residuals may be on-disk :class:`~forethought.probes.feature_store.FeatureStore` files (a
streamed sweep): both stages then read them a chunk or minibatch at a time, and give the same lens.

The model's weights are never changed (gradients are taken with respect to the lens only). A lens can
also be trained on hard labels (:func:`fit_label_lens`), which is how its Hewitt & Liang control task is
scored.

Memory (floats): maps ``L·T·d²`` (four times that to train); a minibatch decodes ``L·T·batch·d_vocab``
logits, so lower ``batch_size`` for big vocabularies.

Example:
    >>> import torch
    >>> from forethought.models import tiny_model
    >>> model = tiny_model(n_layers=1, d_model=16, n_heads=2, d_vocab=20, n_ctx=8)
    >>> h = torch.randn(1, 64, 16)  # the final-layer residual at 64 positions, as the probed "layer"
    >>> lens = fit_future_lens(h, h, model=model, config=FutureLensConfig(ridge=0.0, max_epochs=0, progress=False))
    >>> torch.allclose(lens.vocab_logits(h)[0, 0], decode(model, h[0]), atol=1e-3)  # offset 0 of the last layer
    True
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

from forethought.errors import (
    DataError,
    InvalidArgumentError,
    UnsupportedArchitectureError,
    VocabularyMismatchError,
)
from forethought.probes.early_stopping import MinibatchFitConfig
from forethought.probes.feature_store import FeatureStore
from forethought.probes.gram import GramStats, select_ridge, solve_per_coordinate
from forethought.probes.linear import ModelProbes, Task, feature_stats
from forethought.probes.regression import DEFAULT_ALPHAS
from forethought.probes.stacked import TensorBatches, train_stacked
from forethought.probes.targets import LabelSpace
from forethought.probes.vocabulary import check_features, split_held_out

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge


def decode(model: TransformerBridge, resid: Float[Tensor, "... d_model"]) -> Float[Tensor, "... d_vocab"]:
    """The model's own read-out of a final-layer residual: ``unembed(ln_final(resid))``.

    On a ``TransformerBridge`` this equals the model's logits when ``resid`` is the last block's output
    (``blocks.{n_layers-1}.hook_resid_post``), on every backend. The logits are on the model's device, wherever
    ``resid`` is.
    """
    ln_final, unembed = getattr(model, "ln_final", None), getattr(model, "unembed", None)
    if ln_final is None or unembed is None:
        raise UnsupportedArchitectureError(f"{type(model).__name__} has no ln_final/unembed components to decode "
                                           "residuals with")
    weight = next(model.parameters())  # features may be stored in another dtype (e.g. bfloat16) and place
    return unembed(ln_final(resid.to(weight.device, weight.dtype)))


@dataclass
class FutureLensConfig(MinibatchFitConfig):
    """Fitting settings of the Future-Lens linear model: a least-squares start, then AdamW fine-tuning.

    Attributes:
        ridge: the least-squares penalty per example (``λ`` in ``X̃ᵀX̃ + λnI``, on standardised features).
        max_epochs: fine-tuning epochs at most (0: least squares only).
        device: where to fit (default: the model's device).

    The other fields are those of :class:`~forethought.probes.early_stopping.MinibatchFitConfig`; early
    stopping watches the held-out soft cross-entropy.
    """

    lr: float = 1e-3
    weight_decay: float = 0.0
    batch_size: int = 256
    max_epochs: int = 10
    patience: int = 2
    eval_batch_size: int = 1024
    ridge: float = 1e-3

    min_epochs = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.ridge < 0:
            raise InvalidArgumentError(f"ridge={self.ridge!r} is not allowed; expected >= 0")


class FutureLens(ModelProbes):
    """Affine maps from layer-``ℓ`` states to the final-layer state ``N`` positions later, read out by the model.

    Attributes:
        weight: ``[layer, task, d_model, d_model]`` (applied to standardised features).
        bias: ``[layer, task, d_model]``.
        model: the model whose final norm and unembedding decode the predictions. A reference only: it is not
            a submodule, so its weights are not among the lens's parameters or ``state_dict`` (nor saved), and
            ``lens.to(device)`` moves the maps, not the model.

    The other attributes, and calling the lens as ``lens(h, layer=, offset=)``, are those of
    :class:`~forethought.probes.linear.AffineProbes`.
    """

    kind = "future_lens"

    def _check_shapes(self) -> None:
        n_layers, n_tasks, d_in, d_out = self.weight.shape
        if d_in != d_out or tuple(self.bias.shape) != (n_layers, n_tasks, d_out) or \
                tuple(self.mean.shape) != (n_layers, d_in) or tuple(self.scale.shape) != (n_layers, d_in):
            raise InvalidArgumentError(f"inconsistent lens tensors: weight {tuple(self.weight.shape)}, bias "
                                       f"{tuple(self.bias.shape)}, mean {tuple(self.mean.shape)}")
        super()._check_shapes()
        if self.model is not None:
            check_lens_fits(self.model, d_in, self.label_space.d_vocab)

    def _resid(self, x: Float[Tensor, "layer n d_model"], layers: slice, tasks: slice
               ) -> Float[Tensor, "layer task n d_model"]:
        weight, bias = self.weight[layers, tasks], self.bias[layers, tasks]
        return torch.einsum("lnd,ltde->ltne", x, weight) + bias[:, :, None]

    def _decode(self, resid: Float[Tensor, "... d_model"]) -> Float[Tensor, "... d_vocab"]:
        if self.model is None:
            raise InvalidArgumentError("this lens has no model to decode with; pass model= to load_probes")
        return decode(self.model, resid)

    def _head(self, x: Float[Tensor, "layer n d_model"], layers: slice, tasks: slice
              ) -> Float[Tensor, "layer task n n_classes"]:
        return self.label_space.project_logits(self._decode(self._resid(x, layers, tasks)))

    def predict_resid(self, features: Float[Tensor, "layer n d_model"]) -> Float[Tensor, "layer task n d_model"]:
        """The predicted final-layer residual at ``t + N`` for every (layer, task)."""
        return self._resid(self.standardise(features), slice(None), slice(None))

    def vocab_logits(self, features: Float[Tensor, "layer n d_model"]) -> Float[Tensor, "layer task n d_vocab"]:
        """Logits over the whole vocabulary, decoded by the model's final norm and unembedding."""
        return self._decode(self.predict_resid(features))


def check_lens_fits(model: TransformerBridge, d_model: int, d_vocab: int) -> None:
    """Raise :class:`VocabularyMismatchError` unless the model has this width and vocabulary."""
    if model.cfg.d_model != d_model or model.cfg.d_vocab != d_vocab:
        raise VocabularyMismatchError(f"the probes expect d_model={d_model}, d_vocab={d_vocab}; the model has "
                                      f"d_model={model.cfg.d_model}, d_vocab={model.cfg.d_vocab}")


def least_squares(
    features: Float[Tensor, "layer n d_model"] | FeatureStore,
    targets: Float[Tensor, "task n d_out"] | FeatureStore,
    ridge: float = 1e-3,
    chunk: int | None = None,
    device: torch.device | None = None,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Ridge maps from standardised features of every layer to every target, all pairs at once.

    Accumulates the sufficient statistics (``XᵀX`` per layer, ``XᵀY`` per (layer, target), in float64) chunk by
    chunk from memory or from on-disk stores (:class:`~forethought.probes.gram.GramStats`), then solves
    ``(X̃ᵀX̃ + λnI) A = X̃ᵀ(H - H̄)`` for every pair; ``c = H̄``. Equivalent to scikit-learn's ``Ridge(alpha=λn)``
    on standardised features.

    Returns:
        ``weight [layer, task, d, d]``, ``bias [layer, task, d]``, ``mean [layer, d]``, ``scale [layer, d]``, on
        ``device`` (default: the features').
    """
    stats = GramStats.accumulate(features, targets, chunk, device=device)
    mean, scale = stats.standardisation()
    weight = stats.solve(scale, ridge * stats.n)
    return weight.float(), stats.intercept(weight, mean, scale).float(), mean, scale


def fit_future_lens(
    features: Float[Tensor, "layer n d_model"] | FeatureStore,
    future_resid: Float[Tensor, "offset n d_model"] | FeatureStore,
    *,
    model: TransformerBridge,
    val_features: Float[Tensor, "layer n_val d_model"] | FeatureStore | None = None,
    val_future_resid: Float[Tensor, "offset n_val d_model"] | FeatureStore | None = None,
    config: FutureLensConfig | None = None,
    layers: Sequence[int] | None = None,
    offsets: Sequence[int] | None = None,
    label_space: LabelSpace | None = None,
) -> FutureLens:
    """Fit a Future-Lens linear model for every (layer, offset): least squares, then KL fine-tuning.

    Args:
        model: the model whose ``ln_final`` and ``unembed`` decode the lens (left unchanged).
        features: hidden states ``[layer, n, d_model]`` at positions ``t``, in memory or in an on-disk
            :class:`~forethought.probes.feature_store.FeatureStore` (read a chunk or minibatch at a time; then
            the held-out split must be given); both give the same lens.
        future_resid: the final-layer residual at ``t + N`` for every offset ``[offset, n, d_model]`` (or a store).
        val_features: the held-out features for early stopping (default: ``val_fraction`` of the training
            examples).
        val_future_resid: the held-out final-layer residuals, given with ``val_features``.
        config: fitting settings.
        layers: the layers recorded on the lens (default ``0..L-1``).
        offsets: the offsets recorded on the lens (default ``0..O-1``).
        label_space: the classes the lens's logits are projected to (default: the whole vocabulary).
    """
    config = config or FutureLensConfig()
    device = _device(model, config)
    _check_resid(features, future_resid, model)
    tasks = [Task(offset) for offset in (offsets if offsets is not None else range(future_resid.shape[0]))]
    if (val_features is None) != (val_future_resid is None):
        raise InvalidArgumentError("pass both val_features and val_future_resid, or neither")
    if config.max_epochs > 0:
        features, future_resid, val_features, val_future_resid = split_held_out(
            features, future_resid, val_features, val_future_resid, config)
    features, future_resid = _on(features, device), _on(future_resid, device)
    weight, bias, mean, scale = least_squares(features, future_resid, config.ridge, device=device)
    lens = FutureLens(weight=weight, bias=bias, mean=mean, scale=scale,
                      layers=list(layers) if layers is not None else list(range(features.shape[0])),
                      tasks=tasks, label_space=label_space or LabelSpace.full(model.cfg.d_vocab),
                      meta={"method": "future_lens", "config": asdict(config)}, model=model)
    if config.max_epochs == 0:
        return lens
    _check_resid(val_features, val_future_resid, model, "held-out")

    def soft_cross_entropy(predicted: Tensor, future: Tensor, blocks: list[tuple[int, slice]]) -> Tensor:
        with torch.no_grad():
            target = F.softmax(decode(model, future).float(), dim=-1)  # [T, n, V]
        log_q = F.log_softmax(decode(model, predicted).float(), dim=-1)  # [P, n, V]
        # each task's pairs are one slice, so its target is broadcast, not copied
        return -torch.cat([(log_q[block] * target[task]).sum(-1).sum(-1) for task, block in blocks])  # [P]

    _fine_tune(lens, TensorBatches(features, future_resid, axis=1, device=device),
               TensorBatches(_on(val_features, device), _on(val_future_resid, device), axis=1, device=device),
               soft_cross_entropy, config)
    return lens


def fit_label_lens(
    features: Float[Tensor, "layer n d_model"] | FeatureStore,
    labels: Int[Tensor, "task n"],
    *,
    model: TransformerBridge,
    label_space: LabelSpace,
    tasks: Sequence[Task],
    init_resid: Float[Tensor, " d_model"],
    val_features: Float[Tensor, "layer n_val d_model"] | FeatureStore | None = None,
    val_labels: Int[Tensor, "task n_val"] | None = None,
    config: FutureLensConfig | None = None,
    layers: Sequence[int] | None = None,
) -> FutureLens:
    """Train a lens on hard class labels (cross-entropy of its projected logits), e.g. a control task.

    The maps start at ``A = 0`` and ``c = init_resid``, a constant prediction; pass the training split's mean
    final-layer residual (the origin is a poor start: the final norm's gradient blows up there). The features
    may be on disk, as for :func:`fit_future_lens`.
    """
    config = config or FutureLensConfig()
    device = _device(model, config)
    check_features(features, labels)
    n_layers, _, d_model = features.shape
    features, labels, val_features, val_labels = split_held_out(features, labels, val_features, val_labels, config)
    check_features(val_features, val_labels, "held-out")
    mean, scale = feature_stats(features)
    lens = FutureLens(weight=torch.zeros(n_layers, len(tasks), d_model, d_model, device=device),
                      bias=init_resid.to(device).float().expand(n_layers, len(tasks), d_model).contiguous(),
                      mean=mean.to(device), scale=scale.to(device),
                      layers=list(layers) if layers is not None else list(range(n_layers)), tasks=list(tasks),
                      label_space=label_space, meta={"method": "future_lens", "config": asdict(config)}, model=model)

    def label_cross_entropy(predicted: Tensor, labels: Tensor, blocks: list[tuple[int, slice]]) -> Tensor:
        target = torch.cat([labels[task].expand(block.stop - block.start, -1) for task, block in blocks])  # [P, n]
        return label_space.nll(decode(model, predicted).float(), target).sum(-1)

    _fine_tune(lens, TensorBatches(_on(features, device), labels.to(device).long(), axis=1, device=device),
               TensorBatches(_on(val_features, device), val_labels.to(device).long(), axis=1, device=device),
               label_cross_entropy, config)
    return lens


#: ``loss(predicted [pair, n, d], targets [task, n, ...], blocks) -> [pair]``: each active pair's summed loss; the
#: pairs come task by task, ``blocks`` lists each task with its slice of pairs.
PairLoss = Callable[[Tensor, Tensor, list[tuple[int, slice]]], Tensor]


def _fine_tune(lens: FutureLens, train: TensorBatches, val: TensorBatches, loss_fn: PairLoss,
               config: FutureLensConfig) -> None:
    """Fine-tune the lens maps by :func:`~forethought.probes.stacked.train_stacked`; the lens keeps every best epoch.

    ``train`` and ``val`` hold layer-major features ``[layer, n, d]`` and targets ``[task, n, ...]``. Only the
    (layer, task) pairs still active are computed: once early stopping freezes a pair (its best epoch is kept, it
    can no longer improve, and every pair's loss and update depend on its own maps only), it is skipped.
    """
    weight = lens.weight.detach().clone().requires_grad_(True)
    bias = lens.bias.detach().clone().requires_grad_(True)
    mean, scale = lens.mean[:, None], lens.scale[:, None]
    n_layers, n_tasks = weight.shape[:2]

    def pairs(active: Tensor) -> tuple[Tensor, Tensor, list[tuple[int, slice]]]:
        """The active pairs' layers and tasks, task by task, and each task's slice of them."""
        task, layer = active.T.nonzero(as_tuple=True)
        counts = active.sum(0).tolist()
        starts = [sum(counts[:t]) for t in range(n_tasks)]
        return layer, task, [(t, slice(starts[t], starts[t] + c)) for t, c in enumerate(counts) if c]

    active = pairs(torch.ones(n_layers, n_tasks, dtype=torch.bool, device=weight.device))

    def loss(features: Tensor, targets: Tensor) -> Tensor:
        layer, task, blocks = active
        x = ((features.float() - mean) / scale).index_select(0, layer)  # [P, n, d]
        predicted = torch.baddbmm(bias[layer, task][:, None], x, weight[layer, task])  # [P, n, d]
        per_pair = loss_fn(predicted, targets, blocks)
        return per_pair.new_zeros(n_layers, n_tasks).index_put((layer, task), per_pair)

    def skip_frozen(still_active: Tensor) -> None:
        nonlocal active
        active = pairs(still_active)

    fitted = train_stacked([(weight, config.weight_decay), (bias, 0.0)], loss, train, val, config,
                           desc="future lens", on_freeze=skip_frozen,
                           masks=[lambda improved: improved[:, :, None, None], lambda improved: improved[:, :, None]])
    with torch.no_grad():
        lens.weight.copy_(fitted.best[0])
        lens.bias.copy_(fitted.best[1])
    lens.meta.update(epochs=fitted.stopper.epochs, best_epoch=fitted.stopper.best_epoch.tolist())


def _on(data: Tensor | FeatureStore, device: torch.device) -> Tensor | FeatureStore:
    """In-memory examples moved to ``device`` once; an on-disk store stays where it is (read piece by piece)."""
    return data if isinstance(data, FeatureStore) else data.to(device)


def _device(model: TransformerBridge, config: FutureLensConfig) -> torch.device:
    return torch.device(config.device) if config.device is not None else next(model.parameters()).device


def _check_resid(features: Tensor | FeatureStore, resid: Tensor | FeatureStore, model: TransformerBridge,
                 what: str = "training") -> None:
    if features.ndim != 3 or resid.ndim != 3 or features.shape[1] != resid.shape[1]:
        raise InvalidArgumentError(f"expected {what} features [layer, n, d] and future residuals [offset, n, d] "
                                   f"over the same examples; got {tuple(features.shape)} and {tuple(resid.shape)}")
    if features.shape[1] == 0:
        raise DataError(f"the {what} split is empty; the lens needs at least one example")
    check_lens_fits(model, features.shape[2], model.cfg.d_vocab)
    if resid.shape[2] != model.cfg.d_model:
        raise VocabularyMismatchError(f"future residuals have width {resid.shape[2]}; the model's d_model is "
                                      f"{model.cfg.d_model}")


def fit_ridge_lens(
    features: Float[Tensor, "layer n d_model"] | FeatureStore,
    future_resid: Float[Tensor, "offset n d_model"] | FeatureStore,
    *,
    model: TransformerBridge,
    val_features: Float[Tensor, "layer n_val d_model"] | FeatureStore | None = None,
    val_future_resid: Float[Tensor, "offset n_val d_model"] | FeatureStore | None = None,
    groups: Int[Tensor, " n"] | None = None,
    alphas: Sequence[float] = DEFAULT_ALPHAS,
    layers: Sequence[int] | None = None,
    offsets: Sequence[int] | None = None,
    label_space: LabelSpace | None = None,
    val_fraction: float = 0.2,
    seed: int = 0,
    chunk: int | None = None,
) -> FutureLens:
    """The least-squares lens with a ridge penalty per coordinate of the future residual, chosen by held-out R².

    For every (layer, offset) and every coordinate of the future residual, each penalty of ``alphas`` (on the
    summed squares of standardised features, scikit-learn's ``Ridge(alpha=)``) is fitted on the training examples
    and scored by R² on the held-out ones; the best is refitted on both. Everything comes from the sufficient
    statistics of the two splits (:mod:`forethought.probes.gram`), accumulated a chunk at a time from memory or
    from on-disk stores: :func:`~forethought.probes.regression.fit_ridge_probe` per pair and coordinate, without
    its test split, at the cost of one pass over the examples. The held-out R² of the chosen penalties, averaged
    over coordinates, is ``meta["ridge_r2"]`` ``[layer][offset]``.

    Without ``val_features``, a seeded ``val_fraction`` of the examples is held out (of whole ``groups``, e.g.
    sequence ids, when given).
    """
    _check_resid(features, future_resid, model)
    if (val_features is None) != (val_future_resid is None):
        raise InvalidArgumentError("pass both val_features and val_future_resid, or neither")
    if not all(alpha > 0 for alpha in alphas) or not alphas:
        raise InvalidArgumentError(f"alphas={list(alphas)!r} is not allowed; expected positive penalties")
    if val_features is None:
        train, held_out = _held_out_rows(features.shape[1], groups, val_fraction, seed)
        features, future_resid, val_features, val_future_resid = (
            features[:, train], future_resid[:, train], features[:, held_out], future_resid[:, held_out])
    _check_resid(val_features, val_future_resid, model, "held-out")
    device = next(model.parameters()).device
    fit = GramStats.accumulate(features, future_resid, chunk, device=device)
    val = GramStats.accumulate(val_features, val_future_resid, chunk, device=device, like=fit)
    alpha, r2 = select_ridge(fit, val, torch.tensor(list(alphas), dtype=torch.float64, device=device))
    weight, bias, mean, scale = solve_per_coordinate(fit + val, alpha)
    n_layers, n_offsets = weight.shape[:2]
    return FutureLens(weight=weight.float(), bias=bias.float(), mean=mean, scale=scale,
                      layers=list(layers) if layers is not None else list(range(n_layers)),
                      tasks=[Task(o) for o in (offsets if offsets is not None else range(n_offsets))],
                      label_space=label_space or LabelSpace.full(model.cfg.d_vocab),
                      meta={"method": "ridge", "seed": seed, "ridge_r2": r2.mean(-1).tolist(),
                            "alpha_median": alpha.median(-1).values.tolist()}, model=model)


def _held_out_rows(n: int, groups: Tensor | None, fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """Indices of the training and held-out examples: a seeded ``fraction`` of the groups (or examples) held out."""
    labels = groups.cpu() if groups is not None else torch.arange(n, device="cpu")
    unique, inverse = torch.unique(labels, return_inverse=True)
    if len(unique) < 2:
        raise DataError(f"{len(unique)} group(s) cannot be split into training and held-out parts; need at least 2")
    order = torch.randperm(len(unique), generator=torch.Generator(device="cpu").manual_seed(seed), device="cpu")
    held = torch.zeros(len(unique), dtype=torch.bool, device="cpu")
    held[order[: min(max(1, round(fraction * len(unique))), len(unique) - 1)]] = True
    mask = held[inverse]
    return (~mask).nonzero().flatten(), mask.nonzero().flatten()
