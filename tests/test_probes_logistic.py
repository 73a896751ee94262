"""scikit-learn logistic probes as LinearProbes: the same predictions as the scikit-learn pipeline."""

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from forethought.errors import InvalidArgumentError
from forethought.probes.logistic import LogisticProbeConfig, fit_logistic_probes


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    with threadpool_limits(1):
        yield


def _data(classes, n=400, seed=0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(2, n, 6, generator=generator) * torch.tensor([1.0, 5.0, 0.1, 2.0, 1.0, 3.0]) + 2.0
    y = torch.stack([(x[0, :, 0] * 2 + torch.randn(n, generator=generator)).long().clamp(0, classes - 1),
                     torch.randint(0, classes, (n,), generator=generator)])
    return x, y


@pytest.mark.parametrize("classes", [2, 4])
def test_probabilities_match_the_sklearn_pipeline(classes):
    x, y = _data(classes)
    probes = fit_logistic_probes(x, y, n_classes=classes, config=LogisticProbeConfig(progress=False))
    probs = probes.logits(x).softmax(-1)
    for layer in range(2):
        for task in range(2):
            reference = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
            reference.fit(x[layer].numpy(), y[task].numpy())
            expected = np.zeros((x.shape[1], classes))
            expected[:, reference.classes_] = reference.predict_proba(x[layer].numpy())
            np.testing.assert_allclose(probs[layer, task].numpy(), expected, atol=1e-5)


def test_absent_and_constant_classes():
    x = torch.randn(1, 50, 3)
    y = torch.stack([torch.tensor([0, 2] * 25), torch.full((50,), 3)])  # class 1 and 3 unseen / constant task
    probes = fit_logistic_probes(x, y, n_classes=4, config=LogisticProbeConfig(progress=False))
    probs = probes.logits(x).softmax(-1)
    assert torch.all(probs[0, 0, :, [1, 3]] == 0)
    assert torch.all(probs[0, 1].argmax(-1) == 3) and torch.allclose(probs[0, 1, :, 3], torch.ones(50))


def test_bad_inputs():
    x, y = _data(3)
    with pytest.raises(InvalidArgumentError, match="labels must lie"):
        fit_logistic_probes(x, y, n_classes=2)
    with pytest.raises(InvalidArgumentError, match="C=0"):
        LogisticProbeConfig(C=0)
