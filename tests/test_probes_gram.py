"""Least squares from sufficient statistics: equal to a direct solve, to scikit-learn, from memory or from disk."""

import numpy as np
import pytest
import torch
from sklearn.linear_model import Ridge
from sklearn.metrics import r2_score

from forethought.errors import DataError, InvalidArgumentError
from forethought.probes.feature_store import FeatureStore
from forethought.probes.gram import GramStats, select_ridge, solve_per_coordinate

pytestmark = pytest.mark.usefixtures("single_thread")


def _data(n=300, seed=0):
    """Features of 2 layers whose means dwarf their spread (the sums' shift must keep them exact), 3 targets."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(2, n, 5, generator=generator, dtype=torch.float64) * 0.1 + 1000
    h = torch.einsum("lnd,de->ne", x - 1000, torch.randn(5, 4, generator=generator, dtype=torch.float64))
    h = h[None] + torch.randn(3, n, 4, generator=generator, dtype=torch.float64) + 7
    return x, h


def _standardised(x, mean, scale):
    return (x - mean[:, None].double()) / scale[:, None].double()


def test_least_squares_from_statistics_equals_a_direct_solve():
    """Chunked float64 sums about the first chunk's means give torch.linalg.lstsq's maps to 1e-8."""
    x, h = _data()
    stats = GramStats.accumulate(x, h, chunk=64)
    mean, scale = stats.standardisation()
    weight = stats.solve(scale, penalty=0.0)
    bias = stats.intercept(weight, mean, scale)
    z = _standardised(x, mean, scale)
    for layer in range(2):
        design = torch.cat([z[layer], torch.ones(300, 1, dtype=torch.float64)], 1)
        for task in range(3):
            direct = torch.linalg.lstsq(design, h[task]).solution  # [d + 1, e]
            torch.testing.assert_close(weight[layer, task], direct[:-1], rtol=1e-8, atol=1e-8)
            torch.testing.assert_close(bias[layer, task], direct[-1], rtol=1e-8, atol=1e-8)
    torch.testing.assert_close(mean.double(), x.mean(1), rtol=1e-7, atol=0)  # float32 of the exact mean
    torch.testing.assert_close(scale.double(), x.std(1, unbiased=False), rtol=1e-5, atol=0)


def test_statistics_from_stores_equal_those_from_memory(tmp_path):
    """The same chunks from an on-disk store, bit for bit."""
    x, h = _data()
    x, h = x.float(), h.float()
    features = FeatureStore.create(tmp_path / "x.bin", n_layers=2, d_model=5)
    targets = FeatureStore.create(tmp_path / "h.bin", n_layers=3, d_model=4)
    for start in range(0, 300, 70):
        features.append(x[:, start : start + 70].transpose(0, 1))
        targets.append(h[:, start : start + 70].transpose(0, 1))
    in_memory, stored = GramStats.accumulate(x, h, chunk=64), GramStats.accumulate(features, targets, chunk=64)
    for name in ("x_shift", "y_shift", "x_sum", "xx", "y_sum", "yy", "xy"):
        assert torch.equal(getattr(stored, name), getattr(in_memory, name)), name
    features.close()
    targets.close()


def test_ridge_penalties_per_coordinate_match_scikit_learn():
    """The held-out R² of every penalty and coordinate, the choice, and the refit on both splits are those of
    scikit-learn's Ridge on standardised features (a brute-force loop over the penalties)."""
    x, h = _data(n=400, seed=1)
    fit_rows, val_rows = slice(0, 280), slice(280, None)
    alphas = [1e-2, 1.0, 30.0, 1e3, 1e5]
    fit = GramStats.accumulate(x[:, fit_rows], h[:, fit_rows], chunk=50)
    val = GramStats.accumulate(x[:, val_rows], h[:, val_rows], chunk=50, like=fit)
    alpha, r2 = select_ridge(fit, val, torch.tensor(alphas, dtype=torch.float64))
    both = fit + val
    weight, bias, mean, scale = solve_per_coordinate(both, alpha)
    fit_mean, fit_scale = fit.standardisation()
    for layer in range(2):
        z_fit = _standardised(x[:, fit_rows], fit_mean, fit_scale)[layer].numpy()
        z_val = _standardised(x[:, val_rows], fit_mean, fit_scale)[layer].numpy()
        z_all = _standardised(x, mean, scale)[layer].numpy()
        for task in range(3):
            scores = np.stack([r2_score(h[task, val_rows].numpy(), Ridge(alpha=a).fit(z_fit, h[task, fit_rows].numpy())
                                        .predict(z_val), multioutput="raw_values") for a in alphas])  # [alpha, e]
            best = scores.argmax(0)
            np.testing.assert_allclose(alpha[layer, task].numpy(), np.asarray(alphas)[best])
            np.testing.assert_allclose(r2[layer, task].numpy(), scores[best, np.arange(4)], rtol=1e-7, atol=1e-9)
            refit = Ridge(alpha=np.asarray(alphas)[best]).fit(z_all, h[task].numpy())
            np.testing.assert_allclose(weight[layer, task].numpy(), refit.coef_.T, rtol=1e-6, atol=1e-8)
            np.testing.assert_allclose(bias[layer, task].numpy(), refit.intercept_, rtol=1e-7)


def test_bad_statistics():
    x, h = _data(n=20)
    a = GramStats.accumulate(x, h)
    with pytest.raises(InvalidArgumentError, match="different centres"):
        _ = a + GramStats.accumulate(x + 1, h)
    with pytest.raises(InvalidArgumentError, match="examples"):
        GramStats.accumulate(x, h[:, :10])
    with pytest.raises(DataError, match="empty"):
        GramStats.accumulate(x[:, :0], h[:, :0])
