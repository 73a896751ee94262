"""The synthetic pre-caching task D_p (Wu, Morris & Levine 2024, §4), generated on the fly.

Each sequence has ``seq_len`` positions. At position ``n`` the input is ``(x_n, z_n)`` with ``x_n ~ N(0, 1)`` and
``z_n ~ Bernoulli(p)``; the target is

    y_n = z_n * sum_{j=1..k} sin(frequency * x_{n-j}) + (1 - z_n) * x_n,

with ``x_m = 0`` for ``m < 0`` (zero padding before the start). When ``z_n = 1`` the target depends only on
the past: a model that does well must have computed ``sin(frequency * x_m)`` at position ``m`` for the benefit
of later positions (pre-caching). Keep ``frequency`` high (≥ 8): for small values ``sin(F x)`` is almost linear
in ``x`` and any model "encodes" it.

Nothing is stored: :meth:`PrecacheTask.sample` draws a batch directly on the requested device from a
``torch.Generator``, so two runs with the same seed on the same device see the same stream.

Example:
    >>> import torch
    >>> task = PrecacheTask(k=3, frequency=8.0, p=1.0, seq_len=16)
    >>> batch = task.sample(4, torch.Generator().manual_seed(0))
    >>> batch.inputs.shape, batch.targets.shape
    (torch.Size([4, 16, 2]), torch.Size([4, 16]))
    >>> torch.allclose(batch.targets, precache_targets(batch.x, batch.z, k=3, frequency=8.0))
    True
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from forethought.errors import InvalidArgumentError, check_positive, check_probability

#: The values of ``p`` swept in the paper.
PAPER_PS = (0.001, 0.01, 0.1, 0.3, 1.0)


def derive_seed(seed: int, purpose: str) -> int:
    """An independent 63-bit seed for one use of a run's seed (``"train"``, ``"eval"``, ``"probe"``, ...).

    Seeds ``s`` and ``s + 1`` give unrelated streams for every purpose, so no run's evaluation set is another
    run's training data.

    Example:
        >>> derive_seed(0, "train") != derive_seed(0, "eval")
        True
    """
    words = [int(seed) & 0xFFFFFFFF, *purpose.encode()]
    return int(np.random.SeedSequence(words).generate_state(2, np.uint32).view(np.uint64)[0] >> np.uint64(1))


@dataclass(frozen=True)
class PrecacheBatch:
    """One batch of D_p: the model inputs ``(x, z)`` stacked on the last axis, and the targets."""

    x: Float[Tensor, "batch pos"]
    z: Float[Tensor, "batch pos"]
    targets: Float[Tensor, "batch pos"]

    @property
    def inputs(self) -> Float[Tensor, "batch pos 2"]:
        """``(x_n, z_n)`` per position, the model's input."""
        return torch.stack((self.x, self.z), dim=-1)


@dataclass(frozen=True)
class PrecacheTask:
    """The distribution D_p.

    Args:
        k: how many past positions the target sums over (the paper's K).
        frequency: F in ``sin(F x)``.
        p: probability that a position's target is the past sum rather than ``x_n``; in ``(0, 1]``.
        seq_len: positions per sequence (the paper's T).
    """

    k: int = 10
    frequency: float = 10.0
    p: float = 1.0
    seq_len: int = 64

    def __post_init__(self) -> None:
        check_positive("k", self.k, integer=True)
        check_positive("frequency", self.frequency)
        check_positive("seq_len", self.seq_len, integer=True)
        check_probability("p", self.p)

    def sample(
        self,
        batch_size: int,
        generator: torch.Generator | None = None,
        device: str | torch.device | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> PrecacheBatch:
        """Draw ``batch_size`` sequences on ``device`` (default: the generator's device).

        Args:
            batch_size: sequences to draw.
            generator: the random stream; its device must be ``device``.
            device: where to create the batch.
            dtype: floating dtype of the batch.
        """
        check_positive("batch_size", batch_size, integer=True)
        if device is None:
            device = generator.device if generator is not None else "cpu"
        shape = (batch_size, self.seq_len)
        x = torch.randn(shape, generator=generator, device=device, dtype=dtype)
        z = (torch.rand(shape, generator=generator, device=device, dtype=dtype) < self.p).to(dtype)
        return PrecacheBatch(x=x, z=z, targets=precache_targets(x, z, self.k, self.frequency))


def lagged(x: Float[Tensor, "batch pos"], lag: int) -> Float[Tensor, "batch pos"]:
    """``x`` shifted right by ``lag`` positions with zeros in front: ``out[:, n] = x[:, n - lag]`` (0 if n < lag).

    Example:
        >>> lagged(torch.tensor([[1.0, 2.0, 3.0]]), 1)
        tensor([[0., 1., 2.]])
    """
    if isinstance(lag, bool) or not isinstance(lag, int) or lag < 0:
        raise InvalidArgumentError(f"lag={lag!r} is not allowed; expected an integer >= 0")
    if lag == 0:
        return x
    out = torch.zeros_like(x)
    out[:, lag:] = x[:, : max(x.shape[1] - lag, 0)]
    return out


def lagged_sin(x: Float[Tensor, "batch pos"], frequency: float, lag: int) -> Float[Tensor, "batch pos"]:
    """``sin(frequency * x_{n - lag})`` at every position (0 before the start, since sin(0) = 0)."""
    return torch.sin(frequency * lagged(x, lag))


def past_sum(x: Float[Tensor, "batch pos"], k: int, frequency: float) -> Float[Tensor, "batch pos"]:
    """The K-term sum ``sum_{j=1..k} sin(frequency * x_{n-j})`` at every position, zero-padded.

    Example:
        >>> past_sum(torch.tensor([[0.5, 1.0, 2.0]]), k=2, frequency=1.0)[0, 2].item() == (
        ...     torch.sin(torch.tensor(1.0)) + torch.sin(torch.tensor(0.5))).item()
        True
    """
    check_positive("k", k, integer=True)
    sines = torch.sin(frequency * x)
    total = torch.zeros_like(x)
    for j in range(1, k + 1):
        total = total + lagged(sines, j)
    return total


def precache_targets(
    x: Float[Tensor, "batch pos"], z: Float[Tensor, "batch pos"], k: int, frequency: float
) -> Float[Tensor, "batch pos"]:
    """The D_p targets ``y_n = z_n * sum_{j=1..k} sin(F x_{n-j}) + (1 - z_n) * x_n``."""
    return torch.where(z.bool(), past_sum(x, k, frequency), x)


def probe_targets(
    x: Float[Tensor, "batch pos"], k: int, frequency: float, lags: Sequence[int]
) -> dict[str, Float[Tensor, "batch pos"]]:
    """Targets for regression probes: ``"sin@{lag}"`` = sin(F x_{n-lag}) for each lag, and ``"sum"`` (the K terms).

    Example:
        >>> sorted(probe_targets(torch.zeros(1, 4), k=2, frequency=8.0, lags=[0, 1]))
        ['sin@0', 'sin@1', 'sum']
    """
    targets = {f"sin@{lag}": lagged_sin(x, frequency, lag) for lag in lags}
    targets["sum"] = past_sum(x, k, frequency)
    return targets
