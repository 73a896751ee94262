"""The model families of current planning studies (Qwen2/3, Gemma-2/3, Mistral, OLMo-2, Phi-3), loaded offline.

One random-weight ``save_pretrained`` directory per family (2 layers, d_model 32, grouped-query attention, a
sliding window of 4 positions where the family has one, q/k norms where it has them), built once per module. Each
family: activation capture, a probe sweep, activation patching against ``transformer_lens.patching``, transplant,
the fused attention kernel against the eager one, and ``myopic()`` against the slow per-position reference.
"""

from dataclasses import replace

import pytest
import torch
import transformer_lens.patching as tl_patching
from devices import DEVICE

import forethought.myopic_training.hooks as hooks
from forethought.activations import collect_activations
from forethought.attention import ablate_past
from forethought.attention.recompute import attend
from forethought.attention.sdpa import kernel_state
from forethought.errors import UnsupportedArchitectureError
from forethought.hook_names import hook_name
from forethought.interventions import LogitDiff, greedy, patch_heads, patch_positions, transplant
from forethought.models import RECENT_FAMILIES, load_model, save_random_checkpoint
from forethought.myopic_training import myopic
from forethought.myopic_training.reference import accumulate_per_position_gradients
from forethought.probes.sweep import ProbeSweepConfig, probe_sweep
from forethought.probes.vocabulary import VocabProbeConfig

pytestmark = pytest.mark.usefixtures("single_thread")

SEQ = 10  # longer than the sliding window, so the window masks something
WINDOW = 4
#: A soft cap small enough to bend the random model's scores (Gemma-2's own, 50, would leave them linear).
SOFTCAP = 0.02
#: What each family's attention has beyond plain causal rotary attention.
FEATURES = {
    "qwen2": set(),
    "qwen3": {"qk_norm"},
    "gemma2": {"window", "softcap", "scale"},
    "gemma3": {"window", "qk_norm", "scale"},
    "mistral": {"window"},
    "olmo2": {"qk_norm"},
    "phi3": set(),
}


@pytest.fixture(scope="module")
def family_dirs(tmp_path_factory, tokenizer):
    root = tmp_path_factory.mktemp("families")
    return {family: save_random_checkpoint(
        family, root / family, d_model=32, n_layers=2, n_heads=4, n_ctx=64, tokenizer=tokenizer, sliding_window=WINDOW,
        config_overrides={"attn_logit_softcapping": SOFTCAP} if family == "gemma2" else None)
        for family in RECENT_FAMILIES}


@pytest.fixture(scope="module", params=RECENT_FAMILIES)
def family(request):
    return request.param


@pytest.fixture(scope="module")
def model(family, family_dirs):
    """The family's model with forethought's default attention (the fused kernel where it applies), in eval mode."""
    return load_model(family_dirs[family], device=DEVICE).eval()


@pytest.fixture(scope="module")
def eager_model(family, family_dirs):
    return load_model(family_dirs[family], device=DEVICE, attention="eager").eval()


def _tokens(model, batch=2, seq=SEQ, seed=0):
    return torch.randint(0, model.cfg.d_vocab, (batch, seq), generator=torch.Generator().manual_seed(seed))


def test_the_checkpoint_has_the_family_features(family, model):
    """The small configs keep what makes each family itself (else the tests below would prove nothing)."""
    hf_config = model.original_model.config
    attn = model.blocks[0].attn
    assert model.cfg.n_layers == 2 and model.cfg.d_model == 32
    assert model.cfg.n_key_value_heads == 2 < model.cfg.n_heads == 4
    assert ("q_norm" in attn.submodules) == ("qk_norm" in FEATURES[family])
    assert (getattr(hf_config, "sliding_window", None) == WINDOW) == ("window" in FEATURES[family])
    assert (getattr(hf_config, "attn_logit_softcapping", None) == SOFTCAP) == ("softcap" in FEATURES[family])
    scale = attn.original_component.scaling
    assert (abs(scale - model.cfg.d_head ** -0.5) > 1e-6) == ("scale" in FEATURES[family])


def test_capture_matches_run_with_cache(model):
    tokens = _tokens(model, batch=3)
    templates = ["resid", "attn.hook_z", "attn.hook_v"]  # OLMo-2 normalises after attention: no ln1
    acts = collect_activations(model, tokens, hooks=templates, batch_size=2, progress=False)
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens)
    for template in templates:
        for index, layer in enumerate(acts.layers_by_hook[template]):
            torch.testing.assert_close(acts[template][index], cache[hook_name(model, template, layer)].cpu(),
                                       rtol=1e-5, atol=1e-5)


