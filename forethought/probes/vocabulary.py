"""Direct vocabulary probes: every (layer, task) pair trained at once with minibatch AdamW.

The probes of all layers and tasks form one weight ``[layer, d_model, task · n_classes]``; a minibatch of
standardised features ``[layer, batch, d_model]`` is scored with one batched matmul, and the loss is the sum
over probes of each probe's mean cross-entropy. Each probe's gradient depends on its own loss only and
AdamW updates every parameter on its own, so training the stack is training every probe separately with
the same minibatch order, just faster. Every probe starts at the unigram prediction (zero weights, biases at
the smoothed log label frequencies). Early stopping is per probe: after every epoch each probe's held-out
loss is checked, its best weights are kept (the unigram start counts as epoch 0), and a probe that has not
improved for ``patience`` epochs is frozen at its best; training ends when every probe is frozen or after
``max_epochs``.

Memory (floats): weights ``L·T·d·C``, plus as much again for the gradient and twice for the AdamW moments;
a minibatch makes ``L·T·batch·C`` logits (and their gradient). ``L`` layers, ``T`` tasks (offsets, plus as
many controls), ``d`` = d_model, ``C`` classes (``d_vocab``, or ``k + 1`` with a top-k label space). The
features are standardised once into an example-major copy ``[n, layer, d]`` in their stored dtype on the
device (so a minibatch is a gather of whole rows) and cast to float32 one minibatch at a time.

Example:
    >>> import torch
    >>> x = torch.randn(2, 600, 8, generator=torch.Generator().manual_seed(0))  # [layer, n, d_model]
    >>> y = (x[1, :, 0] > 0).long()[None]  # one task, readable from layer 1 only
    >>> probes = fit_vocab_probes(x, y, n_classes=2, config=VocabProbeConfig(progress=False))
    >>> accuracy = (probes.predict(x)[:, 0] == y).float().mean(-1)
    >>> bool(accuracy[1] > 0.9 and accuracy[0] < 0.7)
    True
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

from forethought.errors import DataError, InvalidArgumentError
from forethought.probes.early_stopping import MinibatchFitConfig, PerProbeEarlyStopping
from forethought.probes.feature_store import FeatureStore
from forethought.probes.linear import LinearProbes, Task, feature_stats
from forethought.probes.stacked import train_stacked
from forethought.probes.targets import LabelSpace


@dataclass
class VocabProbeConfig(MinibatchFitConfig):
    """Training settings of the batched probe trainer (the fields of :class:`MinibatchFitConfig`)."""


def check_features(features: Tensor, labels: Tensor, what: str = "training") -> None:
    """Raise unless ``features [layer, n, d]`` and ``labels [task, n]`` describe the same non-empty examples."""
    if features.ndim != 3 or labels.ndim != 2:
        raise InvalidArgumentError(f"expected {what} features [layer, n, d_model] and labels [task, n]; got "
                                   f"{tuple(features.shape)} and {tuple(labels.shape)}")
    if features.shape[1] != labels.shape[1]:
        raise InvalidArgumentError(f"{what} features hold {features.shape[1]} examples but labels hold "
                                   f"{labels.shape[1]}")
    if features.shape[1] == 0:
        raise DataError(f"the {what} split is empty; probes need at least one example")


def probe_axes(
    features: Tensor,
    labels: Tensor,
    n_classes: int | None,
    label_space: LabelSpace | None,
    layers: Sequence[int] | None,
    tasks: Sequence[Task] | None,
) -> tuple[LabelSpace, list[int], list[Task]]:
    """Check a probe trainer's inputs and fill in its defaults: the label space, layers ``0..L-1``, offsets."""
    check_features(features, labels)
    if n_classes is None:
        n_classes = label_space.n_classes if label_space is not None else int(labels.max()) + 1
    label_space = label_space or LabelSpace.full(n_classes)
    if label_space.n_classes != n_classes:
        raise InvalidArgumentError(f"n_classes={n_classes} disagrees with the label space's {label_space.n_classes}")
    if int(labels.min()) < 0 or int(labels.max()) >= n_classes:
        raise InvalidArgumentError(f"labels must lie in [0, {n_classes}); got [{int(labels.min())}, "
                                   f"{int(labels.max())}]")
    layers = list(layers) if layers is not None else list(range(features.shape[0]))
    tasks = list(tasks) if tasks is not None else [Task(i) for i in range(labels.shape[0])]
    return label_space, layers, tasks


