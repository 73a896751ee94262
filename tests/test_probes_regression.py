import numpy as np
import pytest
import torch
from sklearn.linear_model import Ridge
from sklearn.model_selection import GridSearchCV, PredefinedSplit
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from forethought.errors import DataError, InvalidArgumentError, NumericalError
from forethought.probes.regression import DEFAULT_ALPHAS, fit_ridge_probe, split_rows


def _data(n=800, d=16, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)), rng


def test_perfect_feature_has_r2_one():
    features, _ = _data()
    result = fit_ridge_probe(features, 3.0 * features[:, 2] + 1.0)
    assert isinstance(result.r2, float) and result.r2 > 0.999
    assert result.r2 == result.r2_raw


def test_noise_has_r2_near_zero_never_large_negative():
    features, rng = _data()
    result = fit_ridge_probe(features, rng.normal(size=len(features)), seed=1)
    assert 0.0 <= result.r2 < 0.02
    assert result.r2_raw > -0.05
    assert result.alpha >= 1e3  # the validation split picked a penalty that predicts (almost) the mean


def test_collapsed_representation_has_r2_zero():
    _, rng = _data()
    constant = np.ones((500, 8))
    result = fit_ridge_probe(constant, rng.normal(size=500))
    assert result.r2 == 0.0 and result.r2_raw > -0.05


def test_a_nonlinear_function_of_a_feature_is_not_read_linearly():
    # sin(8 x) of a feature x is not linearly decodable from x: R² ≈ 0 (why the task keeps F high).
    features, _ = _data(n=2000, d=4)
    result = fit_ridge_probe(features, np.sin(8.0 * features[:, 0]))
    assert result.r2 < 0.02


def test_matches_sklearn_grid_search_per_target():
    """Reference: for each target, GridSearchCV over the same penalties on the same validation split."""
    features, rng = _data(n=400, d=12, seed=3)
    weights = rng.normal(size=(12, 3))
    targets = features @ weights + rng.normal(scale=[0.5, 3.0, 10.0], size=(400, 3))
    alphas = [0.01, 0.1, 1.0, 10.0, 100.0, 1e3, 1e4]
    result = fit_ridge_probe(features, targets, alphas=alphas, seed=5)
    train, validation, test = split_rows(400, None, 0.2, 0.2, seed=5)
    fold = np.concatenate([np.full(len(train), -1), np.zeros(len(validation), dtype=int)])
    rows = np.concatenate([train, validation])
    for column in range(3):
        search = GridSearchCV(make_pipeline(StandardScaler(), Ridge()), {"ridge__alpha": alphas},
                              cv=PredefinedSplit(fold)).fit(features[rows], targets[rows, column])
        assert result.alpha[column] == search.best_params_["ridge__alpha"]
        np.testing.assert_allclose(result.validation_r2[column], search.best_score_, rtol=1e-9)
        np.testing.assert_allclose(result.r2_raw[column], search.score(features[test], targets[test, column]),
                                   rtol=1e-9)
    assert result.n_train == len(train) and result.n_validation == len(validation) and result.n_test == len(test)
    np.testing.assert_allclose(result.predict(features[:5]), result.estimator.predict(features[:5]))
    assert result.predict(features[:5]).shape == (5, 3)


def test_groups_stay_in_one_split():
    groups = np.repeat(np.arange(50), 7)
    splits = split_rows(len(groups), groups, 0.2, 0.2, seed=0)
    owners = [set(groups[rows]) for rows in splits]
    assert not (owners[0] & owners[1] or owners[0] & owners[2] or owners[1] & owners[2])
    assert sum(len(rows) for rows in splits) == len(groups)
    assert [len(o) for o in owners] == [30, 10, 10]


def test_accepts_tensors_and_is_deterministic():
    features = torch.randn(300, 6, generator=torch.Generator().manual_seed(0))
    targets = torch.stack([features[:, 0], features[:, 1] ** 2], dim=1)
    first, second = fit_ridge_probe(features, targets, seed=2), fit_ridge_probe(features.numpy(), targets, seed=2)
    np.testing.assert_array_equal(first.r2, second.r2)
    assert first.r2.shape == (2,) and first.r2[0] > 0.999 and first.r2[1] < 0.05


def test_default_grid_is_log_spaced_and_reaches_the_mean_predictor():
    ratios = np.diff(np.log10(DEFAULT_ALPHAS))
    np.testing.assert_allclose(ratios, ratios[0])
    assert min(DEFAULT_ALPHAS) <= 1e-2 and max(DEFAULT_ALPHAS) >= 1e6


@pytest.mark.usefixtures("unchecked_shapes")
def test_bad_inputs():
    features, rng = _data(n=50, d=3)
    with pytest.raises(InvalidArgumentError, match="targets must have shape"):
        fit_ridge_probe(features, np.zeros(49))
    with pytest.raises(InvalidArgumentError, match=r"features must be a non-empty \[n, d\]"):
        fit_ridge_probe(np.zeros(50), np.zeros(50))
    bad = features.copy()
    bad[3, 1] = np.nan
    with pytest.raises(NumericalError, match="features"):
        fit_ridge_probe(bad, np.zeros(50))
    with pytest.raises(NumericalError, match="targets"):
        fit_ridge_probe(features, np.full(50, np.inf))
    with pytest.raises(InvalidArgumentError, match="alphas"):
        fit_ridge_probe(features, np.zeros(50), alphas=[1.0, 0.0])
    with pytest.raises(InvalidArgumentError, match="test_fraction=1.5"):
        fit_ridge_probe(features, np.zeros(50), test_fraction=1.5)
    with pytest.raises(InvalidArgumentError, match="leaves no training rows"):
        fit_ridge_probe(features, np.zeros(50), val_fraction=0.5, test_fraction=0.5)
    with pytest.raises(InvalidArgumentError, match="groups has 3 labels"):
        fit_ridge_probe(features, np.zeros(50), groups=[0, 1, 2])
    with pytest.raises(DataError, match="too few"):
        fit_ridge_probe(features[:4], np.zeros(4))
