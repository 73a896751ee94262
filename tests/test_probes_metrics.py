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


def test_other_is_never_a_prediction_under_a_top_k_space():
    """"other" is never a prediction: in a top-2 space of 10 tokens, a predictor certain of "other" predicts its
    best kept token (0, by its tied logits), which is right once in six, never more than coverage, although most
    targets are "other"; its cross-entropy is over the vocabulary."""
    import math

    from forethought.probes.targets import LabelSpace

    space = LabelSpace(d_vocab=10, token_ids=(0, 1))
    labels = space.encode(torch.tensor([[0, 5, 6, 7, 8, 9]]))  # one kept target, five "other"
    logits = torch.zeros(1, 6, 3)
    logits[..., space.other] = 50.0  # certain of "other"
    accumulator = MetricAccumulator(space=space)
    accumulator.add(logits, labels)
    result = accumulator.result()
    assert result["top1"].item() == 1 / 6 and result["top5"].item() == 1 / 6  # at most coverage, 1/6
    assert result["top1_in_space"].item() == 1
    assert result["cross_entropy"].item() == pytest.approx((50 + 5 * math.log(8)) / 6, rel=1e-4)


def test_a_top_k_probe_scores_as_its_whole_vocabulary_twin_on_the_kept_targets():
    """On a known-answer stream (the hidden state is the answer's one-hot code) the probes over the whole vocabulary
    and over the top-8 + "other" are both right on every target they can name: top-1 is the same on the kept
    targets, and the top-k score over all targets is exactly its coverage."""
    from forethought.probes.targets import LabelSpace
    from forethought.probes.vocabulary import VocabProbeConfig, fit_vocab_probes

    generator = torch.Generator().manual_seed(0)
    vocab = 24
    tokens = torch.multinomial(torch.linspace(1, 3, vocab), 3000, replacement=True, generator=generator)
    features = torch.nn.functional.one_hot(tokens, vocab).float()[None] * 4 + 0.01 * torch.randn(
        1, len(tokens), vocab, generator=generator)  # [layer, n, d]
    train, test = slice(0, 2400), slice(2400, None)
    config = VocabProbeConfig(max_epochs=60, lr=0.05, batch_size=256)
    scores = {}
    for space in (LabelSpace.full(vocab), LabelSpace.top_k(tokens[train], k=8, d_vocab=vocab)):
        labels = space.encode(tokens)[None]
        probes = fit_vocab_probes(features[:, train], labels[:, train], config=config, label_space=space)
        accumulator = MetricAccumulator(space=space)
        accumulator.add(probes.logits(features[:, test]).float(), labels[:, test])
        scores[space.name] = accumulator.result()
        scores[space.name]["coverage"] = space.coverage(tokens[test])
    whole, top_k = scores["vocab"], scores["top8+other"]
    assert whole["top1"].item() == 1.0 and top_k["top1_in_space"].item() == 1.0
    assert top_k["top1"].item() == pytest.approx(top_k["coverage"])


def test_random_and_constant_predictors_score_at_chance_under_a_top_k_space():
    """Logits that ignore the input score what guessing the kept tokens scores: a constant predictor its token's
    frequency, a random one about coverage / k, never more than coverage."""
    from forethought.probes.targets import LabelSpace

    generator = torch.Generator().manual_seed(1)
    tokens = torch.randint(0, 50, (20000,), generator=generator)
    space = LabelSpace.top_k(tokens, k=10, d_vocab=50)
    labels = space.encode(tokens)[None]
    constant = torch.zeros(1, len(tokens), space.n_classes)
    constant[..., 3] = 1.0
    constant[..., space.other] = 5.0
    random = torch.randn(1, len(tokens), space.n_classes, generator=generator)
    coverage = space.coverage(tokens)
    for logits, expected in ((constant, (labels == 3).double().mean().item()), (random, coverage / 10)):
        accumulator = MetricAccumulator(space=space)
        accumulator.add(logits, labels)
        top1 = accumulator.result()["top1"].item()
        assert top1 == pytest.approx(expected, abs=0.01) and top1 <= coverage