def split_held_out(
    features: Tensor | FeatureStore,
    targets: Tensor | FeatureStore,
    val_features: Tensor | FeatureStore | None,
    val_targets: Tensor | FeatureStore | None,
    config: MinibatchFitConfig,
) -> tuple[Any, Any, Any, Any]:
    """``(features, targets, val_features, val_targets)``, with the held-out split given or split off.

    The held-out split is the one given, else a seeded ``config.val_fraction`` of the training examples (axis 1
    of both tensors); both parts are non-empty.
    """
    if val_features is not None and val_targets is not None:
        return features, targets, val_features, val_targets
    if isinstance(features, FeatureStore) or isinstance(targets, FeatureStore):
        raise InvalidArgumentError("examples on disk (a FeatureStore) need an explicit held-out split; pass the "
                                   "held-out features and targets too")
    n = features.shape[1]
    if n < 2:
        raise DataError(f"{n} example(s) cannot be split into training and held-out parts; need at least 2")
    order = torch.randperm(n, generator=torch.Generator(device="cpu").manual_seed(config.seed), device="cpu")
    n_val = min(max(1, round(config.val_fraction * n)), n - 1)
    train, held_out = order[n_val:], order[:n_val]
    return features[:, train], targets[:, train], features[:, held_out], targets[:, held_out]


def fit_vocab_probes(
    features: Float[Tensor, "layer n d_model"] | FeatureStore,
    labels: Int[Tensor, "task n"],
    *,
    n_classes: int | None = None,
    val_features: Float[Tensor, "layer n_val d_model"] | FeatureStore | None = None,
    val_labels: Int[Tensor, "task n_val"] | None = None,
    config: VocabProbeConfig | None = None,
    layers: Sequence[int] | None = None,
    tasks: Sequence[Task] | None = None,
    label_space: LabelSpace | None = None,
) -> LinearProbes:
    """Train one softmax-regression probe per (layer, task) pair, all at once.

    Args:
        features: hidden states ``[layer, n, d_model]`` (any float dtype; kept as they are), or a
            :class:`~forethought.probes.feature_store.FeatureStore` on disk, read a minibatch at a time (then
            ``val_features`` must be given); both give the same probes.
        labels: class labels ``[task, n]``; every layer learns every task.
        n_classes: the number of classes (default: ``label_space.n_classes``, else ``labels.max() + 1``).
        val_features: the held-out features for early stopping; without them ``val_fraction`` of the
            training examples is held out.
        val_labels: the held-out labels ``[task, n_val]``, given with ``val_features``.
        config: training settings.
        layers: the layers recorded on the returned probes (default ``0..L-1``).
        tasks: the tasks recorded on the returned probes (default offsets ``0..T-1``).
        label_space: the label space recorded on the returned probes (default the whole label range).

    Returns:
        :class:`LinearProbes` holding, for each probe, the weights of its best held-out epoch.
    """
    config = config or VocabProbeConfig()
    label_space, layers, tasks = probe_axes(features, labels, n_classes, label_space, layers, tasks)
    n_classes = label_space.n_classes
    n_layers, _, d_model = features.shape
    stored_on = features.device if isinstance(features, Tensor) else torch.device("cpu")
    device = torch.device(config.device) if config.device is not None else stored_on

    features, labels, val_features, val_labels = split_held_out(features, labels, val_features, val_labels, config)
    check_features(val_features, val_labels, "held-out")

    mean, scale = feature_stats(features)
    y = labels.T.contiguous().to(device).long()
    trainer = _StackedSoftmax(n_layers, d_model, n_classes, y, config)
    trainer.fit(_rows(features, mean, scale, device), y, _rows(val_features, mean, scale, device),
                val_labels.T.contiguous().to(device).long())
    weight, bias = trainer.best_weights()
    meta = {"method": "vocab", "config": asdict(config), "epochs": trainer.stopper.epochs,
            "best_epoch": trainer.stopper.best_epoch.tolist()}
    return LinearProbes(weight=weight, bias=bias, mean=mean, scale=scale, layers=layers, tasks=tasks,
                        label_space=label_space, meta=meta)


