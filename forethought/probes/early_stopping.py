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

import torch
from torch import Tensor


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
        self.best_epoch = torch.zeros(shape, dtype=torch.long)
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
