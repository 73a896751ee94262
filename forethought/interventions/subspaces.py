"""Directions and subspaces of the residual stream: from tensors and trained probes, orthonormal bases, placebos.

:func:`as_directions` turns a tensor or a trained probe (``LinearProbes``, ``nn.Linear``, a scikit-learn linear
model, a ridge probe) into rows ``[k, d_model]`` in raw residual-stream coordinates; :func:`orthonormal_basis`
spans them; :func:`random_directions` draws seeded norm-matched placebos. The interventions that use them are
in :mod:`~forethought.interventions.directions`.

Example:
    >>> import torch
    >>> from forethought.interventions import as_directions, orthonormal_basis
    >>> basis = orthonormal_basis(as_directions(torch.randn(3, 8)))
    >>> torch.allclose(basis @ basis.T, torch.eye(3), atol=1e-6)
    True
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from forethought.errors import InvalidArgumentError, NumericalError, OutOfRangeError
from forethought.interventions._core import resolve_index

__all__ = ["as_directions", "orthonormal_basis", "random_directions"]


def as_directions(
    source: Any,
    *,
    layer: int | None = None,
    offset: int | None = None,
    control: bool = False,
    tokens: Sequence[int] | int | None = None,
    classes: Sequence[int] | int | None = None,
    center: bool = False,
) -> Float[Tensor, "k d_model"]:
    """Directions in the residual stream, as rows ``[k, d_model]``, from a tensor or a trained probe.

    Accepted sources:

    * a tensor or array ``[d_model]`` or ``[k, d_model]``;
    * :class:`forethought.probes.linear.LinearProbes` (pick ``layer`` and ``offset``, and ``tokens`` or
      ``classes``): the direction of class ``c`` is ``weight[:, c] / scale``, the gradient of the class logit
      with respect to the *raw* residual stream (the probes standardise their features);
    * a ``torch.nn.Linear`` (rows of ``weight``); a scikit-learn linear model (rows of ``coef_``), also inside
      a ``Pipeline`` whose ``StandardScaler`` is folded in; a :class:`forethought.probes.regression.RidgeProbeResult`.

    Args:
        source: the direction(s) or probe.
        layer: which layer's probe of a ``LinearProbes`` stack (in ``"resid"`` depths; default: the only one).
        offset: which offset's probe of a ``LinearProbes`` stack (default: the only one).
        control: take the probe of that offset's control task instead.
        tokens: token ids whose class directions to take (mapped through the probe's label space).
        classes: class indices (rows) to take; default all.
        center: subtract the mean of all class directions first (a softmax probe only uses differences).

    Example:
        >>> import torch
        >>> from forethought.interventions import as_directions
        >>> as_directions(torch.nn.Linear(8, 3), classes=[0, 2]).shape
        torch.Size([2, 8])
    """
    if tokens is not None and classes is not None:
        raise InvalidArgumentError("pass tokens or classes, not both")
    if hasattr(source, "weight") and hasattr(source, "label_space") and getattr(source.weight, "ndim", 0) == 4:
        rows = _linear_probes_rows(source, layer, offset, control)
        if tokens is not None:
            classes = source.label_space.encode(torch.as_tensor(tokens, device="cpu").reshape(-1)).tolist()
    elif isinstance(source, torch.nn.Linear):
        rows = source.weight.detach()
    elif hasattr(source, "estimator") and hasattr(source, "r2"):  # RidgeProbeResult
        rows = _sklearn_rows(source.estimator)
    elif hasattr(source, "coef_") or hasattr(source, "steps"):
        rows = _sklearn_rows(source)
    elif isinstance(source, (Tensor, np.ndarray, list, tuple)):
        rows = (source if isinstance(source, Tensor)
                else torch.as_tensor(np.asarray(source), device="cpu"))
    else:
        raise InvalidArgumentError(f"cannot take directions from {type(source).__name__}; pass a tensor "
                                   "[d_model] or [k, d_model], a LinearProbes, an nn.Linear or a scikit-learn model")
    if tokens is not None and classes is None:
        raise InvalidArgumentError("tokens= needs a probe with a label space (LinearProbes); use classes=")
    rows = rows.detach().float().cpu() if isinstance(rows, Tensor) else torch.as_tensor(rows, device="cpu").float()
    if rows.ndim == 1:
        rows = rows.unsqueeze(0)
    if rows.ndim != 2 or rows.shape[0] == 0:
        raise InvalidArgumentError(f"directions must be [d_model] or [k, d_model]; got shape {tuple(rows.shape)}")
    if center:
        rows = rows - rows.mean(0, keepdim=True)
    if classes is not None:
        picked = [classes] if isinstance(classes, int) else list(classes)
        rows = rows[[resolve_index(c, rows.shape[0], "class") for c in picked]]  # in the order given
    if not torch.isfinite(rows).all():
        raise NumericalError("the directions hold NaN or infinite values")
    return rows


def orthonormal_basis(directions: Float[Tensor, "*rows d_model"], tol: float = 1e-6) -> Float[Tensor, "k d_model"]:
    """An orthonormal basis (rows) of the span of ``directions``; raises if they are linearly dependent.

    Example:
        >>> import torch
        >>> from forethought.interventions import orthonormal_basis
        >>> basis = orthonormal_basis(torch.tensor([[3.0, 0.0, 0.0], [1.0, 1.0, 0.0]]))
        >>> torch.allclose(basis @ basis.T, torch.eye(2))
        True
    """
    directions = as_directions(directions).double()
    if directions.shape[0] > directions.shape[1]:
        raise InvalidArgumentError(f"{directions.shape[0]} directions cannot be independent in "
                                   f"d_model={directions.shape[1]} dimensions")
    q, r = torch.linalg.qr(directions.T)
    diagonal = r.diagonal().abs()
    if diagonal.min() <= tol * max(float(diagonal.max()), 1e-30):
        raise InvalidArgumentError("the directions are zero or linearly dependent; pass independent directions")
    return q.T.float()


def random_directions(like: Float[Tensor, "*rows d_model"], seed: int = 0) -> Float[Tensor, "k d_model"]:
    """Seeded Gaussian directions with the row norms of ``like`` (a norm-matched placebo).

    Example:
        >>> import torch
        >>> from forethought.interventions import random_directions
        >>> like = torch.tensor([[3.0, 4.0, 0.0]])
        >>> random_directions(like, seed=1).norm(dim=-1)
        tensor([5.])
    """
    like = as_directions(like)
    generator = torch.Generator(device="cpu").manual_seed(seed)  # the same directions on every machine
    random = torch.randn(like.shape, generator=generator, device="cpu").to(like.device)
    return random / random.norm(dim=-1, keepdim=True) * like.norm(dim=-1, keepdim=True)


def _linear_probes_rows(probes: Any, layer: int | None, offset: int | None, control: bool) -> Tensor:
    """Class directions ``weight[l, task, :, c] / scale[l]`` of one probe in a ``LinearProbes`` stack."""
    if layer is None and len(probes.layers) == 1:
        layer = probes.layers[0]
    if layer not in probes.layers:
        raise OutOfRangeError(f"layer={layer!r} is not among the probes' layers {list(probes.layers)}")
    tasks = [(task.offset, task.control) for task in probes.tasks]
    if offset is None and len({t for t in tasks if t[1] == control}) == 1:
        offset = next(t[0] for t in tasks if t[1] == control)
    if (offset, control) not in tasks:
        raise OutOfRangeError(f"offset={offset!r} (control={control}) is not among the probes' tasks "
                              f"{[task.name for task in probes.tasks]}")
    li, ti = probes.layers.index(layer), tasks.index((offset, control))
    return (probes.weight[li, ti] / probes.scale[li].unsqueeze(-1)).T


def _sklearn_rows(estimator: Any) -> Tensor:
    """Rows of ``coef_`` in raw feature space (a ``StandardScaler`` in a pipeline is folded in)."""
    scale = None
    if hasattr(estimator, "steps"):
        for _, step in estimator.steps[:-1]:
            if hasattr(step, "scale_") and step.scale_ is not None:
                scale = np.asarray(step.scale_) if scale is None else scale * np.asarray(step.scale_)
            elif not hasattr(step, "mean_"):
                raise InvalidArgumentError(f"cannot fold pipeline step {type(step).__name__} into a direction")
        estimator = estimator.steps[-1][1]
    if not hasattr(estimator, "coef_"):
        raise InvalidArgumentError(f"{type(estimator).__name__} has no coef_; is it fitted and linear?")
    coef = np.atleast_2d(np.asarray(estimator.coef_, dtype=np.float64))
    if scale is not None:
        coef = coef / scale
    return torch.from_numpy(coef).float()