def _standardised(part: Tensor, mean: Tensor, scale: Tensor, device: torch.device) -> Tensor:
    """Example-major ``part [n, layer, d]`` standardised on ``device``, back in its own dtype."""
    return ((part.to(device).float() - mean) / scale).to(part.dtype)


class _InMemoryRows:
    """Standardised example-major features ``[n, layer, d]`` on the device, built once.

    Example-major rows make a minibatch a gather of whole rows, much faster than gathering along the middle
    axis; standardising once here keeps it out of every training step.
    """

    def __init__(self, features: Tensor, mean: Tensor, scale: Tensor, device: torch.device, chunk: int = 65536):
        n_layers, n, d_model = features.shape
        self.x = torch.empty(n, n_layers, d_model, dtype=features.dtype, device=device)
        for start in range(0, n, chunk):
            part = features[:, start : start + chunk].transpose(0, 1)
            self.x[start : start + chunk] = _standardised(part, mean, scale, device)
        self.n, self.device = n, device

    def gather(self, index: Tensor) -> Tensor:
        return self.x.index_select(0, index.to(self.device))

    def chunks(self, size: int) -> Iterator[Tensor]:
        for start in range(0, self.n, size):
            yield self.x[start : start + size]


class _StoredRows:
    """The same rows read from a :class:`FeatureStore` a minibatch at a time, standardised on the fly.

    They are the values :class:`_InMemoryRows` would hold, so training on either is the same computation.
    """

    def __init__(self, store: FeatureStore, mean: Tensor, scale: Tensor, device: torch.device):
        self.store, self.mean, self.scale, self.device, self.n = store, mean, scale, device, store.n

    def gather(self, index: Tensor) -> Tensor:
        return _standardised(self.store.rows(index), self.mean, self.scale, self.device)

    def chunks(self, size: int) -> Iterator[Tensor]:
        for part in self.store.chunks(size):
            yield _standardised(part.transpose(0, 1), self.mean, self.scale, self.device)


def _rows(features: Tensor | FeatureStore, mean: Tensor, scale: Tensor, device: torch.device
          ) -> _InMemoryRows | _StoredRows:
    mean, scale = mean.to(device), scale.to(device)
    if isinstance(features, FeatureStore):
        return _StoredRows(features, mean, scale, device)
    return _InMemoryRows(features, mean, scale, device)


class _RowBatches:
    """Standardised feature rows with their labels ``[n, T]``, as the stacked training loop reads them."""

    def __init__(self, rows: _InMemoryRows | _StoredRows, labels: Tensor):
        self.rows, self.labels, self.n = rows, labels, rows.n

    def batch(self, index: Tensor) -> tuple[Tensor, Tensor]:
        index = index.to(self.labels.device)
        return self.rows.gather(index), self.labels.index_select(0, index)

    def chunks(self, size: int) -> Iterator[tuple[Tensor, Tensor]]:
        for start, part in zip(range(0, self.n, size), self.rows.chunks(size), strict=True):
            yield part, self.labels[start : start + size]


