"""Future-token transplant: identity, the final-layer sanity check, and generation against TransformerLens."""

import pytest
import torch
from devices import DEVICE

from forethought.errors import ContextLengthError, DataError, ForethoughtError, InvalidArgumentError, OutOfRangeError
from forethought.hook_names import hook_name
from forethought.interventions import (
    NEUTRAL_PROMPTS,
    TransplantResult,
    greedy,
    transplant,
    transplant_hooks,
    transplanted_logits,
)
from forethought.models import tiny_model

N_STEPS = 3


def _sources(model, n=3, seq=6, seed=0):
    return torch.randint(0, model.cfg.d_vocab, (n, seq), generator=torch.Generator().manual_seed(seed))


def test_transplant_into_the_source_itself_reproduces_its_continuation(any_model):
    source = _sources(any_model, n=1)
    position = 3
    prompt = source[0, : position + 1]
    result = transplant(any_model, source, position=position, prompts=[prompt], n_steps=N_STEPS, progress=False)
    assert result.position == position and result.layers == list(range(any_model.cfg.n_layers + 1))
    assert (result.precision(k=1) == 1).all() and (result.baseline_precision(k=1) == 1).all()
    assert torch.equal(result.generated[0], result.continuation.expand_as(result.generated[0]))
    with torch.no_grad():
        own, _ = greedy(any_model, source[:, : position + 1], N_STEPS)
    assert torch.equal(result.continuation, own.cpu())


def test_the_final_state_fixes_the_next_token(any_model):
    """At depth n_layers the transplanted state alone sets the logits at offset 0."""
    result = transplant(any_model, _sources(any_model), prompts=NEUTRAL_PROMPTS[:2], n_steps=N_STEPS, progress=False)
    assert result.ranks.shape == (2, any_model.cfg.n_layers + 1, 3, N_STEPS)
    assert result.precision(k=1)[-1, 0] == 1.0
    assert ((result.ranks >= 0) & (result.ranks < any_model.cfg.d_vocab)).all()
    # precision@k grows with k and reaches 1 at k = d_vocab
    assert (result.precision(k=5) >= result.precision(k=1)).all()
    assert (result.precision(k=any_model.cfg.d_vocab) == 1).all()


def test_greedy_matches_transformer_lens_generate(any_model):
    tokens = _sources(any_model)
    with torch.no_grad():
        ours, logits = greedy(any_model, tokens, 4)
        expected = any_model.generate(tokens, max_new_tokens=4, do_sample=False, stop_at_eos=False,
                                      use_past_kv_cache=False, verbose=False)
    assert torch.equal(ours, expected[:, tokens.shape[1]:].to(ours.device))
    assert torch.equal(logits.argmax(-1), ours)


@pytest.mark.parametrize("family", ["gpt2", "neox"])
def test_transplant_equals_cached_generation_from_the_transplanted_first_forward(checkpoint_dirs, family):
    """Writing the state again in every (recomputing) forward = writing it once and generating from the cache.

    Checked where TransformerLens' cached generation matches uncached generation (HF GPT-2 and NeoX bridges).
    """
    from forethought.models import load_model

    model = load_model(checkpoint_dirs[family], device=DEVICE)
    sources, prompt, layer = _sources(model), torch.tensor([5, 6, 7, 8]), 1
    result = transplant(model, sources, layers=[layer], prompts=[prompt], n_steps=4, progress=False)
    name = hook_name(model, "resid", layer)
    with torch.no_grad():
        _, cache = model.run_with_cache(sources)
    state = cache[name][:, -1]

    def first_forward_only(activation, hook):
        if activation.shape[1] != len(prompt):  # later forwards see one new token; the cache holds the rest
            return activation
        activation = activation.clone()
        activation[:, -1] = state
        return activation

    with torch.no_grad(), model.hooks(fwd_hooks=[(name, first_forward_only)]):
        cached = model.generate(prompt.expand(len(sources), -1), max_new_tokens=4, do_sample=False,
                                stop_at_eos=False, use_past_kv_cache=True, verbose=False)
    assert torch.equal(result.generated[0, 0], cached[:, len(prompt):].cpu())  # results are on the CPU


def test_a_soft_prompt_of_token_embeddings_is_the_token_prompt(any_model):
    """A fixed prompt and a soft prompt (input embeddings) go through one mechanism: same ranks, same tokens."""
    sources, prompt = _sources(any_model), torch.tensor([5, 6, 7, 8])
    with torch.no_grad():
        soft = any_model.embed(prompt[None].to(DEVICE))[0]
    by_tokens, by_embeddings = (transplant(any_model, sources, prompts=[p], n_steps=N_STEPS, progress=False)
                                for p in (prompt, soft))
    assert torch.equal(by_tokens.ranks, by_embeddings.ranks)
    assert torch.equal(by_tokens.generated, by_embeddings.generated)
    assert by_embeddings.prompts == ["<soft prompt of 4 embeddings>"]


