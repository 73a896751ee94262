"""Probe-direction interventions: projection algebra, placebos, probe adapters and the effect measurement."""

import numpy as np
import pytest
import torch

from forethought.errors import ForethoughtError, InvalidArgumentError, OutOfRangeError
from forethought.hook_names import hook_name
from forethought.interventions import (
    DirectionEffect,
    add_direction,
    as_directions,
    direction_effect,
    kl_divergence,
    orthonormal_basis,
    project_out,
    random_directions,
)

LAYER = 1


def _tokens(model, batch=2, seq=6, seed=0):
    return torch.randint(0, model.cfg.d_vocab, (batch, seq), generator=torch.Generator().manual_seed(seed))


def _directions(model, k=2, seed=1):
    return torch.randn(k, model.cfg.d_model, generator=torch.Generator().manual_seed(seed))


def _run(model, tokens, watch):
    """Logits and the activation at hook ``watch`` (captured after every other hook there has run)."""
    seen = {}

    def keep(activation, hook):
        seen["value"] = activation.detach().clone()

    with torch.no_grad(), model.hooks(fwd_hooks=[(watch, keep)]):
        logits = model(tokens)
    return logits, seen["value"]


def test_projection_removes_the_span_at_the_chosen_positions_only(any_model):
    tokens, directions = _tokens(any_model), _directions(any_model)
    name = hook_name(any_model, "resid", LAYER)
    _, original = _run(any_model, tokens, name)
    with project_out(any_model, directions, LAYER, positions=[2, 4]):
        _, edited = _run(any_model, tokens, name)
    assert (edited[:, [2, 4]] @ directions.T.to(edited.device)).abs().max() < 1e-4
    assert torch.equal(edited[:, [0, 1, 3, 5]], original[:, [0, 1, 3, 5]])
    basis = orthonormal_basis(directions).to(original.device)
    expected = original[:, [2, 4]] - (original[:, [2, 4]] @ basis.T) @ basis
    torch.testing.assert_close(edited[:, [2, 4]], expected, rtol=1e-5, atol=1e-5)


