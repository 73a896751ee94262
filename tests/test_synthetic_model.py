import pytest
import torch

from forethought.errors import ContextLengthError, InvalidArgumentError
from forethought.hook_names import hook_name
from forethought.myopic_training import myopic
from forethought.synthetic.model import RegressionModelConfig, RegressionTransformer

CONFIG = RegressionModelConfig(n_inputs=2, n_layers=2, d_model=32, n_heads=4, n_ctx=12, seed=0)


@pytest.fixture(scope="module")
def model():
    return RegressionTransformer(CONFIG)


@pytest.fixture(scope="module")
def inputs():
    return torch.randn(3, 10, 2, generator=torch.Generator().manual_seed(0))


def test_float_input_is_used_as_inputs_embeds(model, inputs):
    """The bridge adds its positional embedding to the input map's output, and never looks up token embeddings."""
    seen = {}
    with model.bridge.hooks(fwd_hooks=[("blocks.0.hook_resid_pre", lambda t, hook: seen.setdefault("pre", t))]):
        prediction = model(inputs)
    expected = model.input_map(inputs) + model.bridge.W_pos[: inputs.shape[1]]
    torch.testing.assert_close(seen["pre"], expected)
    raw = model.bridge.original_model(inputs_embeds=model.input_map(inputs))[..., 0]
    torch.testing.assert_close(prediction, raw)
    with torch.no_grad():
        model.bridge.W_E.add_(1.0)  # token embeddings play no part
        try:
            assert torch.equal(model(inputs), prediction)
        finally:
            model.bridge.W_E.sub_(1.0)


@pytest.mark.parametrize("normalization", ["LN", None])
def test_the_head_reads_the_final_residual_stream(inputs, normalization):
    model = RegressionTransformer(RegressionModelConfig(**{**CONFIG.to_dict(), "normalization": normalization}))
    with torch.no_grad():
        _, cache = model.bridge.run_with_cache(model.embed(inputs))
        prediction = model(inputs)
    head = cache["ln_final.hook_out"] @ model.bridge.W_U + model.bridge.b_U
    torch.testing.assert_close(head[..., 0], prediction)
    final = cache[hook_name(model.bridge, "resid", CONFIG.n_layers)]
    if normalization is None:  # no layer norm anywhere: the head reads the residual stream itself
        torch.testing.assert_close(cache["ln_final.hook_out"], final)
    else:
        centred = final - final.mean(-1, keepdim=True)
        normalized = centred / (centred.pow(2).mean(-1, keepdim=True) + model.bridge.cfg.eps).sqrt()
        torch.testing.assert_close(cache["ln_final.hook_normalized"], normalized, rtol=1e-4, atol=1e-4)


def test_mlp_init_scale_scales_only_the_mlp_input_weights():
    base = RegressionTransformer(CONFIG)
    scaled = RegressionTransformer(RegressionModelConfig(**{**CONFIG.to_dict(), "mlp_init_scale": 8.0}))
    for layer in range(CONFIG.n_layers):
        torch.testing.assert_close(scaled.bridge.blocks[layer].mlp.W_in, 8.0 * base.bridge.blocks[layer].mlp.W_in)
    scaled_parameters = dict(scaled.named_parameters())
    changed = [name for name, parameter in base.named_parameters()
               if not torch.equal(parameter, scaled_parameters[name])]
    assert len(changed) == CONFIG.n_layers and all("fc_in" in name and name.endswith("weight") for name in changed)


def test_residuals_match_the_hooks(model, inputs):
    residuals = model.residuals(inputs, batch_size=2)
    assert residuals.shape == (CONFIG.n_layers + 1, 3, 10, CONFIG.d_model)
    with torch.no_grad():
        _, cache = model.bridge.run_with_cache(model.embed(inputs))
    for layer in range(CONFIG.n_layers + 1):
        torch.testing.assert_close(residuals[layer], cache[hook_name(model.bridge, "resid", layer)])
    torch.testing.assert_close(model.residuals(inputs, layers=[2])[0], residuals[2])