def test_transplanted_logits_are_greedys_and_differentiable_in_a_soft_prompt(native_model):
    prompt = native_model.embed(torch.tensor([[5, 6, 7]], device=DEVICE)).detach().expand(2, -1, -1).clone()
    states = torch.randn(2, native_model.cfg.d_model, generator=torch.Generator().manual_seed(0)).to(DEVICE)
    writes = [(hook_name(native_model, "resid", 1), slice(None), states)]
    _, expected = greedy(native_model, prompt, 3, fwd_hooks=transplant_hooks(writes, position=2))
    prompt.requires_grad_(True)
    logits = transplanted_logits(native_model, prompt, writes, n_steps=3)
    torch.testing.assert_close(logits.detach(), expected, rtol=1e-5, atol=1e-5)
    gradient, = torch.autograd.grad(logits[:, -1].logsumexp(-1).sum(), [prompt])
    assert gradient[:, :2].abs().sum() > 0  # step 2 reads the prompt through attention
    assert all(p.grad is None for p in native_model.parameters())


def test_tables_and_frames(native_model):
    result = transplant(native_model, _sources(native_model, n=4), layers=[0, 2], prompts=["Hello there", [1, 2, 3]],
                        n_steps=2, batch_size=3, progress=False)
    assert isinstance(result, TransplantResult)
    table = result.precision_table(k=1)
    assert list(table.index) == [0, 2, "none"] and list(table.columns) == [0, 1]
    frame = result.to_frame(ks=(1, 5))
    assert len(frame) == 2 * 2 * 2 * 3  # k x prompt x offset x (no transplant + 2 layers)
    assert set(frame["prompt"]) == {"Hello there", "1 2 3"}
    per_prompt = result.precision(k=1, per_prompt=True)
    assert per_prompt.shape == (2, 2, 2)
    torch.testing.assert_close(per_prompt.mean(0), result.precision(k=1))


def test_batches_do_not_change_results(native_model):
    kwargs = {"prompts": [[4, 5, 6]], "n_steps": 2, "progress": False}
    sources = _sources(native_model, n=5)
    a, b = transplant(native_model, sources, batch_size=64, **kwargs), transplant(native_model, sources, batch_size=2,
                                                                                  **kwargs)
    assert torch.equal(a.ranks, b.ranks) and torch.equal(a.continuation, b.continuation)


def test_hooks_are_removed(native_model):
    transplant(native_model, _sources(native_model), prompts=[[1, 2]], n_steps=1, progress=False)
    with pytest.raises(RuntimeError):
        greedy(native_model, _sources(native_model), 2, fwd_hooks=[("blocks.0.hook_resid_pre", _raise)])
    assert all(not point._forward_hooks for point in native_model.hook_dict.values())


def _raise(activation, hook):
    raise RuntimeError("boom")


@pytest.mark.parametrize(("kwargs", "error"), [
    ({"prompts": []}, DataError),
    ({"prompts": [[]]}, InvalidArgumentError),
    ({"prompts": [[1.5, 2.0]]}, InvalidArgumentError),
    ({"prompts": [torch.zeros(2, 2, dtype=torch.long)]}, InvalidArgumentError),
    ({"prompts": [[10_000]]}, ForethoughtError),
    ({"prompts": [list(range(62))]}, ContextLengthError),
    ({"prompts": [torch.zeros(3, 7)]}, InvalidArgumentError),  # a soft prompt of the wrong width
    ({"prompts": [torch.zeros(62, 32)]}, ContextLengthError),
    ({"layers": [9]}, OutOfRangeError),
    ({"position": 6}, OutOfRangeError),
    ({"n_steps": 0}, InvalidArgumentError),
])
def test_bad_input_raises(native_model, kwargs, error):
    with pytest.raises(error):
        transplant(native_model, _sources(native_model), **{"prompts": [[1, 2]], "progress": False, **kwargs})


def test_string_prompts_need_a_tokenizer():
    model = tiny_model(n_layers=1, d_model=16, n_heads=2, d_vocab=20, n_ctx=16, device=DEVICE)
    with pytest.raises(InvalidArgumentError, match="tokenizer"):
        transplant(model, torch.tensor([[1, 2, 3]]), progress=False)
