"""Bootstrap confidence intervals over groups of examples (sequences), for means and paired differences.

Examples from one sequence are not independent, so the unit of resampling is the sequence: each resample
draws ``n_groups`` sequences with replacement and recomputes the statistic ``sum(values) / sum(counts)``
over the drawn sequences (a mean over examples when ``values`` are per-sequence sums and ``counts`` the
examples per sequence; a mean over sequences when ``counts`` is None). The interval is the percentile
interval of the resampled statistic. One resampling (``seed``) is shared by every row of ``values``, so the
intervals of a table's cells come from the same resampled sequences.

Example:
    >>> import torch
    >>> values = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0])
    >>> low, high = bootstrap_ci(values, seed=0)
    >>> bool(low < values.mean() < high)
    True
"""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor

from forethought.errors import DataError, InvalidArgumentError, check_positive

N_RESAMPLES = 1000
LEVEL = 0.95


def bootstrap_weights(n_groups: int, n_resamples: int = N_RESAMPLES, seed: int = 0) -> Float[Tensor, "resample group"]:
    """How often each group is drawn in each resample (each row sums to ``n_groups``), float64."""
    check_positive("n_groups", n_groups, integer=True)
    check_positive("n_resamples", n_resamples, integer=True)
    # on the CPU: the same seed gives the same resamples on every machine
    generator = torch.Generator(device="cpu").manual_seed(seed)
    draws = torch.randint(0, n_groups, (n_resamples, n_groups), generator=generator, device="cpu")
    return torch.zeros(n_resamples, n_groups, dtype=torch.float64, device="cpu").scatter_add_(
        1, draws, torch.ones(n_resamples, n_groups, dtype=torch.float64, device="cpu"))


def bootstrap_ci(
    values: Float[Tensor, "*batch group"],
    counts: Float[Tensor, " group"] | None = None,
    level: float = LEVEL,
    n_resamples: int = N_RESAMPLES,
    seed: int = 0,
) -> tuple[Float[Tensor, "*batch"], Float[Tensor, "*batch"]]:
    """The percentile bootstrap interval of ``sum(values) / sum(counts)`` over resampled groups.

    Args:
        values: one value (or one sum of values) per group on the last axis; leading axes are independent
            statistics resampled together.
        counts: examples per group (``values`` then hold per-group sums); None: every group counts once.
        level: the interval's nominal coverage, in (0, 1).
        n_resamples: bootstrap resamples.
        seed: seeds the resampling.

    Returns:
        ``(low, high)``, each of shape ``values.shape[:-1]`` (float64).
    """
    if not 0 < level < 1:
        raise InvalidArgumentError(f"level={level!r} is not allowed; expected 0 < level < 1")
    values = torch.as_tensor(values, device="cpu").double()
    if values.ndim == 0 or values.shape[-1] == 0:
        raise DataError("a bootstrap needs at least one group; got no values")
    n_groups = values.shape[-1]
    counts = (torch.ones(n_groups, dtype=torch.float64, device="cpu") if counts is None
              else torch.as_tensor(counts, device="cpu").double())
    if counts.shape != (n_groups,):
        raise InvalidArgumentError(f"counts has shape {tuple(counts.shape)}; expected ({n_groups},), one per group")
    weights = bootstrap_weights(n_groups, n_resamples, seed)  # [resample, group]
    flat = values.reshape(-1, n_groups)
    statistic = (flat @ weights.T) / (weights @ counts).clamp(min=1e-300)  # [batch, resample]
    tail = (1 - level) / 2
    quantiles = torch.quantile(statistic, torch.tensor([tail, 1 - tail], dtype=torch.float64, device="cpu"), dim=-1)
    shape = values.shape[:-1]
    return quantiles[0].reshape(shape), quantiles[1].reshape(shape)
