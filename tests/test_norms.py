"""Norms through the wrapped module: the bridge's values and gradients, its hooks whenever they are hooked."""

import pytest
import torch
from devices import DEVICE, tolerance

from forethought.attention.opcount import OpCounter
from forethought.models import copy_model, load_model, tiny_model
from forethought.norms import install_native_norms, native_norms_installed, remove_native_norms

BACKENDS = ["native", "gpt2", "neox", "llama"]


def _pair(backend, checkpoint_dirs, tokenizer):
    """The same weights twice: with native norms (the default) and with the bridge's own code throughout."""
    def build(attention):
        if backend == "native":
            return tiny_model(n_layers=2, d_model=32, n_heads=4, d_vocab=len(tokenizer), n_ctx=64, seed=3,
                              tokenizer=tokenizer, attention=attention, device=DEVICE)
        return load_model(checkpoint_dirs[backend], attention=attention, device=DEVICE)

    return build("sdpa").eval(), build("eager").eval()


def _tokens(model):
    return torch.randint(0, model.cfg.d_vocab, (3, 12), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("backend", BACKENDS)
def test_values_and_gradients_are_the_bridges(backend, checkpoint_dirs, tokenizer):
    ours, bridge = _pair(backend, checkpoint_dirs, tokenizer)
    assert native_norms_installed(ours) and not native_norms_installed(bridge)
    tokens = _tokens(ours)
    losses = [model(tokens, return_type="loss") for model in (ours, bridge)]
    torch.testing.assert_close(losses[0], losses[1], **tolerance(1e-5, 1e-6))
    for loss in losses:
        loss.backward()
    named = dict(bridge.named_parameters())
    for name, parameter in ours.named_parameters():
        torch.testing.assert_close(parameter.grad, named[name].grad, **tolerance(1e-4, 1e-6), msg=name)


@pytest.mark.parametrize("backend", BACKENDS)
def test_hooked_inner_points_fire_and_keep_their_edits(backend, checkpoint_dirs, tokenizer):
    ours, bridge = _pair(backend, checkpoint_dirs, tokenizer)
    tokens = _tokens(ours)
    seen = {}

    def halve(tensor, hook):
        seen[hook.name] = tensor.shape
        return tensor * 0.5

    name = "blocks.1.ln1.hook_normalized"
    hooked = [model.run_with_hooks(tokens, fwd_hooks=[(name, halve)]) for model in (ours, bridge)]
    assert name in seen
    torch.testing.assert_close(hooked[0], hooked[1], **tolerance(1e-5, 1e-5))
    assert not torch.allclose(hooked[0], ours(tokens), atol=1e-4), "the edit takes effect"
    _, cache = ours.run_with_cache(tokens)
    assert "blocks.0.ln1.hook_scale" in cache and "ln_final.hook_normalized" in cache


def test_outer_hooks_fire_on_the_fast_path(native_model):
    seen = []
    tokens = _tokens(native_model)
    native_model.run_with_hooks(tokens, fwd_hooks=[("blocks.0.ln1.hook_out", lambda t, hook: seen.append(t.shape))])
    assert seen == [torch.Size([3, 12, 32])]


def test_fewer_ops_than_the_bridges_layer_norm(checkpoint_dirs, tokenizer):
    ours, bridge = _pair("gpt2", checkpoint_dirs, tokenizer)
    tokens = _tokens(ours)
    counts = []
    for model in (ours, bridge):
        with torch.no_grad(), OpCounter(tokens.shape[1]) as counter:
            model(tokens)
        counts.append(counter.ops)
    n_norms = 2 * ours.cfg.n_layers + 1
    assert counts[0] <= counts[1] - 5 * n_norms, counts


def test_install_remove_and_copy(native_model):
    twin = copy_model(native_model)
    assert native_norms_installed(twin)
    count = install_native_norms(twin)
    assert count == 2 * twin.cfg.n_layers + 1 and install_native_norms(twin) == count, "installing twice: a no-op"
    remove_native_norms(twin)
    assert not native_norms_installed(twin) and native_norms_installed(native_model)
    tokens = _tokens(twin)
    torch.testing.assert_close(twin(tokens), native_model(tokens), **tolerance(1e-5, 1e-5))