def test_interventions_on_the_bridge_change_the_prediction(model, inputs):
    with torch.no_grad():
        clean = model(inputs)
        zero_z = ("blocks.1.attn.hook_z", lambda z, hook: torch.zeros_like(z))
        with model.bridge.hooks(fwd_hooks=[zero_z]):
            ablated = model(inputs)
        # Only the last position's residual is edited: earlier predictions cannot change (causality).
        direction = torch.randn(CONFIG.d_model, generator=torch.Generator().manual_seed(2))

        def shift_last(resid, hook):
            resid = resid.clone()
            resid[:, -1] += 3.0 * direction
            return resid

        with model.bridge.hooks(fwd_hooks=[("blocks.0.hook_resid_post", shift_last)]):
            shifted = model(inputs)
    assert not torch.allclose(ablated, clean)
    assert torch.equal(shifted[:, :-1], clean[:, :-1]) and not torch.allclose(shifted[:, -1], clean[:, -1])


@pytest.mark.parametrize(("mode", "normalization"), [("strict", "LN"), ("cutgrad", "LN"), ("strict", None)])
def test_myopic_applies_to_the_bridge(mode, normalization):
    """Forward values are unchanged; the prediction at t gets no gradient from inputs at earlier positions."""
    model = RegressionTransformer(RegressionModelConfig(**{**CONFIG.to_dict(), "normalization": normalization}))
    inputs = torch.randn(2, 8, 2, generator=torch.Generator().manual_seed(1), requires_grad=True)
    t = 5
    vanilla = model(inputs)
    (vanilla_grad,) = torch.autograd.grad(vanilla[:, t].sum(), inputs)
    with myopic(model.bridge, mode=mode):
        short = model(inputs)
        (myopic_grad,) = torch.autograd.grad(short[:, t].sum(), inputs)
    assert torch.equal(short, vanilla)
    assert vanilla_grad[:, :t].abs().sum() > 0
    assert torch.equal(myopic_grad[:, :t], torch.zeros_like(myopic_grad[:, :t]))
    assert myopic_grad[:, t].abs().sum() > 0


def test_seeded_and_leaves_the_global_rng_alone():
    state = torch.random.get_rng_state()
    first, second = RegressionTransformer(CONFIG), RegressionTransformer(CONFIG)
    assert torch.equal(torch.random.get_rng_state(), state)
    for (name, a), (_, b) in zip(first.state_dict().items(), second.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    other = RegressionTransformer(RegressionModelConfig(**{**CONFIG.to_dict(), "seed": 1}))
    assert not torch.equal(other.input_map.weight, first.input_map.weight)
    assert not torch.equal(other.bridge.W_U, first.bridge.W_U)


def test_only_used_parameters_train(model):
    trainable = {name for name, parameter in model.named_parameters() if parameter.requires_grad}
    assert "input_map.weight" in trainable
    assert "bridge.embed._original_component.weight" not in trainable  # token embeddings are never used
    assert "bridge.unembed._original_component.weight" in trainable  # the regression head


@pytest.mark.usefixtures("unchecked_shapes")
def test_bad_inputs(model):
    with pytest.raises(InvalidArgumentError, match="3 features"):
        model(torch.randn(1, 4, 3))
    with pytest.raises(InvalidArgumentError, match="float tensor"):
        model(torch.zeros(1, 4, 2, dtype=torch.long))
    with pytest.raises(InvalidArgumentError, match="float tensor"):
        model(torch.randn(4, 2))
    with pytest.raises(ContextLengthError, match="n_ctx=12"):
        model(torch.randn(1, 13, 2))
    with pytest.raises(InvalidArgumentError, match="n_inputs=0"):
        RegressionModelConfig(n_inputs=0)
    with pytest.raises(InvalidArgumentError, match="normalization='batch'"):
        RegressionModelConfig(normalization="batch")
    with pytest.raises(InvalidArgumentError, match="not divisible"):
        RegressionModelConfig(d_model=30, n_heads=4)
    with pytest.raises(InvalidArgumentError, match="batch_size=0"):
        model.residuals(torch.randn(1, 4, 2), batch_size=0)