class _StackedSoftmax:
    """One weight ``[L, d, T·C]`` and bias ``[L, 1, T·C]``, trained by :func:`.stacked.train_stacked`."""

    def __init__(self, n_layers: int, d_model: int, n_classes: int, labels: Tensor, config: VocabProbeConfig):
        """Zero weights, and biases at the (Laplace-smoothed) log label frequencies of ``labels [n, T]``.

        Every probe thus starts at the unigram prediction instead of spending its first steps finding it.
        """
        n_tasks, device = labels.shape[1], labels.device
        self.shape = (n_layers, d_model, n_tasks, n_classes)
        self.config = config
        shifted = labels + torch.arange(n_tasks, device=device) * n_classes
        counts = torch.bincount(shifted.flatten(), minlength=n_tasks * n_classes).view(n_tasks, n_classes).float()
        log_prior = ((counts + 1) / (labels.shape[0] + n_classes)).log().flatten()
        self.weight = torch.zeros(n_layers, d_model, n_tasks * n_classes, device=device, requires_grad=True)
        self.bias = log_prior.expand(n_layers, 1, -1).clone().requires_grad_(True)
        self.best_weight = self.weight.detach().clone()
        self.best_bias = self.bias.detach().clone()
        self.stopper: PerProbeEarlyStopping | None = None
        self.tasks: Tensor | None = None  # the tasks still trained (None: all); see skip_frozen

    def skip_frozen(self, active: Tensor) -> None:
        """From now on compute only the tasks with a probe still active in some layer (``active [L, T]``)."""
        self.tasks = active.any(0).nonzero().flatten()

    def per_probe_loss(self, x: Tensor, y: Tensor) -> Tensor:
        """Summed cross-entropy ``[L, T]`` of a chunk: ``x [n, L, d]`` standardised features, ``y [n, T]`` labels.

        Tasks skipped as frozen (:meth:`skip_frozen`) are not computed; their entries are 0.
        """
        n_layers, d_model, n_tasks, n_classes = self.shape
        n = x.shape[0]
        x = x.float().transpose(0, 1)  # [L, n, d]
        weight, bias, tasks = self.weight, self.bias, self.tasks
        if tasks is not None:
            weight = weight.view(n_layers, d_model, n_tasks, n_classes)[:, :, tasks].flatten(2)
            bias = bias.view(n_layers, 1, n_tasks, n_classes)[:, :, tasks].flatten(2)
            y = y[:, tasks.to(y.device)]
        kept = y.shape[1]
        logits = (torch.bmm(x, weight) + bias).view(n_layers, n, kept, n_classes)
        target = y.unsqueeze(0).expand(n_layers, -1, -1)
        losses = F.cross_entropy(logits.reshape(-1, n_classes), target.reshape(-1), reduction="none")
        summed = losses.view(n_layers, n, kept).sum(1)
        if tasks is None:
            return summed
        return summed.new_zeros(n_layers, n_tasks).index_copy(1, tasks, summed)

    def fit(self, x: _InMemoryRows | _StoredRows, y: Tensor, val_x: _InMemoryRows | _StoredRows,
            val_y: Tensor) -> None:
        n_classes = self.shape[3]

        def mask(improved: Tensor) -> Tensor:
            return improved.repeat_interleave(n_classes, dim=1)[:, None, :]  # [L, 1, T*C]

        fitted = train_stacked([(self.weight, self.config.weight_decay), (self.bias, 0.0)], self.per_probe_loss,
                               _RowBatches(x, y), _RowBatches(val_x, val_y), self.config, masks=[mask, mask],
                               on_freeze=self.skip_frozen)
        self.best_weight, self.best_bias = fitted.best
        self.stopper = fitted.stopper

    def best_weights(self) -> tuple[Tensor, Tensor]:
        """Weights ``[L, T, d, C]`` and biases ``[L, T, C]`` of every probe's best epoch."""
        n_layers, d_model, n_tasks, n_classes = self.shape
        weight = self.best_weight.view(n_layers, d_model, n_tasks, n_classes).permute(0, 2, 1, 3).contiguous()
        bias = self.best_bias.view(n_layers, n_tasks, n_classes).contiguous()
        return weight, bias


def describe_memory(n_layers: int, n_tasks: int, d_model: int, n_classes: int, batch_size: int) -> dict[str, Any]:
    """Floats (and GiB at float32) the batched trainer needs: weights, optimiser state and a minibatch.

    Example:
        >>> describe_memory(13, 8, 768, 1001, 512)["weights_gib"] < 0.5
        True
    """
    weights = n_layers * n_tasks * d_model * n_classes
    minibatch = n_layers * n_tasks * batch_size * n_classes
    gib = 4 / 2**30
    return {"weights": weights, "weights_gib": weights * gib, "training_gib": 4 * weights * gib,
            "minibatch_logits_gib": 2 * minibatch * gib}

