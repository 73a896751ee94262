"""Unigram, bigram-at-distance-N and control baselines against slow dictionary references."""

import math
from collections import Counter

import pytest
import torch

from forethought.errors import DataError
from forethought.probes.baselines import BigramBaseline, UnigramBaseline, control_labels


def _stream(seed=0, n=2000, vocab=20, classes=12):
    generator = torch.Generator().manual_seed(seed)
    current = torch.randint(0, vocab, (n,), generator=generator)
    noise = torch.randint(0, classes, (2, n), generator=generator)
    keep = torch.rand(2, n, generator=generator) < 0.6
    labels = torch.where(keep, torch.stack([current % classes, (3 * current) % classes]), noise)
    return current, labels


def _reference_bigram(current, labels, test_current, test_labels, classes, beta=1.0):
    """Plain-Python counting: p(y|x) = (c(x,y) + beta p_uni(y)) / (c(x) + beta), ranked by that score."""
    pairs, singles, uni = Counter(), Counter(), Counter(labels.tolist())
    for x, y in zip(current.tolist(), labels.tolist(), strict=True):
        pairs[x, y] += 1
        singles[x] += 1
    p_uni = {y: (uni[y] + 1) / (len(labels) + classes) for y in range(classes)}
    top1 = top5 = nll = 0.0
    for x, y in zip(test_current.tolist(), test_labels.tolist(), strict=True):
        score = {c: pairs[x, c] + beta * p_uni[c] for c in range(classes)}
        ranked = sorted(range(classes), key=lambda c: (-score[c], -p_uni[c], c))
        top1 += ranked[0] == y
        top5 += y in ranked[:5]
        nll -= math.log(score[y] / (singles[x] + beta))
    n = len(test_labels)
    return top1 / n, top5 / n, nll / n


def test_bigram_matches_reference():
    current, labels = _stream(0)
    test_current, test_labels = _stream(1, n=500)
    test_current = test_current.clone()
    test_current[:25] = 20  # a token never seen in training falls back to the unigram prediction
    bigram = BigramBaseline.fit(current, labels, n_classes=12, d_vocab=21)
    scores = bigram.score(test_current, test_labels)
    for i in range(2):
        top1, top5, ce = _reference_bigram(current, labels[i], test_current, test_labels[i], 12)
        assert scores["top1"][i].item() == pytest.approx(top1)
        assert scores["top5"][i].item() == pytest.approx(top5)
        assert scores["cross_entropy"][i].item() == pytest.approx(ce, rel=1e-6)


def test_unigram_matches_reference():
    _, labels = _stream(0)
    _, test_labels = _stream(1, n=500)
    scores = UnigramBaseline.fit(labels, n_classes=12).score(test_labels)
    for i in range(2):
        counts = Counter(labels[i].tolist())
        probs = {c: (counts[c] + 1) / (len(labels[i]) + 12) for c in range(12)}
        ranked = sorted(range(12), key=lambda c: (-probs[c], c))
        row = test_labels[i].tolist()
        assert scores["top1"][i].item() == pytest.approx(sum(y == ranked[0] for y in row) / len(row))
        assert scores["top5"][i].item() == pytest.approx(sum(y in ranked[:5] for y in row) / len(row))
        ce = -sum(math.log(probs[y]) for y in row) / len(row)
        assert scores["cross_entropy"][i].item() == pytest.approx(ce, rel=1e-6)


def test_control_labels_follow_the_label_distribution():
    labels = torch.tensor([0] * 900 + [1] * 100)
    table = control_labels(labels, d_vocab=4000, seed=0)
    assert table.shape == (4000,) and set(table.tolist()) == {0, 1}
    assert 0.85 < (table == 0).float().mean() < 0.95
    assert torch.equal(table, control_labels(labels, d_vocab=4000, seed=0))
    assert not torch.equal(table, control_labels(labels, d_vocab=4000, seed=1))


def test_empty_training_split_raises():
    empty = torch.zeros(1, 0, dtype=torch.long)
    with pytest.raises(DataError):
        UnigramBaseline.fit(empty, 3)
    with pytest.raises(DataError):
        BigramBaseline.fit(empty[0], empty, 3, 3)
    with pytest.raises(DataError):
        control_labels(empty[0], 3)


def test_baselines_never_hit_other_in_a_top_k_space():
    """With most targets outside the kept tokens, both baselines would predict "other"; that is never a hit, so
    their top-1 is at most the share of kept targets, and their cross-entropy is over the vocabulary."""
    from forethought.probes.targets import LabelSpace

    current, tokens = _stream(vocab=20, classes=12)
    space = LabelSpace.top_k(tokens, k=2, d_vocab=20)
    labels = space.encode(tokens)
    coverage = space.in_space(labels).double().mean(-1)
    unigram = UnigramBaseline.fit(labels, space.n_classes)
    bigram = BigramBaseline.fit(current, labels, space.n_classes, d_vocab=20, never=space.other)
    pooled_bigram = BigramBaseline.fit(current, labels, space.n_classes, d_vocab=20)
    for scores, pooled in ((unigram.score(labels, space), unigram.score(labels)),
                           (bigram.score(current, labels, space), pooled_bigram.score(current, labels))):
        assert torch.all(scores["top1"] <= coverage + 1e-12)
        assert torch.all(scores["top1"] < pooled["top1"])  # scored inside the space, "other" looked like a hit
        assert torch.all(scores["cross_entropy"] > pooled["cross_entropy"])
    # "other" is the most frequent class, yet the unigram predicts the most frequent kept token: as often right
    # as the whole vocabulary's unigram, whose most frequent token is that one
    whole = UnigramBaseline.fit(tokens, 20).score(tokens)["top1"]
    torch.testing.assert_close(unigram.score(labels, space)["top1"], whole)
    assert whole.min() > 0


def test_bigram_predicts_the_best_kept_token():
    """Under a top-k space the bigram baseline predicts, for every input token, its most frequent *kept* follower:
    the whole vocabulary's bigram prediction where that is kept, the next best kept one otherwise."""
    from forethought.probes.targets import LabelSpace

    current, tokens = _stream(vocab=20, classes=12)
    space = LabelSpace.top_k(tokens, k=4, d_vocab=20)
    labels = space.encode(tokens)
    bigram = BigramBaseline.fit(current, labels, space.n_classes, d_vocab=20, never=space.other)
    for offset in range(2):
        predicted = bigram.predict(torch.arange(20), offset, k=5)
        assert not (predicted == space.other).any()
        for token in range(20):
            followers = Counter(labels[offset][current == token].tolist())
            followers.pop(space.other, None)
            if followers:
                best = max(followers.values())
                assert followers[int(predicted[token, 0])] == best
