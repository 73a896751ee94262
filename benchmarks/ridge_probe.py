"""Ridge probes: ``fit_ridge_probe`` (one multi-target fit per penalty) vs scikit-learn's grid search per target.

Both choose each target's penalty on the same validation rows from the same grid, refit on train + validation and
score the test rows; the reference is ``GridSearchCV(StandardScaler + Ridge, cv=PredefinedSplit)``, run once per
target. The data has the shape of the synthetic experiment's probes (residual streams of several layers, targets
sin(F x_{n-i}) for several lags and their sum). The table reports each side's time, the largest R² difference and
the time ratio (measured in the same run, same thread count).

    python benchmarks/ridge_probe.py [--rows 5632] [--features 64] [--targets 7] [--layers 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from sklearn.linear_model import Ridge
from sklearn.model_selection import GridSearchCV, PredefinedSplit
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from forethought.probes.regression import DEFAULT_ALPHAS, fit_ridge_probe, split_rows


def make_layer(rng: np.random.Generator, rows: int, features: int, targets: int) -> tuple[np.ndarray, np.ndarray]:
    """Features that carry some targets linearly, some nonlinearly, and noise."""
    latent = rng.normal(size=(rows, targets))
    mixing = rng.normal(size=(targets, features))
    x = np.tanh(latent) @ mixing + rng.normal(scale=2.0, size=(rows, features))
    y = np.sin(3.0 * latent)
    y[:, 0] = latent[:, 0]
    return x, y


def reference(x: np.ndarray, y: np.ndarray, seed: int) -> np.ndarray:
    train, validation, test = split_rows(len(x), None, 0.2, 0.2, seed)
    rows = np.concatenate([train, validation])
    fold = np.concatenate([np.full(len(train), -1), np.zeros(len(validation), dtype=int)])
    scores = []
    for column in range(y.shape[1]):
        search = GridSearchCV(make_pipeline(StandardScaler(), Ridge()), {"ridge__alpha": list(DEFAULT_ALPHAS)},
                              cv=PredefinedSplit(fold)).fit(x[rows], y[rows, column])
        scores.append(search.score(x[test], y[test, column]))
    return np.array(scores)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=5632)
    parser.add_argument("--features", type=int, default=64)
    parser.add_argument("--targets", type=int, default=7)
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    data = [make_layer(rng, args.rows, args.features, args.targets) for _ in range(args.layers)]
    with threadpool_limits(args.threads):
        start = time.perf_counter()
        ours = [fit_ridge_probe(x, y, seed=0).r2_raw for x, y in data]
        ours_seconds = time.perf_counter() - start
        start = time.perf_counter()
        theirs = [reference(x, y, seed=0) for x, y in data]
        theirs_seconds = time.perf_counter() - start
    difference = max(float(np.abs(a - b).max()) for a, b in zip(ours, theirs, strict=True))
    print(f"{args.layers} layers x {args.targets} targets, {args.rows} rows x {args.features} features, "
          f"{len(DEFAULT_ALPHAS)} penalties, {args.threads} thread(s)")
    print(f"{'method':<34} {'seconds':>8} {'mean R2':>8}")
    print(f"{'fit_ridge_probe':<34} {ours_seconds:>8.2f} {np.mean(ours):>8.4f}")
    print(f"{'GridSearchCV per target (sklearn)':<34} {theirs_seconds:>8.2f} {np.mean(theirs):>8.4f}")
    print(f"max |R2 difference| {difference:.2e}; speed-up {theirs_seconds / ours_seconds:.1f}x")


if __name__ == "__main__":
    main()
