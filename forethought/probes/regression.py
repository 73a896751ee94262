"""Ridge regression probes: how much of a continuous target can a linear read-out recover from features?

:func:`fit_ridge_probe` splits the rows into train / validation / test (optionally keeping groups, such as
the positions of one sequence, together), standardises the features on the training rows, chooses the ridge
penalty for each target from a log-spaced grid by validation R², refits on train + validation and reports R² on
the held-out test rows.

The grid reaches penalties large enough that the probe predicts the training mean, so a representation that
carries no information about the target scores R² ≈ 0 rather than a large negative number; ``r2`` is
additionally floored at 0 (``r2_raw`` keeps the unfloored score).

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> features = rng.normal(size=(600, 8))
    >>> result = fit_ridge_probe(features, np.stack([features[:, 0], rng.normal(size=600)], axis=1))
    >>> result.r2.round(2).tolist()  # a feature the probe can read, and noise
    [1.0, 0.0]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from jaxtyping import Float

from forethought.errors import DataError, InvalidArgumentError, NumericalError

#: Ridge penalties tried by default (on standardised features), from almost none to "predict the mean".
DEFAULT_ALPHAS: tuple[float, ...] = tuple(float(a) for a in np.logspace(-3, 7, 21))


@dataclass(frozen=True)
class RidgeProbeResult:
    """What :func:`fit_ridge_probe` found. Per-target fields are floats for a 1-D target, arrays ``[k]`` otherwise.

    Attributes:
        r2: held-out (test) R², floored at 0.
        r2_raw: held-out R² as computed (can be slightly negative).
        alpha: the ridge penalty chosen on the validation rows.
        validation_r2: the validation R² of the chosen penalty.
        estimator: ``StandardScaler`` + ``Ridge`` refitted on train + validation rows with the chosen penalties.
        n_train, n_validation, n_test: rows in each split.
    """

    r2: float | np.ndarray
    r2_raw: float | np.ndarray
    alpha: float | np.ndarray
    validation_r2: float | np.ndarray
    estimator: Any  # sklearn.pipeline.Pipeline
    n_train: int
    n_validation: int
    n_test: int

    def predict(self, features: Float[Any, "n d"]) -> np.ndarray:
        """Predictions of the refitted probe for new rows (``[n]`` or ``[n, k]``)."""
        return self.estimator.predict(_as_matrix(features, "features"))


def fit_ridge_probe(
    features: Float[Any, "n d"],
    targets: Float[Any, " n"] | Float[Any, "n k"],
    *,
    alphas: tuple[float, ...] | list[float] = DEFAULT_ALPHAS,
    val_fraction: float = 0.2,
    test_fraction: float = 0.2,
    groups: Any = None,
    seed: int = 0,
) -> RidgeProbeResult:
    """Fit a ridge probe from ``features`` to each column of ``targets`` and score it on held-out rows.

    Args:
        features: ``[n, d]`` array or tensor (one row per sample, e.g. a residual-stream vector).
        targets: ``[n]`` or ``[n, k]``; each column gets its own penalty.
        alphas: candidate ridge penalties (positive).
        val_fraction: share of rows (or groups) used to choose the penalty.
        test_fraction: share of rows (or groups) held out for the reported R².
        groups: optional ``[n]`` labels; rows sharing a label land in the same split (e.g. a sequence id, so that
            no sequence contributes to both fitting and scoring).
        seed: seed of the random split.

    Raises:
        InvalidArgumentError: shapes that do not match, fractions outside (0, 1), a non-positive penalty.
        NumericalError: NaN or infinite features or targets.
        DataError: too few rows (or groups) to fill all three splits.

    Example:
        >>> import numpy as np
        >>> x = np.random.default_rng(1).normal(size=(300, 4))
        >>> result = fit_ridge_probe(x, 2 * x[:, 1] - x[:, 3], seed=0)
        >>> round(result.r2, 3), result.n_train + result.n_validation + result.n_test
        (1.0, 300)
    """
    x = _as_matrix(features, "features")
    y = np.asarray(_numpy(targets), dtype=np.float64)
    if y.ndim not in (1, 2) or len(y) != len(x):
        raise InvalidArgumentError(
            f"targets must have shape [n] or [n, k] with n={len(x)} rows like features; got {tuple(y.shape)}"
        )
    if not np.isfinite(y).all():
        raise NumericalError("targets contain NaN or infinite values")
    alphas = np.asarray(alphas, dtype=np.float64).ravel()
    if alphas.size == 0 or not (alphas > 0).all():
        raise InvalidArgumentError(f"alphas={alphas.tolist()!r} is not allowed; expected positive penalties")
    train, validation, test = split_rows(len(x), groups, val_fraction, test_fraction, seed)
    from sklearn.linear_model import Ridge  # imported here: scikit-learn is slow to import
    from sklearn.metrics import r2_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler


    columns = y.reshape(len(y), -1)
    scaler = StandardScaler().fit(x[train])
    x_train, x_validation = scaler.transform(x[train]), scaler.transform(x[validation])
    scores = np.stack([
        r2_score(columns[validation], Ridge(alpha=alpha).fit(x_train, columns[train]).predict(x_validation)
                 .reshape(len(validation), -1), multioutput="raw_values")
        for alpha in alphas
    ])  # [alpha, target]
    best = scores.argmax(axis=0)
    chosen = alphas[best]

    fit_rows = np.concatenate([train, validation])
    ridge_alpha = chosen if y.ndim == 2 else float(chosen[0])
    estimator = make_pipeline(StandardScaler(), Ridge(alpha=ridge_alpha)).fit(x[fit_rows], y[fit_rows])
    predicted = estimator.predict(x[test]).reshape(len(test), -1)
    r2_raw = r2_score(columns[test], predicted, multioutput="raw_values")

    def shaped(values: np.ndarray) -> float | np.ndarray:
        return values if y.ndim == 2 else float(values[0])

    return RidgeProbeResult(
        r2=shaped(np.maximum(r2_raw, 0.0)),
        r2_raw=shaped(r2_raw),
        alpha=shaped(chosen),
        validation_r2=shaped(scores[best, np.arange(columns.shape[1])]),
        estimator=estimator,
        n_train=len(train),
        n_validation=len(validation),
        n_test=len(test),
    )


def split_rows(
    n: int, groups: Any, val_fraction: float, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row indices of the train, validation and test splits that :func:`fit_ridge_probe` uses.

    Whole groups go to one split when ``groups`` is given; otherwise rows are split individually.

    Example:
        >>> train, validation, test = split_rows(10, None, 0.2, 0.2, seed=0)
        >>> len(train), len(validation), len(test)
        (6, 2, 2)
    """
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < value < 1.0:
            raise InvalidArgumentError(f"{name}={value!r} is not allowed; expected a number in (0, 1)")
    if val_fraction + test_fraction >= 1.0:
        raise InvalidArgumentError(
            f"val_fraction + test_fraction = {val_fraction + test_fraction:g} leaves no training "
            "rows; keep their sum below 1"
        )
    labels = np.arange(n) if groups is None else np.asarray(_numpy(groups)).ravel()
    if len(labels) != n:
        raise InvalidArgumentError(f"groups has {len(labels)} labels for {n} rows; pass one label per row")
    unique, inverse = np.unique(labels, return_inverse=True)
    order = np.random.default_rng(seed).permutation(len(unique))
    n_test = round(test_fraction * len(unique))
    n_validation = round(val_fraction * len(unique))
    split_of_group = np.zeros(len(unique), dtype=np.int64)  # 0 train, 1 validation, 2 test
    split_of_group[order[:n_test]] = 2
    split_of_group[order[n_test : n_test + n_validation]] = 1
    split = split_of_group[inverse]
    rows = np.flatnonzero(split == 0), np.flatnonzero(split == 1), np.flatnonzero(split == 2)
    if min(len(part) for part in rows) < 2:  # R² needs at least two rows in every split
        kind = "rows" if groups is None else "groups"
        raise DataError(f"{len(unique)} {kind} are too few to split into train, validation and test with at least "
                        "2 rows each; pass more samples")
    return rows


def _as_matrix(features: Any, name: str) -> np.ndarray:
    x = np.asarray(_numpy(features), dtype=np.float64)
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise InvalidArgumentError(f"{name} must be a non-empty [n, d] array; got shape {tuple(x.shape)}")
    if not np.isfinite(x).all():
        raise NumericalError(f"{name} contain NaN or infinite values")
    return x


def _numpy(value: Any) -> Any:
    """Tensors (on any device, with or without grad) become numpy arrays; anything else is left alone."""
    if hasattr(value, "detach"):
        return value.detach().cpu().numpy()
    return value
