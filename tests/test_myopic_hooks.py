"""The one-pass myopic hook against the slow per-position reference, on every backend."""

import pytest
import torch
from devices import DEVICE

from forethought.attention import ablate_past
from forethought.attention.recompute import attend
from forethought.errors import InvalidArgumentError, UnsupportedArchitectureError
from forethought.models import tiny_model
from forethought.myopic_training import myopic
from forethought.myopic_training.reference import accumulate_per_position_gradients

SEQ = 10


def _tokens(model, batch=2, seq=SEQ, seed=0):
    return torch.randint(0, model.cfg.d_vocab, (batch, seq), generator=torch.Generator().manual_seed(seed))


def _grads(model):
    return {name: p.grad.detach().clone() for name, p in model.named_parameters() if p.grad is not None}


def _one_pass(model, tokens, **kwargs):
    model.zero_grad()
    if kwargs:
        with myopic(model, **kwargs):
            loss = model(tokens, return_type="loss")
    else:
        loss = model(tokens, return_type="loss")
    loss.backward()
    return loss.detach(), _grads(model)


def _reference(model, tokens, mode):
    model.zero_grad()
    accumulate_per_position_gradients(model, tokens, mode)
    return _grads(model)


def _max_relative_error(ours, reference):
    assert ours.keys() == reference.keys()
    scale = max(g.abs().max().item() for g in reference.values())
    return max((ours[name] - reference[name]).abs().max().item() for name in reference) / scale


@pytest.mark.parametrize("mode", ["strict", "cutgrad"])
def test_one_pass_equals_per_position_reference(any_model, mode):
    any_model.eval()  # attention dropout off: HF checkpoints default to dropout 0.1
    tokens = _tokens(any_model)
    vanilla_loss, vanilla = _one_pass(any_model, tokens)
    loss, ours = _one_pass(any_model, tokens, mode=mode)
    reference = _reference(any_model, tokens, mode)
    assert torch.equal(loss, vanilla_loss), "myopia must not change forward values"
    assert _max_relative_error(ours, reference) < 1e-5
    assert _max_relative_error(ours, vanilla) > 1e-3, "the reference must differ from vanilla"


def _attend_loop(q, k_self, v_self, k_past, v_past, scale):
    """Attention written per query: query t reads k_past/v_past at i < t and k_self/v_self at t."""
    outputs = []
    for t in range(q.shape[1]):
        keys = torch.cat([k_past[:, :t], k_self[:, t : t + 1]], dim=1)  # [batch, t + 1, head, d]
        values = torch.cat([v_past[:, :t], v_self[:, t : t + 1]], dim=1)
        weights = (torch.einsum("bhd,bkhd->bhk", q[:, t], keys) * scale).softmax(-1)
        outputs.append(torch.einsum("bhk,bkhd->bhd", weights, values))
    return torch.stack(outputs, dim=1)


