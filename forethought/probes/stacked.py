"""The one training loop of the stacked probe trainers: minibatch AdamW over examples, every probe at once.

A stack holds one probe per (layer, task) pair in a few tensors; each probe's loss depends on its own slice of
them only, and AdamW updates every parameter on its own, so training the stack trains every probe separately
with the same minibatch order. After every epoch each probe's held-out loss is checked; a probe keeps the
parameters of its best epoch (the starting point counts as epoch 0) and is frozen once it has not improved for
``patience`` epochs (:class:`~forethought.probes.early_stopping.PerProbeEarlyStopping`). Training ends when
every probe is frozen or after ``max_epochs``. The direct vocabulary probes
(:mod:`forethought.probes.vocabulary`) and the Future-Lens fine-tuning (:mod:`forethought.probes.future_lens`)
both train through :func:`train_stacked`.

Example:
    >>> import torch
    >>> from forethought.probes.early_stopping import MinibatchFitConfig
    >>> x = torch.randn(200, 3, generator=torch.Generator().manual_seed(0))
    >>> y = x @ torch.tensor([[1.0], [-2.0], [0.5]])
    >>> w = torch.zeros(1, 1, 3, 1, requires_grad=True)  # one probe: [layer, task, d, out]
    >>> def loss(xb, yb):  # the summed loss of every probe, [layer, task]
    ...     return ((xb @ w[0, 0] - yb) ** 2).sum().view(1, 1)
    >>> batches = TensorBatches(x, y)
    >>> fitted = train_stacked([(w, 0.0)], loss, batches, batches, MinibatchFitConfig(lr=0.1, progress=False),
    ...                        masks=[lambda improved: improved[:, :, None, None]])
    >>> bool(fitted.best[0].flatten().sub(torch.tensor([1.0, -2.0, 0.5])).abs().max() < 0.1)
    True
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor
from tqdm.auto import tqdm

from forethought.errors import InvalidArgumentError, NumericalError
from forethought.probes.early_stopping import MinibatchFitConfig, PerProbeEarlyStopping
from forethought.probes.feature_store import FeatureStore

#: ``loss(x, y) -> [layer, task]``: every probe's loss summed over the examples of a minibatch or chunk.
StackedLoss = Callable[[Tensor, Tensor], Tensor]


class Batches(Protocol):
    """Examples a stacked trainer reads: ``n`` of them, a minibatch by index, held-out chunks in order."""

    n: int

    def batch(self, index: Tensor) -> tuple[Tensor, Tensor]:
        """Inputs and targets of the examples ``index`` (a CPU index tensor)."""
        ...

    def chunks(self, size: int) -> Iterator[tuple[Tensor, Tensor]]:
        """Inputs and targets of every example, ``size`` at a time, in order."""
        ...


class TensorBatches:
    """Examples held as tensors whose example axis is ``axis`` (0 for example-major, 1 for layer-major).

    Either tensor may instead be an on-disk :class:`~forethought.probes.feature_store.FeatureStore` (layer-major,
    ``axis=1``), read a minibatch at a time. Every piece comes back contiguous and on ``device`` (default: where
    it is), so a stack trains on exactly the same values, laid out the same way, from memory or from disk.
    """

    def __init__(self, x: Tensor | FeatureStore, y: Tensor | FeatureStore, axis: int = 0,
                 device: torch.device | None = None):
        if axis != 1 and (isinstance(x, FeatureStore) or isinstance(y, FeatureStore)):
            raise InvalidArgumentError("examples on disk (a FeatureStore) are read layer-major; pass axis=1")
        self.x, self.y, self.axis, self.device = x, y, axis, device
        self.n = x.shape[axis]

    def _place(self, part: Tensor) -> Tensor:
        return part.to(self.device).contiguous() if self.device is not None else part.contiguous()

    def _take(self, data: Tensor | FeatureStore, index: Tensor) -> Tensor:
        if isinstance(data, FeatureStore):
            return self._place(data.rows(index).transpose(0, 1))
        return self._place(data.index_select(self.axis, index.to(data.device)))

    def _narrow(self, data: Tensor | FeatureStore, start: int, length: int) -> Tensor:
        if isinstance(data, FeatureStore):
            return self._place(data.chunk(start, start + length))
        return self._place(data.narrow(self.axis, start, length))

    def batch(self, index: Tensor) -> tuple[Tensor, Tensor]:
        """Inputs and targets of the examples ``index``."""
        return self._take(self.x, index), self._take(self.y, index)

    def chunks(self, size: int) -> Iterator[tuple[Tensor, Tensor]]:
        """Inputs and targets of every example, ``size`` at a time, in order."""
        for start in range(0, self.n, size):
            length = min(size, self.n - start)
            yield self._narrow(self.x, start, length), self._narrow(self.y, start, length)


@dataclass
class StackedFit:
    """What :func:`train_stacked` returns: each parameter at every probe's best epoch, and the stopper."""

    best: list[Tensor]
    stopper: PerProbeEarlyStopping


