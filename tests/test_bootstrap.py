"""Bootstrap intervals over sequences: nominal coverage on a metric of known variance, and their errors."""

import pytest
import torch

from forethought.bootstrap import bootstrap_ci, bootstrap_weights
from forethought.errors import DataError, InvalidArgumentError


def test_interval_covers_the_true_mean_at_about_its_nominal_rate():
    """200 seeded experiments, each: 60 sequences of 8 examples, x ~ N(mu, 1) i.i.d.; the 90 % interval of the
    mean over examples must hold mu in about 90 % of them (binomial sd 2.1 %)."""
    generator = torch.Generator().manual_seed(0)
    mu, hits, trials = 0.3, 0, 200
    for trial in range(trials):
        values = mu + torch.randn(60, 8, generator=generator, dtype=torch.float64)
        low, high = bootstrap_ci(values.sum(1), torch.full((60,), 8.0), level=0.9, n_resamples=400, seed=trial)
        hits += int(low <= mu <= high)
    assert 0.84 <= hits / trials <= 0.96


def test_rows_are_resampled_together_and_the_interval_holds_the_estimate():
    values = torch.randn(3, 50, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    low, high = bootstrap_ci(values, seed=0)
    assert low.shape == high.shape == (3,)
    assert torch.all(low < values.mean(-1)) and torch.all(values.mean(-1) < high)
    same_low, _ = bootstrap_ci(values[1], seed=0)
    assert same_low.item() == pytest.approx(low[1].item())  # one resampling for every row
    assert torch.all(bootstrap_weights(50, 7).sum(1) == 50)


@pytest.mark.usefixtures("unchecked_shapes")
def test_bad_input():
    with pytest.raises(InvalidArgumentError, match="level"):
        bootstrap_ci(torch.ones(4), level=1.5)
    with pytest.raises(InvalidArgumentError, match="counts"):
        bootstrap_ci(torch.ones(4), counts=torch.ones(3))
    with pytest.raises(DataError, match="at least one group"):
        bootstrap_ci(torch.ones(2, 0))
