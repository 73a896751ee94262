"""forethought's fused attention kernel under the bridge against the bridge's eager attention, on every backend."""

import pytest
import torch

import forethought.attention.recompute as recompute
from forethought.attention.opcount import OpCounter, training_step_counts
from forethought.attention.sdpa import install_sdpa, kernel_state, remove_sdpa, sdpa_attention, sdpa_installed
from forethought.errors import InvalidArgumentError
from forethought.models import copy_model, load_model, tiny_model
from forethought.myopic_training import myopic
from forethought.myopic_training.reference import accumulate_per_position_gradients

SEQ = 12


def _tokens(model, batch=2, seq=SEQ, seed=0):
    return torch.randint(0, model.cfg.d_vocab, (batch, seq), generator=torch.Generator().manual_seed(seed))


def _step(model, tokens, **myopic_kwargs):
    model.zero_grad()
    if myopic_kwargs:
        with myopic(model, **myopic_kwargs):
            loss = model(tokens, return_type="loss")
    else:
        loss = model(tokens, return_type="loss")
    loss.backward()
    return loss.detach(), {name: p.grad.detach().clone() for name, p in model.named_parameters()
                           if p.grad is not None}


def _relative_error(ours, reference):
    assert ours.keys() == reference.keys()
    scale = max(g.abs().max().item() for g in reference.values())
    return max((ours[name] - reference[name]).abs().max().item() for name in reference) / scale


def test_installed_by_default_on_every_backend(any_model):
    assert sdpa_installed(any_model)
    assert all(vars(block.attn).get("_forethought_sdpa") or vars(block.attn.original_component).get(
        "_forethought_sdpa") for block in any_model.blocks), "every layer runs the kernel"


