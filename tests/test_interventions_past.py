"""Past ablation: the re-exported context manager and the per-position loss effect."""

import pytest
import torch

from forethought.attention import ablate_past as shared_ablate_past
from forethought.errors import InvalidArgumentError
from forethought.interventions import ablate_past, past_ablation_effect, per_position_loss


def _tokens(model, batch=3, seq=6, seed=0):
    return torch.randint(0, model.cfg.d_vocab, (batch, seq), generator=torch.Generator().manual_seed(seed))


def test_ablate_past_is_the_shared_context_manager():
    assert ablate_past is shared_ablate_past


def test_per_position_loss_matches_transformer_lens_loss(any_model):
    tokens = _tokens(any_model)
    with torch.no_grad():
        expected = any_model(tokens, return_type="loss", loss_per_token=True).mean(0)
    torch.testing.assert_close(per_position_loss(any_model, tokens, batch_size=2), expected.cpu().double(),
                               rtol=1e-5, atol=1e-5)


def test_effect_matches_ablate_past_directly(any_model):
    tokens = _tokens(any_model)
    frame = past_ablation_effect(any_model, tokens, depth_sets="each", methods=("self", "zero"), progress=False)
    n_layers, n_pos = any_model.cfg.n_layers, tokens.shape[1] - 1
    assert len(frame) == (n_layers + 1) * 2 * n_pos
    assert list(dict.fromkeys(frame["depths"])) == [str(depth) for depth in range(n_layers)] + ["all"]
    with ablate_past(any_model, layers=[0], method="zero"):
        expected = per_position_loss(any_model, tokens)
    got = frame.query("depths == '0' and method == 'zero'").sort_values("pos")["ablated_loss"]
    torch.testing.assert_close(torch.tensor(got.values, dtype=torch.float64), expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(torch.tensor((frame["ablated_loss"] - frame["loss"]).values),
                               torch.tensor(frame["delta"].values))
    # position 0 has no past: seeing only itself changes nothing there
    assert frame.query("method == 'self' and pos == 0")["delta"].abs().max() < 1e-5
    assert frame.query("depths == 'all' and method == 'self'")["delta"].abs().max() > 0


def test_bad_input_raises(native_model):
    tokens = _tokens(native_model)
    with pytest.raises(InvalidArgumentError):
        past_ablation_effect(native_model, tokens, methods="forget", progress=False)
    with pytest.raises(InvalidArgumentError):
        past_ablation_effect(native_model, tokens[:, :1], progress=False)
    with pytest.raises(InvalidArgumentError):
        per_position_loss(native_model, tokens, batch_size=0)


def test_past_ablation_is_named_by_residual_depth(native_model):
    """Depth d ablates the past keys/values computed from the residual stream at depth d (block d's attention)."""
    import warnings

    from forethought.errors import OutOfRangeError

    tokens = _tokens(native_model)
    frame = past_ablation_effect(native_model, tokens, depth_sets=[1, [0, 1]], progress=False)
    assert "depths" in frame.columns and "layers" not in frame.columns
    assert list(dict.fromkeys(frame["depths"])) == ["1", "0,1"]
    with ablate_past(native_model, layers=[1]):  # block 1 reads depth 1
        expected = per_position_loss(native_model, tokens)
    got = frame.query("depths == '1'").sort_values("pos")["ablated_loss"]
    torch.testing.assert_close(torch.tensor(got.values, dtype=torch.float64), expected, rtol=1e-5, atol=1e-5)
    n = native_model.cfg.n_layers
    with pytest.raises(OutOfRangeError, match=f"depths 0..{n - 1}"):
        past_ablation_effect(native_model, tokens, depth_sets=[n], progress=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        old = past_ablation_effect(native_model, tokens, layer_sets=[1, [0, 1]], progress=False)
    assert old.equals(frame) and any(issubclass(w.category, DeprecationWarning) for w in caught)