def test_ablating_a_direction_twice_equals_once(any_model):
    tokens, directions = _tokens(any_model), _directions(any_model)
    downstream = hook_name(any_model, "resid", any_model.cfg.n_layers)
    with project_out(any_model, directions, LAYER):
        once_logits, once = _run(any_model, tokens, downstream)
    with project_out(any_model, directions, LAYER), project_out(any_model, directions, LAYER):
        twice_logits, twice = _run(any_model, tokens, downstream)
    torch.testing.assert_close(twice, once, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(twice_logits, once_logits, rtol=1e-5, atol=1e-5)


def test_adding_then_removing_a_direction_restores_the_activations(any_model):
    tokens, direction = _tokens(any_model), _directions(any_model, k=1)[0]
    downstream = hook_name(any_model, "resid", any_model.cfg.n_layers)
    original_logits, original = _run(any_model, tokens, downstream)
    with add_direction(any_model, direction, LAYER, scale=4.0, positions=[1, 3]):
        moved_logits, _ = _run(any_model, tokens, downstream)
        with add_direction(any_model, direction, LAYER, scale=-4.0, positions=[1, 3]):
            restored_logits, restored = _run(any_model, tokens, downstream)
    assert not torch.allclose(moved_logits, original_logits, atol=1e-3)
    torch.testing.assert_close(restored, original, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(restored_logits, original_logits, rtol=1e-5, atol=1e-5)


def test_add_direction_adds_the_scaled_unit_vector(native_model):
    tokens, direction = _tokens(native_model), _directions(native_model, k=1)[0]
    name = hook_name(native_model, "resid", LAYER)
    _, original = _run(native_model, tokens, name)
    with add_direction(native_model, direction, LAYER, scale=2.0):
        _, unit = _run(native_model, tokens, name)
    with add_direction(native_model, direction, LAYER, scale=2.0, normalize=False):
        _, raw = _run(native_model, tokens, name)
    direction = direction.to(original.device)
    torch.testing.assert_close(unit - original, (2.0 * direction / direction.norm()).expand_as(original))
    torch.testing.assert_close(raw - original, (2.0 * direction).expand_as(original))


def test_random_placebos_are_norm_matched_and_seeded():
    like = torch.tensor([[3.0, 4.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]])
    a, b, c = random_directions(like, seed=0), random_directions(like, seed=0), random_directions(like, seed=1)
    torch.testing.assert_close(a.norm(dim=-1), like.norm(dim=-1))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_orthonormal_basis_refuses_dependent_directions():
    with pytest.raises(InvalidArgumentError, match="dependent"):
        orthonormal_basis(torch.tensor([[1.0, 2.0, 0.0], [2.0, 4.0, 0.0]]))
    with pytest.raises(InvalidArgumentError):
        orthonormal_basis(torch.zeros(1, 3))
    with pytest.raises(InvalidArgumentError):
        orthonormal_basis(torch.randn(4, 3))


def test_direction_effect_matches_a_per_position_reference(native_model):
    tokens, direction = _tokens(native_model, seq=5), _directions(native_model, k=1)
    effect = direction_effect(native_model, tokens, direction, LAYER, offsets=(0, 2), n_random=1, batch_size=4,
                              progress=False)
    assert isinstance(effect, DirectionEffect)
    with torch.no_grad():
        base = native_model(tokens)
        for t in (0, 3):
            with project_out(native_model, direction, LAYER, positions=[t]):
                edited = native_model(tokens)
            row = effect.frame.query("condition == 'direction' and pos == @t and offset == 0").iloc[0]
            assert row.kl == pytest.approx(float(kl_divergence(base[:, t], edited[:, t]).mean()), rel=1e-4, abs=1e-7)
            logp, base_logp = edited.log_softmax(-1), base.log_softmax(-1)
            nxt = tokens[:, t + 1]
            delta = (logp[[0, 1], t, nxt] - base_logp[[0, 1], t, nxt]).mean()
            assert row.delta_logprob == pytest.approx(float(delta), rel=1e-4, abs=1e-6)
    # position 3 + offset 2 = 5 is past the end: no row; the last position has no next token: NaN
    assert effect.frame.query("pos == 3 and offset == 2").empty
    assert np.isnan(effect.frame.query("pos == 4 and offset == 0")["delta_logprob"]).all()
    assert set(effect.summary()["condition"]) == {"direction", "random"}


def test_an_edit_of_the_final_state_only_changes_that_position(any_model):
    """At depth n_layers, position t feeds nothing but its own prediction: offsets >= 1 must not move."""
    tokens = _tokens(any_model)
    for mode in ("project_out", "add"):
        effect = direction_effect(any_model, tokens, _directions(any_model, k=1), any_model.cfg.n_layers, mode=mode,
                                  scale=3.0, offsets=(0, 1, 2), n_random=2, progress=False)
        later = effect.frame.query("offset > 0")
        assert later[["kl", "top1_changed"]].abs().max().max() < 1e-6
        assert later["delta_logprob"].abs().max() < 1e-5
        assert (effect.frame.query("offset == 0")["kl"] > 0).all()


def test_as_directions_from_torch_and_scikit_learn():
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    linear = torch.nn.Linear(5, 3)
    assert torch.equal(as_directions(linear, classes=[2]), linear.weight.detach()[[2]])
    assert as_directions(torch.randn(5)).shape == (1, 5)
    centered = as_directions(linear, center=True)
    torch.testing.assert_close(centered.sum(0), torch.zeros(5), atol=1e-6, rtol=0)

    rng = np.random.default_rng(0)
    features = rng.normal(size=(200, 5)) * np.array([1.0, 10.0, 0.1, 1.0, 3.0]) + 2.0
    score = features[:, 1] / 10 + features[:, 2] * 10
    labels = (score > np.median(score)).astype(int)
    pipeline = make_pipeline(StandardScaler(), LogisticRegression()).fit(features, labels)
    rows = as_directions(pipeline).double().numpy()
    # a linear read-out: decision(x) - decision(y) = (x - y) @ direction, in raw feature space
    x, y = features[:3], features[3:6]
    np.testing.assert_allclose(pipeline.decision_function(x) - pipeline.decision_function(y), (x - y) @ rows[0],
                               rtol=1e-4, atol=1e-4)


def test_as_directions_from_linear_probes():
    from forethought.probes.linear import LinearProbes, Task
    from forethought.probes.targets import LabelSpace

    generator = torch.Generator().manual_seed(0)
    label_space = LabelSpace(d_vocab=50, token_ids=(7, 3, 9))
    scale = torch.rand(2, 6, generator=generator) + 0.5
    probes = LinearProbes(weight=torch.randn(2, 2, 6, 4, generator=generator), bias=torch.zeros(2, 2, 4),
                          mean=torch.randn(2, 6, generator=generator), scale=scale, layers=[1, 3],
                          tasks=[Task(0), Task(2)], label_space=label_space)
    rows = as_directions(probes, layer=3, offset=2, tokens=[9, 7])  # classes 2 and 0
    h = torch.randn(2, 6, generator=generator)
    logits = probes.logits(torch.stack([h, h]))[1, 1]  # layer 3, task offset=2: [n, classes]
    torch.testing.assert_close(logits[0, [2, 0]] - logits[1, [2, 0]], (h[0] - h[1]) @ rows.T, rtol=1e-5, atol=1e-5)
    with pytest.raises(OutOfRangeError):
        as_directions(probes, layer=2, offset=2, classes=[0])
    with pytest.raises(OutOfRangeError):
        as_directions(probes, layer=3, offset=1, classes=[0])


def test_hooks_are_removed_after_an_exception(native_model):
    with pytest.raises(RuntimeError):
        with project_out(native_model, _directions(native_model), LAYER):
            raise RuntimeError("inside")
    with pytest.raises(InvalidArgumentError):  # raised inside the forward: wrong d_model
        with add_direction(native_model, torch.randn(7), LAYER):
            native_model(_tokens(native_model))
    assert all(not point._forward_hooks for point in native_model.hook_dict.values())


@pytest.mark.parametrize(("kwargs", "error"), [
    ({"mode": "rotate"}, InvalidArgumentError),
    ({"offsets": (0, 6)}, OutOfRangeError),
    ({"positions": [6]}, OutOfRangeError),
    ({"n_random": -1}, InvalidArgumentError),
    ({"mode": "add", "directions": torch.randn(2, 32)}, InvalidArgumentError),
    ({"mode": "add", "scale": float("nan")}, InvalidArgumentError),
    ({"layer": 3}, OutOfRangeError),
    ({"directions": "up"}, InvalidArgumentError),
])
def test_bad_input_raises(native_model, kwargs, error):
    arguments = {"directions": torch.randn(32), "layer": LAYER, "progress": False, **kwargs}
    with pytest.raises(error) as caught:
        direction_effect(native_model, _tokens(native_model), **arguments)
    assert issubclass(caught.type, ForethoughtError)


def test_effect_plot(native_model):
    from forethought.plots import plot_direction_effect

    effect = direction_effect(native_model, _tokens(native_model), torch.randn(32), LAYER, offsets=(0, 1),
                              n_random=1, progress=False)
    assert plot_direction_effect(effect, metric="top1_changed").axes[0].get_ylabel() == "top1_changed"