@torch.no_grad()
def held_out_loss(loss: StackedLoss, examples: Batches, size: int) -> Tensor:
    """Every probe's mean loss ``[layer, task]`` over ``examples``, ``size`` at a time."""
    total: Tensor | None = None
    for x, y in examples.chunks(size):
        part = loss(x, y)
        total = part if total is None else total + part
    assert total is not None  # the trainers refuse empty splits before
    return total / examples.n


def train_stacked(
    params: Sequence[tuple[Tensor, float]],
    loss: StackedLoss,
    train: Batches,
    val: Batches,
    config: MinibatchFitConfig,
    masks: Sequence[Callable[[Tensor], Tensor]],
    desc: str = "probes",
    on_freeze: Callable[[Tensor], None] | None = None,
) -> StackedFit:
    """Train the stacked ``params`` with AdamW and per-probe early stopping; see the module docstring.

    Args:
        params: the trainable tensors (leaves with ``requires_grad``), each with its decoupled weight decay.
        loss: every probe's summed loss ``[layer, task]`` on a minibatch; gradients are taken with respect to
            ``params`` only (a model used inside ``loss`` gets none).
        train: the training examples, read a minibatch at a time in a seeded order (the same on every device).
        val: the held-out examples, read ``config.eval_batch_size`` at a time after every epoch.
        config: lr, weight decay, batch size, epochs, patience, seed, progress.
        masks: for each parameter, the improved-probe mask ``[layer, task]`` broadcast to that parameter's shape.
        desc: the progress bar's label, also named by the error raised when the loss stops being finite.
        on_freeze: called with the mask of still-active probes ``[layer, task]`` whenever probes were frozen, so
            that ``loss`` may skip the frozen ones from then on (their best epoch is kept already; they can no
            longer improve, and every probe's loss and update depend on its own parameters only).

    Returns:
        Every parameter at its probe's best held-out epoch, and the early-stopping record.
    """
    tensors = [param for param, _ in params]
    optimizer = torch.optim.AdamW([{"params": [param], "weight_decay": decay} for param, decay in params],
                                  lr=config.lr)
    best = [param.detach().clone() for param in tensors]
    start = held_out_loss(loss, val, config.eval_batch_size)  # epoch 0, the starting point, is a candidate too
    stopper = PerProbeEarlyStopping(tuple(start.shape), config.patience, config.min_delta, start.device)
    stopper.best = start
    generator = torch.Generator(device="cpu").manual_seed(config.seed)  # the same order on every device
    # inside a sweep's overall bar: this one shows the current fit and leaves no line behind
    epochs = tqdm(range(config.max_epochs), desc=desc, disable=not config.progress, unit="epoch", leave=False)
    for epoch in epochs:
        finite = torch.ones((), dtype=torch.bool, device=start.device)  # checked once an epoch: no per-step sync
        for batch in torch.randperm(train.n, generator=generator, device="cpu").split(config.batch_size):
            value = loss(*train.batch(batch)).sum() / len(batch)
            finite &= torch.isfinite(value)
            grads = torch.autograd.grad(value, tensors)
            for param, grad in zip(tensors, grads, strict=True):
                param.grad = grad
            optimizer.step()
        if not bool(finite):
            raise NumericalError(f"{desc} training loss stopped being finite in epoch {epoch}; lower lr or check "
                                 "the features for NaN/inf")
        held_out = held_out_loss(loss, val, config.eval_batch_size)
        epochs.set_postfix(held_out=f"{held_out[stopper.active].mean().item():.4f}", active=int(stopper.active.sum()))
        was_active = int(stopper.active.sum())
        improved = stopper.step(held_out)
        with torch.no_grad():
            best = [torch.where(mask(improved), param, kept)
                    for param, kept, mask in zip(tensors, best, masks, strict=True)]
        if stopper.done:
            break
        if on_freeze is not None and int(stopper.active.sum()) < was_active:
            on_freeze(stopper.active)
    return StackedFit(best=best, stopper=stopper)
