import pytest
import torch

from forethought.activations import Activations, collect_activations
from forethought.errors import ContextLengthError, InvalidArgumentError, OutOfRangeError, UnknownHookError
from forethought.hook_names import hook_name

HOOKS = ["resid", "hook_resid_mid", "attn.hook_z", "ln1.hook_out", "mlp.hook_post"]


def _cache(model, tokens):
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens)
    return cache


@pytest.mark.parametrize("in_memory", [True, False])
def test_matches_run_with_cache(any_model, tmp_path, in_memory):
    tokens = torch.randint(0, any_model.cfg.d_vocab, (7, 16), generator=torch.Generator().manual_seed(0))
    hooks = [h for h in HOOKS if f"blocks.0.{h}" in any_model.hook_dict or h == "resid"]
    acts = collect_activations(any_model, tokens, hooks=hooks, batch_size=3, progress=False,
                               out_dir=None if in_memory else tmp_path / "acts")
    cache = _cache(any_model, tokens)
    assert torch.equal(acts.tokens, tokens)
    for template in hooks:
        for index, layer in enumerate(acts.layers_by_hook[template]):
            expected = cache[hook_name(any_model, template, layer)]
            torch.testing.assert_close(acts[template][index], expected, rtol=1e-5, atol=1e-5)


def test_reopen_without_model(native_model, tmp_path):
    tokens = torch.randint(0, native_model.cfg.d_vocab, (5, 8))
    written = collect_activations(native_model, tokens, hooks="resid", layers=[0, 2], batch_size=2,
                                  out_dir=tmp_path / "a", progress=False)
    reopened = Activations.load(tmp_path / "a")
    assert reopened.layers == [0, 2]
    assert torch.equal(reopened.layer(2), written.layer(2))
    assert reopened["resid"].shape == (2, 5, 8, native_model.cfg.d_model)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_selected_layers_and_dtype(native_model):
    tokens = torch.randint(0, native_model.cfg.d_vocab, (3, 8))
    acts = collect_activations(native_model, tokens, hooks=["hook_resid_post"], layers=[1], dtype=torch.float16,
                               progress=False)
    assert acts.layers == [1] and acts[0].dtype == torch.float16
    torch.testing.assert_close(acts.layer(1).float(), _cache(native_model, tokens)["blocks.1.hook_resid_post"],
                               atol=1e-2, rtol=1e-2)


def test_bad_inputs(native_model):
    tokens = torch.randint(0, native_model.cfg.d_vocab, (3, 8))
    with pytest.raises(UnknownHookError, match="hook_resid_pst"):
        collect_activations(native_model, tokens, hooks=["hook_resid_pst"], progress=False)
    with pytest.raises(OutOfRangeError, match="layers 0..1"):
        collect_activations(native_model, tokens, hooks=["hook_resid_post"], layers=[5], progress=False)
    with pytest.raises(InvalidArgumentError, match="batch_size=0"):
        collect_activations(native_model, tokens, batch_size=0, progress=False)
    with pytest.raises(ContextLengthError):
        collect_activations(native_model, torch.zeros(1, 200, dtype=torch.long), progress=False)


def test_non_finite_activations_are_refused(tmp_path):
    from forethought.errors import NumericalError
    from forethought.models import tiny_model

    model = tiny_model(n_layers=2, d_model=16, n_heads=2, d_vocab=20, n_ctx=8)
    with torch.no_grad():
        model.blocks[1].attn.o._original_component.bias.fill_(float("nan"))
    tokens = torch.randint(0, 20, (4, 8))
    with pytest.raises(NumericalError, match="blocks.1"):
        collect_activations(model, tokens, hooks="resid", batch_size=2, out_dir=tmp_path / "acts", progress=False)
    assert list(tmp_path.iterdir()) == []
