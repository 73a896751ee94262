"""Batch sources: what the training loop draws each step's batch from, and how a resumed run draws the same ones.

A batch source has ``batch(step, device, rank, world)`` (this process's share of step ``step``'s batch, on
``device``) and ``state_dict()`` / ``load_state_dict(state)`` (saved in the checkpoint as ``data_order``), so that
a run resumed at step ``s`` sees exactly the batches an uninterrupted run sees. :class:`TokenBatches` serves
language modelling; the synthetic study samples fresh sequences from a generator
(:class:`forethought.synthetic.study.SampledBatches`).

Example:
    >>> tokens = torch.arange(20).reshape(10, 2)
    >>> source = TokenBatches(tokens, batch_size=4, seed=0)
    >>> source.batch(0, "cpu").shape
    torch.Size([4, 2])
    >>> torch.equal(source.batch(0, "cpu", rank=1, world=2), source.batch(0, "cpu")[1::2])
    True
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Protocol

import numpy as np
import torch
from jaxtyping import Int
from torch import Tensor


class BatchSource(Protocol):
    """What :func:`~forethought.myopic_training.loop.run_training` draws batches from."""

    def batch(self, step: int, device: torch.device | str, rank: int = 0, world: int = 1) -> Any:
        """Process ``rank``'s share (of ``world`` processes) of the batch of step ``step``, on ``device``."""

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint must hold to draw the same batches after a resume (tensors and plain data)."""

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`'s state."""


@dataclass(frozen=True)
class BatchOrder:
    """Which training sequences make up the batch of each step: a pure function of ``(seed, step)``.

    Each epoch is a permutation drawn from ``numpy.random.default_rng([seed, epoch])``; the last incomplete
    batch of an epoch is dropped.

    Example:
        >>> order = BatchOrder(n_sequences=10, batch_size=4, seed=0)
        >>> sorted(order.batch(0).tolist() + order.batch(1).tolist()) == sorted(set(order.epoch(0)[:8].tolist()))
        True
    """

    n_sequences: int
    batch_size: int
    seed: int

    @property
    def batches_per_epoch(self) -> int:
        """Whole batches in one pass over the sequences (a last partial batch is dropped)."""
        return self.n_sequences // self.batch_size

    def batch(self, step: int) -> Int[Tensor, " batch"]:
        """The sequence indices of batch ``step``, counting on across epochs."""
        epoch, index = divmod(step, self.batches_per_epoch)
        return self.epoch(epoch)[index * self.batch_size : (index + 1) * self.batch_size]

    def epoch(self, epoch: int) -> Int[Tensor, " n_sequences"]:
        """The shuffled order of all sequence indices in ``epoch``, a function of ``(seed, epoch)``."""
        return _permutation(self.n_sequences, self.seed, epoch)


class TokenBatches:
    """Batches of rows of a token tensor in :class:`BatchOrder`; each process takes every ``world``-th row.

    The order is a function of ``(seed, step)``, so there is nothing to restore; the state records it.
    """

    def __init__(self, tokens: Int[Tensor, "n pos"], batch_size: int, seed: int):
        self.tokens = tokens
        self.order = BatchOrder(len(tokens), batch_size, seed)

    def batch(self, step: int, device: torch.device | str, rank: int = 0, world: int = 1) -> Int[Tensor, "batch pos"]:
        """Process ``rank``'s share (every ``world``-th row) of batch ``step``, on ``device``."""
        rows = self.order.batch(step)[rank::world]
        return self.tokens[rows].to(device)

    def state_dict(self) -> dict[str, Any]:
        """The seed and sizes that fix the order, for the checkpoint."""
        return {"seed": self.order.seed, "n_sequences": self.order.n_sequences, "batch_size": self.order.batch_size}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Nothing to restore: the order depends only on ``(seed, step)``."""


@lru_cache(maxsize=4)
def _permutation(n: int, seed: int, epoch: int) -> Tensor:
    return torch.from_numpy(np.random.default_rng([seed, epoch]).permutation(n))