def test_sdpa_forward_equals_eager(family, model, eager_model):
    """The fused kernel runs where it reproduces the layer and falls back to the eager attention elsewhere."""
    for seq in (3, SEQ):  # inside and beyond the sliding window
        tokens = _tokens(model, seq=seq)
        with torch.no_grad():
            torch.testing.assert_close(model(tokens), eager_model(tokens), rtol=1e-5, atol=1e-5)
    installed = kernel_state(model) is not None
    assert installed == (family in ("qwen2", "mistral", "phi3"))  # not (yet) on q/k-norm or soft-capped layers


def test_probe_sweep_reads_the_current_token(model):
    """x_{t+2} = f(x_t): the token two ahead is read from the embeddings at offset 1."""
    vocab = 16
    generator = torch.Generator().manual_seed(0)
    step = torch.randperm(vocab, generator=generator)
    tokens = torch.empty(160, 12, dtype=torch.long)
    tokens[:, :2] = torch.randint(0, vocab, (160, 2), generator=generator)
    for t in range(2, tokens.shape[1]):
        tokens[:, t] = step[tokens[:, t - 2]]
    config = ProbeSweepConfig(vocab=VocabProbeConfig(max_epochs=30, patience=3))
    table = probe_sweep(model, tokens, offsets=[1], config=config, progress=False).set_index(["layer", "offset"])
    assert len(table) == model.cfg.n_layers + 1
    assert table.loc[(0, 1), "top1"] > 0.9
    assert table["top1"].notna().all()


def test_patching_matches_transformer_lens(model):
    clean = _tokens(model, seq=5)
    corrupt = clean.clone()
    corrupt[:, 1] = (corrupt[:, 1] + 1) % model.cfg.d_vocab

    def tl_metric(logits):
        return (logits[:, -1, 3] - logits[:, -1, 5]).mean()

    with torch.no_grad():
        _, cache = model.run_with_cache(clean)
        expected = tl_patching.get_act_patch_resid_pre(model, corrupt, cache, tl_metric)
        ours = patch_positions(model, clean, corrupt, LogitDiff(3, 5), hook="hook_resid_pre", progress=False)
        torch.testing.assert_close(ours.values, expected.cpu(), rtol=1e-5, atol=1e-5)
        expected = tl_patching.get_act_patch_attn_head_v_by_pos(model, corrupt, cache, tl_metric)
        ours = patch_heads(model, clean, corrupt, LogitDiff(3, 5), positions="all", hook="attn.hook_v",
                           progress=False)
    assert ours.values.shape == expected.shape  # n_key_value_heads value heads
    torch.testing.assert_close(ours.values, expected.cpu(), rtol=1e-5, atol=1e-5)


def test_transplant_into_the_source_itself_reproduces_its_continuation(model):
    source = _tokens(model, batch=1, seq=6)
    result = transplant(model, source, position=3, prompts=[source[0, :4]], n_steps=3, progress=False)
    assert (result.precision(k=1) == 1).all()
    with torch.no_grad():
        own, _ = greedy(model, source[:, :4], 3)
    assert torch.equal(result.continuation, own.cpu())


def _grads(model):
    return {name: p.grad.detach().clone() for name, p in model.named_parameters() if p.grad is not None}


def _max_relative_error(ours, reference):
    assert ours.keys() == reference.keys()
    scale = max(g.abs().max().item() for g in reference.values())
    return max((ours[name] - reference[name]).abs().max().item() for name in reference) / scale


def _myopic_step(model, tokens, **kwargs):
    model.zero_grad()
    with myopic(model, **kwargs):
        loss = model(tokens, return_type="loss")
    loss.backward()
    return loss.detach(), _grads(model)


def per_position_reference(model, tokens, mode):
    """The myopic gradient by its definition (forethought.myopic_training.reference): for each t, detach the past in
    every layer and back-propagate ℓ_t; ``strict`` detaches the normalised key where the layer has a q/k norm."""
    model.zero_grad()
    accumulate_per_position_gradients(model, tokens, mode)
    return _grads(model)


@pytest.mark.parametrize("mode", ["strict", "cutgrad"])
@pytest.mark.parametrize("seq", [WINDOW, SEQ])
def test_myopic_equals_per_position_reference(model, mode, seq):
    """Exact on every family: q/k norms, sliding windows (inside and beyond), soft caps and score scales."""
    tokens = _tokens(model, seq=seq)
    vanilla_loss = model(tokens, return_type="loss").detach()
    model.zero_grad()
    model(tokens, return_type="loss").backward()
    vanilla = _grads(model)
    loss, ours = _myopic_step(model, tokens, mode=mode)
    reference = per_position_reference(model, tokens, mode)
    assert torch.equal(loss, vanilla_loss), "myopia must not change forward values"
    assert _max_relative_error(ours, reference) < 1e-5
    assert _max_relative_error(ours, vanilla) > 1e-3, "the reference must differ from vanilla"


