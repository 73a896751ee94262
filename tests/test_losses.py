"""The one loss by position: every name for it is the same function, and it equals cross-entropy by hand."""

import math

import pytest
import torch

from forethought.errors import NumericalError
from forethought.interventions import ablate_past, per_position_loss
from forethought.losses import loss_by_position, token_losses
from forethought.myopic_training import RegimeModel
from forethought.myopic_training import loss_by_position as myopic_loss_by_position
from forethought.myopic_training.evaluation import loss_by_position as evaluation_loss_by_position
from forethought.myopic_training.evaluation import sequence_losses

pytestmark = pytest.mark.usefixtures("single_thread")


def _tokens(model, n=5, seq=7, seed=1):
    return torch.randint(0, model.cfg.d_vocab, (n, seq), generator=torch.Generator().manual_seed(seed))


def _by_hand(model, tokens):
    """-log softmax(logits[s, t])[tokens[s, t + 1]], one sequence and one position at a time, in float64."""
    with torch.no_grad():
        logits = model(tokens).double()
    n, seq = tokens.shape
    table = torch.empty(n, seq - 1, dtype=torch.float64)
    for s in range(n):
        for t in range(seq - 1):
            row = logits[s, t]
            log_normaliser = math.log(sum(math.exp(v - row.max().item()) for v in row.tolist())) + row.max().item()
            table[s, t] = log_normaliser - row[tokens[s, t + 1]].item()
    return table


def test_every_name_is_the_one_function():
    assert per_position_loss is loss_by_position
    assert myopic_loss_by_position is loss_by_position
    assert evaluation_loss_by_position is loss_by_position


def test_loss_by_position_equals_cross_entropy_by_hand(any_model):
    any_model.eval()
    tokens = _tokens(any_model)
    reference = _by_hand(any_model, tokens)
    torch.testing.assert_close(token_losses(any_model, tokens, batch_size=2), reference, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(loss_by_position(any_model, tokens, batch_size=3), reference.mean(0), rtol=1e-5,
                               atol=1e-5)


def test_it_runs_under_the_active_hooks(native_model):
    tokens = _tokens(native_model)
    with ablate_past(native_model):
        reference = _by_hand(native_model, tokens).mean(0)
        ablated = per_position_loss(native_model, tokens)
    torch.testing.assert_close(ablated, reference, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(ablated, loss_by_position(native_model, tokens))
    # the regime wrapper of the myopia measurements is the same loss inside the regime's forward
    torch.testing.assert_close(sequence_losses(RegimeModel(native_model, "bigram"), tokens).mean(0), ablated)


def test_a_uniform_predictor_scores_log_vocab(native_model):
    uniform = native_model
    tokens = _tokens(uniform)
    with torch.no_grad(), uniform.hooks(fwd_hooks=[("unembed.hook_out", lambda x, hook: torch.zeros_like(x))]):
        losses = loss_by_position(uniform, tokens)
    torch.testing.assert_close(losses, torch.full_like(losses, math.log(uniform.cfg.d_vocab)))


def test_non_finite_losses_are_refused(native_model):
    tokens = _tokens(native_model)
    with native_model.hooks(fwd_hooks=[("unembed.hook_out", lambda x, hook: x * float("nan"))]):
        with pytest.raises(NumericalError, match="NaN"):
            loss_by_position(native_model, tokens)