def test_forward_and_gradients_equal_eager(any_model):
    any_model.eval()
    tokens = _tokens(any_model)
    logits = any_model(tokens)
    loss, grads = _step(any_model, tokens)
    with sdpa_attention(any_model, enabled=False):
        assert not sdpa_installed(any_model)
        eager_logits = any_model(tokens)
        eager_loss, eager = _step(any_model, tokens)
    assert sdpa_installed(any_model)
    torch.testing.assert_close(logits, eager_logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(loss, eager_loss)
    assert _relative_error(grads, eager) < 1e-5


def test_kernel_runs_and_eager_is_not_called(any_model, monkeypatch):
    """The default forward computes no eager attention: the bridge's [T, T] softmax is never reached."""
    from transformer_lens.model_bridge.generalized_components.attention import AttentionBridge

    calls = []
    monkeypatch.setattr(AttentionBridge, "_softmax_dropout_pattern", lambda *a, **k: calls.append(1))
    monkeypatch.setattr(torch.nn.functional, "softmax", lambda *a, **k: calls.append(1))
    any_model.eval()
    any_model(_tokens(any_model))
    assert not calls


@pytest.mark.parametrize("hook", ["blocks.0.attn.hook_q", "blocks.0.attn.hook_k", "blocks.0.attn.hook_v",
                                  "blocks.0.attn.hook_z", "blocks.0.hook_attn_out", "blocks.1.hook_resid_pre",
                                  "blocks.0.ln1.hook_out"])
def test_hook_edits_take_effect_as_in_eager(any_model, hook):
    any_model.eval()
    tokens = _tokens(any_model)
    plain = any_model(tokens)
    outputs = []
    for enabled in (True, False):
        with sdpa_attention(any_model, enabled=enabled), any_model.hooks(fwd_hooks=[(hook, lambda x, hook: 0.5 * x)]):
            outputs.append(any_model(tokens))
    assert (outputs[0] - plain).abs().max() > 1e-4, "the edit must change the output"
    torch.testing.assert_close(outputs[0], outputs[1], rtol=1e-5, atol=1e-5)


def test_pattern_hooks_run_the_eager_path(any_model):
    """A hook on hook_pattern sees the pattern, and its edits take effect as without the kernel."""
    any_model.eval()
    tokens = _tokens(any_model)
    seen, outputs = [], []
    for enabled in (True, False):
        def scale_head_zero(pattern, hook):
            seen.append(pattern.shape)
            pattern = pattern.clone()
            pattern[:, 0] = 0.0
            return pattern

        with sdpa_attention(any_model, enabled=enabled), any_model.hooks(
                fwd_hooks=[("blocks.0.attn.hook_pattern", scale_head_zero)]):
            outputs.append(any_model(tokens))
    assert seen[0] == (2, any_model.cfg.n_heads, SEQ, SEQ)
    torch.testing.assert_close(outputs[0], outputs[1])
    _, cache = any_model.run_with_cache(tokens, names_filter=lambda name: name.endswith("hook_pattern"))
    assert cache["blocks.1.attn.hook_pattern"].shape == (2, any_model.cfg.n_heads, SEQ, SEQ)


@pytest.mark.parametrize(("mode", "beta"), [("strict", 0.0), ("cutgrad", 0.0), ("strict", 0.5), ("cutgrad", 0.5)])
def test_myopic_through_the_kernel_equals_the_eager_route(any_model, mode, beta, monkeypatch):
    """A myopic step computes attention once, in the kernel (no recomputation is checked against z); its
    gradients equal those of the eager [T, T] recomputation on an eager model; the forward is the vanilla one."""
    any_model.eval()
    tokens = _tokens(any_model)
    vanilla_loss, _ = _step(any_model, tokens)
    checks = []
    original = recompute.check_matches
    monkeypatch.setattr("forethought.myopic_training.hooks.check_matches",
                        lambda *a: checks.append(1) or original(*a))
    loss, ours = _step(any_model, tokens, mode=mode, beta=beta)
    assert not checks, "the kernel computed every layer; no hook_z recomputation ran"
    assert torch.equal(loss, vanilla_loss), "myopia must not change forward values"
    with sdpa_attention(any_model, enabled=False):
        eager_loss, eager = _step(any_model, tokens, mode=mode, beta=beta, attention="eager")
    assert len(checks) == any_model.cfg.n_layers
    torch.testing.assert_close(loss, eager_loss)
    assert _relative_error(ours, eager) < 1e-5


def test_myopic_falls_back_per_layer_where_patterns_are_hooked(any_model):
    """Layer 0's pattern is hooked (eager there, the hook_z route); layer 1 runs in the kernel."""
    any_model.eval()
    tokens = _tokens(any_model)
    _, plain = _step(any_model, tokens, mode="strict")
    with any_model.hooks(fwd_hooks=[("blocks.0.attn.hook_pattern", lambda x, hook: None)]):
        _, mixed = _step(any_model, tokens, mode="strict")
    assert _relative_error(mixed, plain) < 1e-5


def test_float64_myopic_gradients_equal_the_reference_to_rounding():
    """The diagonal correction and log-sum-exp run in float64 for float64 models."""
    model = tiny_model(n_layers=2, d_model=16, n_heads=2, d_vocab=30, n_ctx=16, dtype=torch.float64).eval()
    tokens = _tokens(model, seq=8)
    for mode in ("strict", "cutgrad"):
        _, ours = _step(model, tokens, mode=mode)
        model.zero_grad()
        accumulate_per_position_gradients(model, tokens, mode)
        reference = {name: p.grad.detach().clone() for name, p in model.named_parameters() if p.grad is not None}
        assert _relative_error(ours, reference) < 1e-12


def test_padding_mask_runs_eager(checkpoint_dirs):
    model = load_model(checkpoint_dirs["gpt2"]).eval()
    tokens = _tokens(model)
    mask = torch.ones_like(tokens)
    mask[0, :3] = 0
    ours = model(tokens, attention_mask=mask)
    with sdpa_attention(model, enabled=False):
        eager = model(tokens, attention_mask=mask)
    torch.testing.assert_close(ours, eager)


def test_option_context_and_copies(checkpoint_dirs, tokenizer):
    eager = load_model(checkpoint_dirs["llama"], attention="eager")
    assert not sdpa_installed(eager)
    assert eager.original_model.config._attn_implementation == "eager"
    with sdpa_attention(eager):
        assert sdpa_installed(eager) and eager.original_model.config._attn_implementation == "sdpa"
    assert not sdpa_installed(eager) and eager.original_model.config._attn_implementation == "eager"
    install_sdpa(eager)
    twin = copy_model(eager)
    assert kernel_state(twin) is not kernel_state(eager), "a copy gets its own kernel"
    remove_sdpa(eager)
    assert sdpa_installed(twin) and not sdpa_installed(eager)
    tokens = _tokens(twin)
    torch.testing.assert_close(twin(tokens), eager(tokens), rtol=1e-5, atol=1e-5)
    assert not sdpa_installed(tiny_model(n_layers=1, d_model=16, n_heads=2, d_vocab=20, n_ctx=8,
                                         attention="eager"))
    with pytest.raises(InvalidArgumentError, match="attention='flash'"):
        load_model(checkpoint_dirs["gpt2"], attention="flash")


def test_op_counter_sees_square_tensors():
    with OpCounter(seq_len=5) as counter:
        torch.ones(2, 5, 5).softmax(-1) @ torch.ones(5, 3)
    assert counter.ops >= 3 and counter.square == 2


@pytest.mark.parametrize("family", ["gpt2", "neox", "llama"])
def test_training_steps_create_no_square_tensor_beyond_hf_sdpa(checkpoint_dirs, tokenizer, family, single_thread):
    """Vanilla and myopic steps create no [..., T, T] tensor beyond HF SDPA's own (the eager bridge does)."""
    tokens = torch.randint(0, len(tokenizer), (2, 48), generator=torch.Generator().manual_seed(0))
    counts = training_step_counts(str(checkpoint_dirs[family]), tokens, modes=("strict", "cutgrad"),
                                  tokenizer=tokenizer)
    hf_square = counts["hf-sdpa"][1]
    assert counts["eager"][1] > hf_square
    for name in ("vanilla", "myopic-strict", "myopic-cutgrad"):
        assert counts[name][1] <= hf_square, (name, counts)