def test_attend_equals_per_query_loop():
    generator = torch.Generator().manual_seed(0)
    inputs = [torch.randn(2, 7, 3, 4, generator=generator, requires_grad=True) for _ in range(5)]
    weights = torch.randn(2, 7, 3, 4, generator=generator)
    ours = attend(*inputs, scale=0.5)
    reference = _attend_loop(*inputs, scale=0.5)
    torch.testing.assert_close(ours, reference)
    ours_grads = torch.autograd.grad((ours * weights).sum(), inputs)
    reference_grads = torch.autograd.grad((reference * weights).sum(), inputs)
    for a, b in zip(ours_grads, reference_grads, strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("mode", ["strict", "cutgrad"])
def test_beta_mixes_each_query_view_of_the_past(any_model, mode, monkeypatch):
    """beta in (0, 1): for every query, past keys/values are (1 - beta) * myopic + beta * live. The reference
    recomputes each layer's attention one query at a time."""
    import forethought.myopic_training.hooks as hooks

    any_model.eval()
    tokens = _tokens(any_model)
    _, ours = _one_pass(any_model, tokens, mode=mode, beta=0.5)
    _, strict = _one_pass(any_model, tokens, mode=mode)
    monkeypatch.setattr(hooks, "attend", _attend_loop)  # the eager path's kernel, replaced by a loop over queries
    _, reference = _one_pass(any_model, tokens, mode=mode, beta=0.5, attention="eager")
    assert _max_relative_error(ours, reference) < 1e-5
    assert _max_relative_error(ours, strict) > 1e-3


def test_strict_and_cutgrad_differ_only_through_kv_weights(native_model):
    native_model.eval()
    tokens = _tokens(native_model)
    _, strict = _one_pass(native_model, tokens, mode="strict")
    _, cutgrad = _one_pass(native_model, tokens, mode="cutgrad")
    differing = {name for name in strict if not torch.allclose(strict[name], cutgrad[name], rtol=1e-5, atol=1e-8)}
    assert differing and all(".attn." in name and (".k." in name or ".v." in name) for name in differing)


def test_beta_one_is_vanilla(any_model):
    any_model.eval()
    tokens = _tokens(any_model)
    _, vanilla = _one_pass(any_model, tokens)
    for mode in ("strict", "cutgrad"):
        _, ours = _one_pass(any_model, tokens, mode=mode, beta=1.0)
        assert _max_relative_error(ours, vanilla) < 1e-5


def test_hooks_removed_on_exit_and_on_error(native_model):
    tokens = _tokens(native_model)
    before = sum(len(hp._forward_hooks) for hp in native_model.hook_dict.values())
    with pytest.raises(RuntimeError, match="boom"):
        with myopic(native_model):
            raise RuntimeError("boom")
    with ablate_past(native_model):
        native_model(tokens)
    assert sum(len(hp._forward_hooks) for hp in native_model.hook_dict.values()) == before
    _, after = _one_pass(native_model, tokens)
    _, vanilla = _one_pass(native_model, tokens)
    assert _max_relative_error(after, vanilla) == 0


def test_refuses_active_attention_dropout(checkpoint_dirs):
    from forethought.models import load_model

    model = load_model(checkpoint_dirs["gpt2"], device=DEVICE)
    model.train()
    with pytest.raises(UnsupportedArchitectureError, match="dropout"):
        with myopic(model):
            model(_tokens(model), return_type="loss")


def test_refuses_what_it_cannot_recompute():
    model = tiny_model(n_layers=1, d_model=16, n_heads=2, d_vocab=20, n_ctx=16, positional_embedding_type="rotary",
                       device=DEVICE)
    with pytest.raises(UnsupportedArchitectureError, match="hook_cos"):
        with myopic(model):
            model(_tokens(model), return_type="loss")


def test_bad_arguments(native_model):
    with pytest.raises(InvalidArgumentError, match="mode='lazy'"):
        with myopic(native_model, mode="lazy"):
            pass
    with pytest.raises(InvalidArgumentError, match="beta=1.5"):
        with myopic(native_model, beta=1.5):
            pass


@pytest.mark.parametrize("method", ["self", "zero", "mean"])
def test_ablate_past_makes_outputs_independent_of_the_past(any_model, method):
    any_model.eval()
    tokens = _tokens(any_model, batch=1)
    changed = tokens.clone()
    changed[:, :5] = (changed[:, :5] + 1) % any_model.cfg.d_vocab
    with torch.no_grad(), ablate_past(any_model, method=method):
        a, b = any_model(tokens), any_model(changed)
    if method == "mean":  # the mean over positions still carries the past: only check it runs and changes output
        assert not torch.allclose(a, any_model(tokens).detach())
        return
    torch.testing.assert_close(a[:, 5:], b[:, 5:], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(a[:, :5], b[:, :5])


def test_ablate_past_self_equals_attending_to_self_only(native_model):
    """Reference: a position that attends to itself alone outputs its own value, so hook_z is replaced by hook_v."""
    tokens = _tokens(native_model, batch=2, seq=8)
    values = {}

    def keep_value(layer):
        def hook(v, hook):
            values[layer] = v
            return v
        return hook

    def self_only(layer):
        return lambda z, hook: values[layer]

    layers = range(native_model.cfg.n_layers)
    hooks = ([(f"blocks.{layer}.attn.hook_v", keep_value(layer)) for layer in layers]
             + [(f"blocks.{layer}.attn.hook_z", self_only(layer)) for layer in layers])
    with torch.no_grad():
        plain = native_model(tokens)
        reference = native_model.run_with_hooks(tokens, fwd_hooks=hooks)
        with ablate_past(native_model):
            ablated = native_model(tokens)
            single = native_model(tokens[:, :1])
    torch.testing.assert_close(ablated, reference, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(plain[:, 1:], reference[:, 1:], atol=1e-3), "the past must matter in the plain model"
    # with one position, attending to itself is all there is
    torch.testing.assert_close(single, plain[:, :1], atol=1e-6, rtol=1e-6)


def test_bf16_autocast_is_accepted(checkpoint_dirs):
    """Under autocast the model's attention runs in bf16 even where its output is float32 (Llama)."""
    from forethought.models import load_model

    model = load_model(checkpoint_dirs["llama"], device=DEVICE).eval()
    with torch.autocast("cpu", dtype=torch.bfloat16), myopic(model):
        loss = model(_tokens(model), return_type="loss")
    loss.backward()
    assert torch.isfinite(loss)


@pytest.mark.parametrize("kwargs", [{"mode": "lazy"}, {"beta": 2.0}, {"beta": True}, {"attention": "flash"}])
def test_myopic_checks_its_arguments_when_called(native_model, kwargs):
    with pytest.raises(InvalidArgumentError):
        myopic(native_model, **kwargs)  # not entered: the error comes at the call


def test_ablate_past_checks_its_method_when_called(native_model):
    with pytest.raises(InvalidArgumentError, match="method"):
        ablate_past(native_model, method="median")
