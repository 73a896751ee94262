"""Top-k accuracy and cross-entropy against scikit-learn."""

import numpy as np
import pytest
import torch
from sklearn.metrics import log_loss, top_k_accuracy_score

from forethought.errors import InvalidArgumentError
from forethought.probes.metrics import MetricAccumulator, cross_entropy, top_k_accuracy


def _data(seed=0, n=300, classes=7):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(2, 3, n, classes, generator=generator), torch.randint(0, classes, (3, n), generator=generator)


@pytest.mark.parametrize("k", [1, 3, 5])
def test_top_k_matches_sklearn(k):
    logits, labels = _data()
    ours = top_k_accuracy(logits, labels, k=k)  # [2, 3]: labels broadcast over the first axis
    for i in range(2):
        for j in range(3):
            expected = top_k_accuracy_score(labels[j].numpy(), logits[i, j].numpy(), k=k, labels=np.arange(7))
            assert ours[i, j].item() == pytest.approx(expected)


def test_cross_entropy_matches_sklearn():
    logits, labels = _data(1)
    ours = cross_entropy(logits, labels)
    for i in range(2):
        for j in range(3):
            expected = log_loss(labels[j].numpy(), logits[i, j].double().softmax(-1).numpy(), labels=np.arange(7))
            assert ours[i, j].item() == pytest.approx(expected, rel=1e-5)


def test_accumulator_over_chunks_equals_one_pass():
    logits, labels = _data(2, n=301)
    accumulator = MetricAccumulator()
    for start in range(0, 301, 64):
        accumulator.add(logits[..., start : start + 64, :], labels[:, start : start + 64])
    result = accumulator.result()
    torch.testing.assert_close(result["top1"].float(), top_k_accuracy(logits, labels, 1))
    torch.testing.assert_close(result["top5"].float(), top_k_accuracy(logits, labels, 5))
    torch.testing.assert_close(result["cross_entropy"].float(), cross_entropy(logits, labels))


@pytest.mark.usefixtures("unchecked_shapes")
def test_k_larger_than_classes_and_bad_shapes():
    logits, labels = _data(3, classes=3)
    assert torch.all(top_k_accuracy(logits, labels, k=5) == 1)
    with pytest.raises(InvalidArgumentError):
        top_k_accuracy(logits, labels[:, :10])
    with pytest.raises(InvalidArgumentError, match="empty"):
        MetricAccumulator().result()


def test_a_constant_other_predictor_scores_zero_under_a_top_k_space():
    """Predicting "other" is never a hit: in a top-2 space of 10 tokens, a predictor that always says "other"
    scores 0 top-1 even though most targets are "other"; its cross-entropy is over the vocabulary."""
    import math

    from forethought.probes.targets import LabelSpace

    space = LabelSpace(d_vocab=10, token_ids=(0, 1))
    labels = space.encode(torch.tensor([[0, 5, 6, 7, 8, 9]]))  # one kept target, five "other"
    logits = torch.zeros(1, 6, 3)
    logits[..., space.other] = 50.0  # certain of "other"
    accumulator = MetricAccumulator(space=space)
    accumulator.add(logits, labels)
    result = accumulator.result()
    assert result["top1"].item() == 0 and result["top5"].item() == 1 / 6  # top-5 holds the kept token 0
    assert result["top1_in_space"].item() == 0
    assert result["cross_entropy"].item() == pytest.approx((50 + 5 * math.log(8)) / 6, rel=1e-4)
