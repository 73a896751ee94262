"""String prompts: tokenised with the model's tokenizer, and the same results as the equivalent token tensors."""

from collections import defaultdict

import pytest
import torch
from devices import DEVICE, tolerance

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
    # one sequence alone and in a batch of two: the same kernels on the CPU, maybe other ones on a GPU
    exact = {"rtol": 0, "atol": 0} if DEVICE.type == "cpu" else tolerance(1e-5, 1e-5)
    torch.testing.assert_close(single["resid"], from_tokens["resid"][:, :1], **exact)


def test_direction_effect_and_past_ablation_take_strings(native_model):
    texts, tokens = _equal_length_texts(native_model, 2)
    direction = torch.randn(native_model.cfg.d_model, generator=torch.Generator().manual_seed(0))
    kwargs = {"layer": 1, "offsets": (0, 1), "n_random": 1, "progress": False}
    from_text = direction_effect(native_model, texts, direction, **kwargs)
    from_tokens = direction_effect(native_model, tokens, direction, **kwargs)
    assert from_text.frame.equals(from_tokens.frame)
    ablation = past_ablation_effect(native_model, texts, progress=False)
    assert ablation.equals(past_ablation_effect(native_model, tokens, progress=False))


# -- one tokenisation of string prompts everywhere: the model's own training convention ----------------------------


def test_the_convention_is_the_models_and_tiny_models_are_trained_without_bos(native_model, tokenizer):
    from forethought.prompts import prepends_bos, set_prepends_bos

    text = "If the object is a list, the"
    plain = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert not prepends_bos(native_model)  # forethought trains on sequences that start without BOS
    assert as_tokens(native_model, text)[0].tolist() == plain
    with_bos = tiny_model(n_layers=1, d_model=16, n_heads=2, d_vocab=len(tokenizer), n_ctx=64, tokenizer=tokenizer,
                          prepend_bos=True)
    assert prepends_bos(with_bos) and as_tokens(with_bos, text)[0].tolist() == [tokenizer.bos_token_id, *plain]
    assert set_prepends_bos(with_bos, False) is with_bos and as_tokens(with_bos, text)[0].tolist() == plain
    with pytest.raises(InvalidArgumentError):
        set_prepends_bos(with_bos, "yes")


@pytest.mark.parametrize("prepend_bos", [False, True])
def test_one_string_lands_on_the_same_positions_everywhere(tokenizer, prepend_bos):
    """patch_positions, transplant, greedy, collect_activations and the lens view cut a string the same way."""
    from forethought.probes.lens_view import prompt_tokens

    model = tiny_model(n_layers=2, d_model=32, n_heads=4, d_vocab=len(tokenizer), n_ctx=64, tokenizer=tokenizer,
                       prepend_bos=prepend_bos)
    text = "If the object is a list, the"
    expected = as_tokens(model, text)
    assert (expected[0, 0].item() == tokenizer.bos_token_id) == prepend_bos
    assert torch.equal(prompt_tokens(model, text), expected)  # the lens view once never prepended BOS
    assert torch.equal(collect_activations(model, text, hooks=["resid"], progress=False).tokens, expected)
    patched = patch_positions(model, text, text, "kl", layers=[0], progress=False)
    assert patched.labels == [tokenizer.decode([t]) for t in expected[0].tolist()]
    moved = transplant(model, text, prompts=[text], n_steps=1, progress=False)
    assert torch.equal(moved.continuation, greedy(model, expected, n_steps=1)[0])


def test_saved_models_keep_their_convention(tmp_path, tokenizer, checkpoint_dirs):
    from forethought.models import load_model, save_model
    from forethought.prompts import prepends_bos, set_prepends_bos

    native = tiny_model(n_layers=1, d_model=16, n_heads=2, d_vocab=len(tokenizer), n_ctx=16, tokenizer=tokenizer)
    assert not prepends_bos(load_model(save_model(native, tmp_path / "native")))
    hf = load_model(checkpoint_dirs["gpt2"])
    assert prepends_bos(hf)  # TransformerLens' default for GPT-2 when nothing says otherwise
    loaded = load_model(save_model(set_prepends_bos(hf, False), tmp_path / "gpt2"))
    assert not prepends_bos(loaded)
    set_prepends_bos(hf, True)  # the fixture is shared


def test_runs_record_and_restore_the_convention(tmp_path, tokenizer):
    from forethought.data import load_token_splits
    from forethought.models import PROMPTS_FILE, save_model
    from forethought.prompts import prepends_bos
    from forethought.runs import load_run, write_run

    splits = load_token_splits("builtin", tokenizer, seq_len=16, max_documents=20)
    assert splits.manifest["prepend_bos"] is False  # the sequences are cut from a stream: none starts with BOS
    model = tiny_model(n_layers=1, d_model=16, n_heads=2, d_vocab=len(tokenizer), n_ctx=16, tokenizer=tokenizer,
                       prepend_bos=True)
    save_model(model, tmp_path / "model")
    (tmp_path / "model" / PROMPTS_FILE).unlink()  # as a model saved before the convention was recorded
    write_run(tmp_path, "train", splits, {"model": {"path": "model", "trained_as": "vanilla"}})
    run = load_run(tmp_path)
    assert run.manifest["prepend_bos"] is False and not prepends_bos(run.models["model"])
