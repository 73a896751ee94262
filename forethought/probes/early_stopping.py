"""Early stopping for a grid of probes trained together: each probe keeps its own best epoch.

Example:
    >>> import torch
    >>> stopper = PerProbeEarlyStopping(shape=(1, 2), patience=1)
    >>> stopper.step(torch.tensor([[1.0, 1.0]])).tolist()  # both improve on +inf
    [[True, True]]
    >>> stopper.step(torch.tensor([[0.5, 2.0]])).tolist()  # the second gets worse: out of patience
    [[True, False]]
    >>> stopper.active.tolist(), stopper.done
    ([[True, False]], False)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from forethought.errors import InvalidArgumentError, check_positive


@dataclass
class MinibatchFitConfig:
    """Settings shared by the probe trainers that fit every probe with minibatch AdamW and early stopping.

    Attributes:
        lr: AdamW learning rate.
        weight_decay: AdamW (decoupled) weight decay on the weights; biases are not decayed.
        batch_size: examples per minibatch (shared by all probes).
        max_epochs: passes over the training examples at most.
        patience: epochs without a held-out improvement of ``min_delta`` before a probe is frozen.
        min_delta: the smallest held-out loss decrease (nats) that counts as an improvement.
        val_fraction: held-out share of the training examples when no validation split is passed.
        seed: seeds the held-out split and the minibatch order.
        device: where to fit (default: where the features are).
        eval_batch_size: examples per chunk when computing held-out losses.
        progress: show a progress bar over epochs.
    """

    lr: float = 1e-2
    weight_decay: float = 1e-4
    batch_size: int = 512
    max_epochs: int = 50
    patience: int = 3
    min_delta: float = 1e-4
    val_fraction: float = 0.1
    seed: int = 0
    device: str | None = None
    eval_batch_size: int = 4096
    progress: bool = True

    #: the fewest epochs a trainer accepts (0 where fitting has a closed-form first stage)
    min_epochs = 1

    def __post_init__(self) -> None:
        for name in ("batch_size", "patience", "eval_batch_size"):
            check_positive(name, getattr(self, name), integer=True)
        epochs = self.max_epochs
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < self.min_epochs:
            raise InvalidArgumentError(f"max_epochs={epochs!r} is not allowed; expected an integer >= "
                                       f"{self.min_epochs}")
        check_positive("lr", self.lr)
        if self.weight_decay < 0:
            raise InvalidArgumentError(f"weight_decay={self.weight_decay!r} is not allowed; expected >= 0")
        if not 0 < self.val_fraction < 1:
            raise InvalidArgumentError(f"val_fraction={self.val_fraction!r} is not allowed; expected 0 < v < 1")


class PerProbeEarlyStopping:
    """Tracks every probe's best held-out loss; a probe without improvement for ``patience`` checks is frozen.

    A frozen probe never records a new best, so the weights a caller snapshots on improvement are exactly
    those that training the probe alone, with the same early stopping, would return.
    """

    def __init__(self, shape: tuple[int, ...], patience: int, min_delta: float = 0.0,
                 device: torch.device | str | None = None):
        self.patience, self.min_delta = patience, min_delta
        self.best = torch.full(shape, float("inf"), device=device)
        self.stale = torch.zeros(shape, dtype=torch.long, device=device)
        self.active = torch.ones(shape, dtype=torch.bool, device=device)
        self.best_epoch = torch.zeros(shape, dtype=torch.long, device="cpu")
        self.epochs = 0

    def step(self, held_out: Tensor) -> Tensor:
        """Record one check of every probe's held-out loss; returns the mask of probes that improved."""
        self.epochs += 1
        improved = (held_out < self.best - self.min_delta) & self.active
        self.best = torch.where(improved, held_out, self.best)
        self.stale = torch.where(improved, torch.zeros_like(self.stale), self.stale + 1)
        self.best_epoch[improved.cpu()] = self.epochs
        self.active &= self.stale < self.patience
        return improved

    @property
    def done(self) -> bool:
        """True once every probe is frozen."""
        return not bool(self.active.any())