def test_fused_and_eager_recomputation_agree(model):
    """attention='auto' (fused where plain causal suffices) equals the eager reference path, also with beta."""
    tokens = _tokens(model)
    for mode, beta in (("strict", 0.5), ("cutgrad", 0.0)):
        _, auto = _myopic_step(model, tokens, mode=mode, beta=beta)
        _, eager = _myopic_step(model, tokens, mode=mode, beta=beta, attention="eager")
        assert _max_relative_error(auto, eager) < 1e-5


@pytest.mark.parametrize("feature", ["window", "softcap", "qk_norm", "scale"])
def test_the_recomputation_needs_each_feature(family, model, feature, monkeypatch):
    """Negative control: a recomputation that forgets the window, the soft cap, the q/k norm or the score scale
    is refused (the test models exercise each)."""
    if feature not in FEATURES[family]:
        pytest.skip(f"{family} has no {feature}")
    real = hooks.geometry
    forgotten = {"scale": model.cfg.d_head ** -0.5}.get(feature)
    monkeypatch.setattr(hooks, "geometry", lambda model, layer: replace(real(model, layer), **{feature: forgotten}))
    with pytest.raises(UnsupportedArchitectureError, match="differs from the model's"):
        _myopic_step(model, _tokens(model), mode="strict")


def test_fused_refuses_a_window_shorter_than_the_sequence(family, model):
    if not FEATURES[family] & {"window", "softcap"}:
        pytest.skip(f"{family} attends causally to the whole sequence")
    with pytest.raises(UnsupportedArchitectureError, match="attention='fused' cannot run layer 0"):
        _myopic_step(model, _tokens(model), attention="fused")


def test_ablate_past_makes_outputs_independent_of_the_past(model):
    tokens = _tokens(model, batch=1)
    changed = tokens.clone()
    changed[:, :5] = (changed[:, :5] + 1) % model.cfg.d_vocab
    with torch.no_grad(), ablate_past(model):
        a, b = model(tokens), model(changed)
    torch.testing.assert_close(a[:, 5:], b[:, 5:], atol=1e-5, rtol=1e-5)


def _attend_loop(q, k_self, v_self, k_past, v_past, scale, window, softcap):
    """Query t reads k_past/v_past at t - window < i < t and k_self/v_self at t, soft-capped scores."""
    outputs = []
    for t in range(q.shape[1]):
        start = max(0, t - window + 1)
        keys = torch.cat([k_past[:, start:t], k_self[:, t : t + 1]], dim=1)
        values = torch.cat([v_past[:, start:t], v_self[:, t : t + 1]], dim=1)
        scores = torch.einsum("bhd,bkhd->bhk", q[:, t], keys) * scale
        weights = (softcap * torch.tanh(scores / softcap)).softmax(-1)
        outputs.append(torch.einsum("bhk,bkhd->bhd", weights, values))
    return torch.stack(outputs, dim=1)


def test_banded_soft_capped_attend_equals_per_query_loop():
    generator = torch.Generator().manual_seed(0)
    inputs = [torch.randn(2, 7, 3, 4, generator=generator, requires_grad=True) for _ in range(5)]
    weights = torch.randn(2, 7, 3, 4, generator=generator)
    ours = attend(*inputs, scale=0.5, window=3, softcap=1.5)
    reference = _attend_loop(*inputs, scale=0.5, window=3, softcap=1.5)
    torch.testing.assert_close(ours, reference)
    for a, b in zip(torch.autograd.grad((ours * weights).sum(), inputs),
                    torch.autograd.grad((reference * weights).sum(), inputs), strict=True):
        torch.testing.assert_close(a, b)


def test_a_feature_it_cannot_recompute_is_refused_by_name(family, model, monkeypatch):
    """Norms applied after rotary (HunYuan) would make the hooked normalised key the wrong one: refused up front."""
    if "qk_norm" not in FEATURES[family]:
        pytest.skip(f"{family} has no q/k norm")
    monkeypatch.setattr(model.cfg, "qk_norm_after_rope", True, raising=False)
    with pytest.raises(UnsupportedArchitectureError, match="uses query/key norms after rotary in layer 0"):
        myopic(model)
