"""String prompts: tokenised with the model's tokenizer, and the same results as the equivalent token tensors."""

from collections import defaultdict

import pytest
import torch
from devices import DEVICE

from forethought.activations import collect_activations
from forethought.data import load_texts
from forethought.errors import ContextLengthError, InvalidArgumentError
from forethought.interventions import (
    direction_effect,
    greedy,
    past_ablation_effect,
    patch_heads,
    patch_positions,
    transplant,
)
from forethought.losses import loss_by_position
from forethought.models import tiny_model
from forethought.prompts import as_tokens

pytestmark = pytest.mark.usefixtures("single_thread")


def _equal_length_texts(model, n, words=3):
    """``n`` short phrases from the builtin corpus that tokenise to the same length, and their tokens."""
    by_length = defaultdict(list)
    for text in load_texts("builtin")[:5]:
        parts = text.split()
        for start in range(0, len(parts) - words, words):
            phrase = " ".join(parts[start : start + words])
            by_length[model.to_tokens(phrase).shape[1]].append(phrase)
    length, phrases = max(by_length.items(), key=lambda item: (len(item[1]) >= n, item[0] <= 12, len(item[1])))
    assert len(phrases) >= n
    phrases = phrases[:n]
    return phrases, torch.cat([model.to_tokens(p).cpu() for p in phrases])


def _no_tokenizer_model():
    return tiny_model(n_layers=1, d_model=16, n_heads=2, d_vocab=20, n_ctx=16, device=DEVICE)


def test_as_tokens_tokenises_each_string_with_the_model_tokenizer(native_model):
    texts, tokens = _equal_length_texts(native_model, 3)
    assert torch.equal(as_tokens(native_model, texts), tokens)
    assert torch.equal(as_tokens(native_model, texts[0]), tokens[:1])
    assert as_tokens(native_model, texts).dtype == torch.long
    one = torch.tensor([1, 2, 3])
    assert torch.equal(as_tokens(native_model, one), one[None])
    assert as_tokens(native_model, tokens) is tokens  # tensors pass through untouched


def test_ragged_strings_are_refused_with_one_clear_error(native_model):
    with pytest.raises(InvalidArgumentError, match="different lengths.*equal token length.*token tensors"):
        as_tokens(native_model, ["a", "a much longer prompt than the first"])
    for call in (lambda p: patch_positions(native_model, p, p, "kl", progress=False),
                 lambda p: transplant(native_model, p, prompts=[[1, 2]], n_steps=1, progress=False),
                 lambda p: collect_activations(native_model, p, progress=False),
                 lambda p: loss_by_position(native_model, p)):
        with pytest.raises(InvalidArgumentError, match="different lengths"):
            call(["a", "a much longer prompt than the first"])


def test_strings_need_a_tokenizer():
    model = _no_tokenizer_model()
    with pytest.raises(InvalidArgumentError, match="no tokenizer"):
        as_tokens(model, "some text")
    with pytest.raises(InvalidArgumentError, match="no tokenizer"):
        collect_activations(model, "text", progress=False)  # once a raw AttributeError
    with pytest.raises(InvalidArgumentError, match="no tokenizer"):
        patch_positions(model, ["a b"], ["a c"], "kl", progress=False)


@pytest.mark.parametrize("bad", [[1, 2, 3], [], 3, None, ["ok", 3]])
def test_other_values_are_refused(native_model, bad):
    with pytest.raises(InvalidArgumentError, match="a string, a list of strings or an integer torch.Tensor"):
        as_tokens(native_model, bad)


def test_strings_longer_than_the_context_are_refused_not_truncated(native_model):
    with pytest.raises(ContextLengthError):
        as_tokens(native_model, " ".join(load_texts("builtin")[0].split()[:200]))


def test_patching_strings_equals_patching_their_tokens(native_model):
    texts, tokens = _equal_length_texts(native_model, 4)
    clean, corrupt = texts[:2], texts[2:]
    from_text = patch_positions(native_model, clean, corrupt, "kl", layers=[0, 1], progress=False)
    from_tokens = patch_positions(native_model, tokens[:2], tokens[2:], "kl", layers=[0, 1], progress=False)
    assert torch.equal(from_text.per_example, from_tokens.per_example)
    assert torch.equal(from_text.clean_baseline, from_tokens.clean_baseline)
    assert from_text.labels == from_tokens.labels
    heads_text = patch_heads(native_model, texts[0], texts[1], "kl", layers=[1], progress=False)
    heads_tokens = patch_heads(native_model, tokens[:1], tokens[1:2], "kl", layers=[1], progress=False)
    assert torch.equal(heads_text.per_example, heads_tokens.per_example)


def test_transplant_strings_equal_their_tokens(native_model):
    texts, tokens = _equal_length_texts(native_model, 3)
    kwargs = {"layers": [0, 2], "n_steps": 2, "progress": False}
    from_text = transplant(native_model, texts, prompts=[texts[0]], **kwargs)
    from_tokens = transplant(native_model, tokens, prompts=[tokens[0]], **kwargs)
    assert torch.equal(from_text.ranks, from_tokens.ranks)
    assert torch.equal(from_text.generated, from_tokens.generated)
    assert torch.equal(from_text.continuation, from_tokens.continuation)
    out, logits = greedy(native_model, texts, n_steps=2)
    expected_out, expected_logits = greedy(native_model, tokens, n_steps=2)
    assert torch.equal(out, expected_out) and torch.equal(logits, expected_logits)


def test_collect_activations_from_strings_equals_from_tokens(native_model):
    texts, tokens = _equal_length_texts(native_model, 3)
    from_text = collect_activations(native_model, texts, hooks=["resid"], batch_size=2, progress=False)
    from_tokens = collect_activations(native_model, tokens, hooks=["resid"], batch_size=2, progress=False)
    assert torch.equal(from_text.tokens, tokens)
    assert torch.equal(from_text["resid"], from_tokens["resid"])
    single = collect_activations(native_model, texts[0], hooks=["resid"], progress=False)
    assert torch.equal(single["resid"], from_tokens["resid"][:, :1])


def test_direction_effect_and_past_ablation_take_strings(native_model):
    texts, tokens = _equal_length_texts(native_model, 2)
    direction = torch.randn(native_model.cfg.d_model, generator=torch.Generator().manual_seed(0))
    kwargs = {"layer": 1, "offsets": (0, 1), "n_random": 1, "progress": False}
    from_text = direction_effect(native_model, texts, direction, **kwargs)
    from_tokens = direction_effect(native_model, tokens, direction, **kwargs)
    assert from_text.frame.equals(from_tokens.frame)
    ablation = past_ablation_effect(native_model, texts, progress=False)
    assert ablation.equals(past_ablation_effect(native_model, tokens, progress=False))
