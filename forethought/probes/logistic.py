"""scikit-learn logistic-regression probes, one fit per (layer, task), returned as :class:`LinearProbes`.

For small label sets (a top-k label space, a synthetic task) this is the trusted reference: L2-regularised
multinomial logistic regression solved to convergence by L-BFGS on the same standardised features the
batched trainer uses. It fits the pairs one after another, so it is slow for big sweeps; use
:func:`forethought.probes.vocabulary.fit_vocab_probes` there. Classes absent from a probe's training labels
get bias ``-inf`` (probability 0), as scikit-learn cannot predict them either.

Example:
    >>> import torch
    >>> x = torch.randn(1, 200, 4)
    >>> y = (x[0, :, 1] > 0).long()[None]
    >>> probes = fit_logistic_probes(x, y, n_classes=2)
    >>> bool((probes.predict(x)[0, 0] == y[0]).float().mean() > 0.95)
    True
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from forethought.errors import check_positive
from forethought.probes.linear import LinearProbes, Task, feature_stats
from forethought.probes.targets import LabelSpace
from forethought.probes.vocabulary import probe_axes


@dataclass
class LogisticProbeConfig:
    """Settings passed to ``sklearn.linear_model.LogisticRegression``.

    Attributes:
        C: inverse L2 regularisation strength (scikit-learn's convention: the penalty is ``||w||² / (2C)``
            against the *summed* log-loss).
        max_iter: L-BFGS iterations at most.
        tol: convergence tolerance.
        progress: show a progress bar over the fits.
    """

    C: float = 1.0
    max_iter: int = 1000
    tol: float = 1e-4
    progress: bool = True

    def __post_init__(self) -> None:
        check_positive("C", self.C)
        check_positive("max_iter", self.max_iter, integer=True)


def fit_logistic_probes(
    features: Float[Tensor, "layer n d_model"],
    labels: Int[Tensor, "task n"],
    *,
    n_classes: int | None = None,
    config: LogisticProbeConfig | None = None,
    layers: Sequence[int] | None = None,
    tasks: Sequence[Task] | None = None,
    label_space: LabelSpace | None = None,
) -> LinearProbes:
    """Fit one scikit-learn ``LogisticRegression`` per (layer, task) pair.

    Args and returns as :func:`forethought.probes.vocabulary.fit_vocab_probes` (there is no held-out split:
    the solver runs to convergence).
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    config = config or LogisticProbeConfig()
    label_space, layers, tasks = probe_axes(features, labels, n_classes, label_space, layers, tasks)
    n_classes = label_space.n_classes
    n_layers, _, d_model = features.shape
    n_tasks = labels.shape[0]

    mean, scale = feature_stats(features.cpu())
    weight = torch.zeros(n_layers, n_tasks, d_model, n_classes, device="cpu")  # scikit-learn fits on the host
    bias = torch.full((n_layers, n_tasks, n_classes), float("-inf"), device="cpu")
    labels_np = labels.cpu().long().numpy()
    not_converged = 0
    pairs = [(i, j) for i in range(n_layers) for j in range(n_tasks)]
    for i, j in tqdm(pairs, desc="logistic probes", disable=not config.progress, unit="probe"):
        x = ((features[i].cpu().float() - mean[i]) / scale[i]).numpy()
        y = labels_np[j]
        classes = np.unique(y)
        if len(classes) == 1:  # a constant task: predict its only class
            bias[i, j, classes[0]] = 0.0
            continue
        model = LogisticRegression(C=config.C, max_iter=config.max_iter, tol=config.tol)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            model.fit(x, y)
        not_converged += any(issubclass(w.category, ConvergenceWarning) for w in caught)
        coef, intercept = torch.from_numpy(model.coef_).float(), torch.from_numpy(model.intercept_).float()
        if len(classes) == 2:  # scikit-learn keeps one row: logit(class 1) - logit(class 0)
            coef = torch.cat([torch.zeros_like(coef), coef])
            intercept = torch.cat([torch.zeros_like(intercept), intercept])
        index = torch.from_numpy(classes).long()
        weight[i, j][:, index] = coef.T
        bias[i, j, index] = intercept
    meta = {"method": "logistic", "config": asdict(config), "not_converged": not_converged}
    return LinearProbes(weight=weight, bias=bias, mean=mean, scale=scale, layers=layers, tasks=tasks,
                        label_space=label_space, meta=meta)
