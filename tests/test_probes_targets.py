"""Future-token labels, the model's own predictions and label spaces, against plain loops."""

import pytest
import torch

from forethought.errors import DataError, InvalidArgumentError, OutOfRangeError
from forethought.probes.targets import LabelSpace, check_offsets, future_labels, model_predictions, n_positions


def test_future_labels_follow_the_offset_convention():
    tokens = torch.randint(0, 50, (3, 12), generator=torch.Generator().manual_seed(0))
    offsets = [0, 1, 3]
    labels = future_labels(tokens, offsets)
    n = n_positions(12, offsets)
    assert labels.shape == (3, 3, n) and n == 12 - 1 - 3
    for i, offset in enumerate(offsets):
        for s in range(3):
            for t in range(n):
                assert labels[i, s, t] == tokens[s, t + 1 + offset]


def test_model_predictions_are_the_prediction_made_at_t_plus_offset():
    predictions = torch.arange(20).view(2, 10)  # predictions[s, p] is the model's guess of token p + 1
    labels = model_predictions(predictions, [0, 2])
    assert labels[0, 1, 3] == predictions[1, 3] and labels[1, 1, 3] == predictions[1, 5]


@pytest.mark.parametrize("offsets", [[], [-1], [1.5], [9], [10]])
def test_bad_offsets(offsets):
    error = OutOfRangeError if offsets and isinstance(offsets[0], int) and offsets[0] >= 9 else InvalidArgumentError
    with pytest.raises(error):
        check_offsets(offsets, seq_len=10)


def test_top_k_space_keeps_the_most_frequent_tokens_and_pools_the_rest():
    labels = torch.tensor([4, 4, 4, 2, 2, 7, 9, 9, 9, 9])
    space = LabelSpace.top_k(labels, k=2, d_vocab=12)
    assert space.token_ids == (9, 4) and space.n_classes == 3 and space.other == 2 and space.name == "top2+other"
    assert space.encode(torch.tensor([9, 4, 2, 0])).tolist() == [0, 1, 2, 2]
    assert space.coverage(labels) == pytest.approx(0.7)
    assert LabelSpace.from_dict(space.to_dict()) == space


def test_project_logits_pools_probability_mass():
    space = LabelSpace(d_vocab=6, token_ids=(3, 0))
    logits = torch.randn(4, 5, 6)
    projected = space.project_logits(logits)
    probs, pooled = logits.softmax(-1), projected.softmax(-1)
    torch.testing.assert_close(pooled[..., 0], probs[..., 3])
    torch.testing.assert_close(pooled[..., 1], probs[..., 0])
    torch.testing.assert_close(pooled[..., 2], probs[..., [1, 2, 4, 5]].sum(-1))
    full = LabelSpace.full(6)
    assert full.project_logits(logits) is logits and full.n_classes == 6 and full.coverage(torch.tensor([1])) == 1.0


def test_label_space_bad_inputs():
    with pytest.raises(InvalidArgumentError, match="top_k=0"):
        LabelSpace.top_k(torch.tensor([1]), k=0, d_vocab=5)
    with pytest.raises(DataError):
        LabelSpace.top_k(torch.tensor([], dtype=torch.long), k=2, d_vocab=5)
    with pytest.raises(InvalidArgumentError, match="token ids"):
        LabelSpace.full(5).encode(torch.tensor([5]))
