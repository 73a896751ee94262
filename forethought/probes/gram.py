"""Least squares from sufficient statistics: ``XᵀX`` and ``XᵀY`` per depth and target, accumulated in float64.

:class:`GramStats` sums, over chunks of examples read from memory or from an on-disk
:class:`~forethought.probes.feature_store.FeatureStore`, everything a ridge regression from every layer's features
``X [layer, n, d]`` to every target ``Y [task, n, e]`` needs: ``n``, ``ΣX``, ``XᵀX`` per layer, ``ΣY``, ``ΣY²``
(per coordinate) per task and ``XᵀY`` per (layer, task). Memory is ``L·d² + L·T·d·e`` float64 values, whatever the
number of examples, so the least-squares stage of the lens methods streams. Sums are taken about the first chunk's
means (a shift that keeps ``XᵀX − n·μμᵀ`` from cancelling when the features' means dwarf their spread).

:meth:`GramStats.moments` turns the sums into the standardised normal equations ``X̃ᵀX̃``, ``X̃ᵀ(Y − c)`` about any
centres; :meth:`GramStats.solve` is the ridge solution ``(X̃ᵀX̃ + λI)⁻¹X̃ᵀ(Y − Ȳ)`` (:meth:`GramStats.intercept`
its intercept); :func:`select_ridge` picks a
penalty per target coordinate by held-out R² from the held-out split's own statistics.

Example:
    >>> import torch
    >>> x = torch.randn(1, 500, 3, generator=torch.Generator().manual_seed(0))  # [layer, n, d]
    >>> y = (x[0] @ torch.tensor([[1.0], [-2.0], [0.5]]))[None] + 3  # [task, n, 1]
    >>> stats = GramStats.accumulate(x, y, chunk=64)
    >>> mean, scale = stats.standardisation()
    >>> weight = stats.solve(scale, penalty=0.0)
    >>> [round(w, 4) for w in (weight[0, 0, :, 0] / scale[0].double()).tolist()]  # back to raw units
    [1.0, -2.0, 0.5]
    >>> round(float(stats.intercept(weight, mean, scale)[0, 0, 0] - (weight[0, 0, :, 0] * mean[0] / scale[0]).sum()), 4)
    3.0
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

from forethought.errors import DataError, InvalidArgumentError
from forethought.probes.feature_store import FeatureStore, feature_chunks
from forethought.probes.linear import standard_scale

Stored = Tensor | FeatureStore


@dataclass
class GramStats:
    """Sums over examples of features ``x [layer, d]`` and targets ``y [task, e]``, about ``shift``, in float64.

    Attributes:
        n: the examples summed.
        x_shift, y_shift: the centres the sums are taken about (the first chunk's means) ``[layer, d]``, ``[task, e]``.
        x_sum: ``Σ(x − x_shift)`` ``[layer, d]``.
        xx: ``Σ(x − x_shift)(x − x_shift)ᵀ`` ``[layer, d, d]``.
        y_sum: ``Σ(y − y_shift)`` ``[task, e]``.
        yy: ``Σ(y − y_shift)²`` per coordinate ``[task, e]``.
        xy: ``Σ(x − x_shift)(y − y_shift)ᵀ`` ``[layer, task, d, e]``.
    """

    n: int
    x_shift: Tensor
    y_shift: Tensor
    x_sum: Tensor
    xx: Tensor
    y_sum: Tensor
    yy: Tensor
    xy: Tensor

    @classmethod
    def start(cls, x_shift: Float[Tensor, "layer d"], y_shift: Float[Tensor, "task e"]) -> GramStats:
        """Empty sums about the given centres (on their device)."""
        (n_layers, d), (n_tasks, e) = x_shift.shape, y_shift.shape
        zeros = x_shift.new_zeros
        return cls(0, x_shift.double(), y_shift.double(), zeros(n_layers, d, dtype=torch.float64),
                   zeros(n_layers, d, d, dtype=torch.float64), zeros(n_tasks, e, dtype=torch.float64),
                   zeros(n_tasks, e, dtype=torch.float64), zeros(n_layers, n_tasks, d, e, dtype=torch.float64))

    def add(self, x: Float[Tensor, "layer b d"], y: Float[Tensor, "task b e"]) -> None:
        """Add the examples of one chunk (any dtype and device; summed on the statistics' device in float64)."""
        device = self.xx.device
        x = x.to(device, torch.float64) - self.x_shift[:, None]
        y = y.to(device, torch.float64) - self.y_shift[:, None]
        self.n += x.shape[1]
        self.x_sum += x.sum(1)
        self.xx += x.transpose(1, 2) @ x
        self.y_sum += y.sum(1)
        self.yy += y.square().sum(1)
        self.xy += torch.einsum("lnd,tne->ltde", x, y)

    @classmethod
    def accumulate(cls, features: Stored, targets: Stored, chunk: int | None = None,
                   device: torch.device | None = None, like: GramStats | None = None) -> GramStats:
        """The statistics of ``features [layer, n, d]`` and ``targets [task, n, e]``, ``chunk`` examples at a time.

        Either may be an on-disk :class:`FeatureStore`; the sums are taken on ``device`` (default: the features'),
        about ``like``'s centres when given (so that the two can be added), else about the first chunk's means. A
        chunk holds by default as many examples as make 64 MiB of float64 (so memory does not grow with them).
        """
        chunk = chunk or max(1, 2**23 // (features.shape[0] * features.shape[2] + targets.shape[0] * targets.shape[2]))
        if features.shape[1] != targets.shape[1]:
            raise InvalidArgumentError(f"features hold {features.shape[1]} examples but targets hold "
                                       f"{targets.shape[1]}")
        if features.shape[1] == 0:
            raise DataError("least squares needs at least one example; the split is empty")
        if device is None:
            device = features.device if isinstance(features, Tensor) else torch.device("cpu")
        stats = like.empty_like() if like is not None else None
        for x, y in zip(_chunks(features, chunk), _chunks(targets, chunk), strict=True):
            if stats is None:
                stats = cls.start(x.to(device, torch.float64).mean(1), y.to(device, torch.float64).mean(1))
            stats.add(x, y)
        assert stats is not None  # at least one chunk
        return stats

    def empty_like(self) -> GramStats:
        """Empty sums about these centres."""
        return GramStats.start(self.x_shift, self.y_shift)

    def __add__(self, other: GramStats) -> GramStats:
        """The statistics of both sets of examples (summed about the same centres)."""
        if not (torch.equal(self.x_shift, other.x_shift) and torch.equal(self.y_shift, other.y_shift)):
            raise InvalidArgumentError("statistics about different centres cannot be added; accumulate the second "
                                       "with like=the first")
        return GramStats(self.n + other.n, self.x_shift, self.y_shift, self.x_sum + other.x_sum, self.xx + other.xx,
                         self.y_sum + other.y_sum, self.yy + other.yy, self.xy + other.xy)

    def standardisation(self) -> tuple[Float[Tensor, "layer d"], Float[Tensor, "layer d"]]:
        """Per-layer mean and standard deviation of the features (float32, as :func:`.linear.feature_stats`)."""
        centred = self.x_sum / self.n
        variance = (self.xx.diagonal(dim1=1, dim2=2) / self.n - centred.square()).clamp(min=0)
        return standard_scale(self.x_shift + centred, variance)

    def feature_mean(self) -> Float[Tensor, "layer d"]:
        """The features' mean per layer (float64)."""
        return self.x_shift + self.x_sum / self.n

    def target_mean(self) -> Float[Tensor, "task e"]:
        """The targets' mean per coordinate (float64)."""
        return self.y_shift + self.y_sum / self.n

    def moments(self, mean: Tensor, scale: Tensor, centre: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The normal equations of standardised features ``z = (x − mean) / scale`` and centred targets ``y − c``.

        Returns ``Σzzᵀ [layer, d, d]``, ``Σz(y − c)ᵀ [layer, task, d, e]`` and ``Σ(y − c)² [task, e]`` (float64).
        """
        a = mean.to(self.xx).sub(self.x_shift)  # the feature centre, relative to the shift
        b = centre.to(self.xx).sub(self.y_shift)  # the target centre, relative to the shift
        s = scale.to(self.xx)
        outer = self.x_sum[:, :, None] * a[:, None]  # Σx aᵀ
        xx = self.xx - outer - outer.transpose(1, 2) + self.n * a[:, :, None] * a[:, None]
        xy = (self.xy - torch.einsum("ld,te->ltde", self.x_sum, b) - torch.einsum("ld,te->ltde", a, self.y_sum)
              + self.n * torch.einsum("ld,te->ltde", a, b))
        yy = self.yy - 2 * b * self.y_sum + self.n * b.square()
        gram = xx / (s[:, :, None] * s[:, None])
        cross = xy / s[:, None, :, None]
        return gram, cross, yy

    def centred(self, scale: Tensor) -> tuple[Tensor, Tensor]:
        """``Z̃ᵀZ̃`` and ``Z̃ᵀ(Y − Ȳ)`` of features centred at their exact mean and divided by ``scale``."""
        gram, cross, _ = self.moments(self.feature_mean(), scale, self.target_mean())
        return gram, cross

    def intercept(self, weight: Tensor, mean: Tensor, scale: Tensor) -> Float[Tensor, "layer task e"]:
        """The intercept of maps ``weight`` applied to ``(x − mean) / scale``: ``Ȳ − ((x̄ − mean) / scale) A``.

        With the exact means the least-squares intercept is ``Ȳ``; the probes standardise with float32 means, and
        this carries the difference over, so that they are the least-squares fit exactly.
        """
        offset = (self.feature_mean() - mean.to(self.xx)) / scale.to(self.xx)  # [L, d]
        return self.target_mean()[None] - torch.einsum("ld,ltde->lte", offset, weight)

    def solve(self, scale: Tensor, penalty: float) -> Float[Tensor, "layer task d e"]:
        """The ridge maps ``(Z̃ᵀZ̃ + penalty·I)⁻¹Z̃ᵀ(Y − Ȳ)`` of every (layer, task), float64; see :meth:`intercept`."""
        gram, cross = self.centred(scale)
        eye = torch.eye(gram.shape[-1], dtype=gram.dtype, device=gram.device)
        return torch.linalg.solve((gram + penalty * eye)[:, None], cross)


def select_ridge(fit: GramStats, held_out: GramStats, alphas: Tensor
                 ) -> tuple[Float[Tensor, "layer task e"], Float[Tensor, "layer task e"]]:
    """The penalty of every (layer, task, target coordinate) with the best held-out R², and that R².

    Each candidate ``alpha`` is the ridge penalty on the summed squares of standardised features (scikit-learn's
    ``Ridge(alpha=)`` after a ``StandardScaler``), fitted on ``fit`` and scored on ``held_out`` from its own
    statistics (R² against the held-out mean, as ``sklearn.metrics.r2_score``): one eigendecomposition per layer
    serves every penalty. Ties go to the smaller penalty.
    """
    _, scale = fit.standardisation()
    eigenvalues, vectors, rotated = _eigen(fit, scale)
    val_gram, val_cross, val_yy = held_out.moments(fit.feature_mean(), scale, fit.target_mean())
    val_gram = vectors.transpose(1, 2) @ val_gram @ vectors  # in the eigenbasis
    val_cross = torch.einsum("ldk,ltde->ltke", vectors, val_cross)
    total = held_out.yy - held_out.y_sum.square() / held_out.n  # Σ(y − ȳ_held-out)²
    best_r2 = best_alpha = None
    for alpha in alphas.tolist():
        weight = rotated / (eigenvalues[:, None, :, None] + alpha)  # [L, T, d, e] in the eigenbasis
        error = (val_yy - 2 * (weight * val_cross).sum(2)
                 + (weight * torch.einsum("lkj,ltje->ltke", val_gram, weight)).sum(2))
        r2 = 1 - error / total.clamp(min=1e-12)
        if best_r2 is None:
            best_r2, best_alpha = r2, torch.full_like(r2, alpha)
        else:
            better = r2 > best_r2
            best_r2, best_alpha = torch.where(better, r2, best_r2), torch.where(better, alpha, best_alpha)
    assert best_r2 is not None and best_alpha is not None
    return best_alpha, best_r2


def solve_per_coordinate(stats: GramStats, alpha: Float[Tensor, "layer task e"]
                         ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Ridge maps with a penalty per (layer, task, target coordinate), on ``stats``' own standardisation.

    Returns ``weight [layer, task, d, e]`` and ``bias [layer, task, e]`` (float64), ``mean`` and ``scale``
    ``[layer, d]`` (float32).
    """
    mean, scale = stats.standardisation()
    eigenvalues, vectors, rotated = _eigen(stats, scale)
    weight = torch.einsum("ldk,ltke->ltde", vectors, rotated / (eigenvalues[:, None, :, None] + alpha[:, :, None]))
    return weight, stats.intercept(weight, mean, scale), mean, scale


def _eigen(stats: GramStats, scale: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Eigenvalues ``[L, d]`` and vectors ``Q [L, d, d]`` of ``Z̃ᵀZ̃``, and ``QᵀZ̃ᵀ(Y − Ȳ)`` ``[L, T, d, e]``."""
    gram, cross = stats.centred(scale)
    eigenvalues, vectors = torch.linalg.eigh(gram)
    return eigenvalues, vectors, torch.einsum("ldk,ltde->ltke", vectors, cross)


def _chunks(data: Stored, size: int) -> Iterator[Tensor]:
    """``data[:, i:i+size]`` for consecutive ``i``, contiguous (the same values from memory or from a store)."""
    for part in feature_chunks(data, size):
        yield part.contiguous()
