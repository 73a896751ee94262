"""Local myopia against a per-query reference, on every backend; regime forward contexts."""


import pytest
import torch
from devices import DEVICE

from forethought.attention import ablate_past
from forethought.errors import InvalidArgumentError
from forethought.models import copy_model
from forethought.myopic_training import myopic
from forethought.myopic_training.regimes import RegimeModel, local_myopic
from forethought.regimes import REGIMES, get_regime

pytestmark = pytest.mark.usefixtures("single_thread")

SEQ = 8


def _tokens(model, batch=2, seq=SEQ, seed=0):
    return torch.randint(0, model.cfg.d_vocab, (batch, seq), generator=torch.Generator().manual_seed(seed))


def _grads(model, tokens, context):
    model.zero_grad()
    with context:
        loss = model(tokens, return_type="loss")
    loss.backward()
    grads = {name: p.grad.detach().clone() for name, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    return loss.detach(), grads


def _perturbed_copy(model, scale=0.05, seed=1):
    other = copy_model(model).requires_grad_(False)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(scale * torch.randn(p.shape, generator=generator, dtype=p.dtype).to(p.device))
    return other


def _reference_logits(model, past_model, tokens):
    """For each position t: replace keys and values of positions < t in every layer by the past model's, and
    read the logits at t."""
    names = [f"blocks.{layer}.attn.hook_{kind}" for layer in range(model.cfg.n_layers) for kind in "kv"]
    with torch.no_grad():
        _, cache = past_model.run_with_cache(tokens, names_filter=lambda name: name in names)
        rows = []
        for t in range(tokens.shape[1]):
            def substitute(x, hook, t=t, name=None):
                return torch.cat([cache[name][:, :t], x[:, t:]], dim=1)

            hooks = [(name, lambda x, hook, name=name, t=t: substitute(x, hook, t=t, name=name)) for name in names]
            with model.hooks(fwd_hooks=hooks):
                rows.append(model(tokens)[:, t])
    return torch.stack(rows, dim=1)


def test_local_myopic_forward_equals_per_position_reference(any_model):
    any_model.eval()
    past = _perturbed_copy(any_model)
    tokens = _tokens(any_model)
    with torch.no_grad(), local_myopic(any_model, past):
        ours = any_model(tokens)
    reference = _reference_logits(any_model, past, tokens)
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        assert not torch.allclose(ours, any_model(tokens), atol=1e-4), "the past model must matter"


def test_local_myopic_with_an_exact_copy_is_vanilla_forward_and_strict_myopic_gradient(any_model):
    any_model.eval()
    tokens = _tokens(any_model)
    past = copy_model(any_model).requires_grad_(False)
    local_loss, local = _grads(any_model, tokens, local_myopic(any_model, past))
    strict_loss, strict = _grads(any_model, tokens, myopic(any_model, mode="strict"))
    torch.testing.assert_close(local_loss, strict_loss, atol=1e-6, rtol=1e-6)
    scale = max(g.abs().max().item() for g in strict.values())
    assert local.keys() == strict.keys()
    assert max((local[n] - strict[n]).abs().max().item() for n in strict) / scale < 1e-5


def test_past_model_gets_no_gradient_and_hooks_are_removed(native_model):
    past = _perturbed_copy(native_model).requires_grad_(True)
    tokens = _tokens(native_model)
    before = sum(len(hp._forward_hooks) for hp in native_model.hook_dict.values())
    with local_myopic(native_model, past):
        native_model(tokens, return_type="loss").backward()
    assert all(p.grad is None for p in past.parameters())
    assert sum(len(hp._forward_hooks) for hp in native_model.hook_dict.values()) == before
    assert not native_model._forward_pre_hooks
    native_model.zero_grad()


def test_local_myopic_refuses_bad_past_models(native_model):
    from forethought.models import tiny_model

    with pytest.raises(InvalidArgumentError, match="separate past_model"):
        with local_myopic(native_model, native_model):
            pass
    other = tiny_model(n_layers=1, d_model=32, n_heads=4, d_vocab=native_model.cfg.d_vocab, n_ctx=64, device=DEVICE)
    with pytest.raises(InvalidArgumentError, match="layers"):
        with local_myopic(native_model, other):
            pass


def test_forward_contexts(native_model):
    tokens = _tokens(native_model, batch=1)
    with torch.no_grad():
        plain = native_model(tokens)
        with REGIMES["myopic"].forward_context(native_model):
            assert torch.equal(native_model(tokens), plain)
        with REGIMES["bigram"].forward_context(native_model):
            bigram = native_model(tokens)
        with ablate_past(native_model):
            torch.testing.assert_close(bigram, native_model(tokens))
    with pytest.raises(InvalidArgumentError, match="regime='lazy'"):
        get_regime("lazy")
    with pytest.raises(InvalidArgumentError, match="past_model"):
        RegimeModel(native_model, "local-myopic")
