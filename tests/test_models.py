import pytest
import torch
from devices import DEVICE

from forethought.errors import InvalidArgumentError, ModelNotAvailableError
from forethought.models import FAMILIES, is_native, load_model, save_model, save_random_checkpoint, tiny_model


@pytest.mark.parametrize("family", FAMILIES)
def test_hf_checkpoint_logits_match_hf_forward(family, checkpoint_dirs):
    import transformers

    bridge = load_model(checkpoint_dirs[family], device=DEVICE)
    reference = transformers.AutoModelForCausalLM.from_pretrained(checkpoint_dirs[family], attn_implementation="eager")
    reference.eval()
    tokens = torch.randint(0, bridge.cfg.d_vocab, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = bridge(tokens)
        theirs = reference(tokens).logits
    assert ours.shape == theirs.shape
    torch.testing.assert_close(ours.cpu(), theirs, atol=1e-4, rtol=1e-4)
    assert not is_native(bridge)


def test_tiny_model_is_native_and_seeded():
    first = tiny_model(n_layers=1, d_model=16, n_heads=2, d_vocab=20, n_ctx=8, seed=3, device=DEVICE)
    again = tiny_model(n_layers=1, d_model=16, n_heads=2, d_vocab=20, n_ctx=8, seed=3, device=DEVICE)
    tokens = torch.arange(8).unsqueeze(0)
    assert is_native(first)
    torch.testing.assert_close(first(tokens), again(tokens), rtol=0, atol=0)


def test_native_save_load_round_trip(tmp_path, tokenizer):
    model = tiny_model(n_layers=2, d_model=16, n_heads=2, d_vocab=len(tokenizer), n_ctx=16, tokenizer=tokenizer,
                       device=DEVICE)
    save_model(model, tmp_path / "saved")
    again = load_model(tmp_path / "saved", device=DEVICE)
    tokens = torch.randint(0, len(tokenizer), (2, 16))
    torch.testing.assert_close(model(tokens), again(tokens), rtol=0, atol=0)
    assert again.tokenizer is not None and len(again.tokenizer) == len(tokenizer)


def test_hf_save_load_round_trip(tmp_path, checkpoint_dirs):
    model = load_model(checkpoint_dirs["gpt2"], device=DEVICE)
    save_model(model, tmp_path / "copy")
    tokens = torch.randint(0, model.cfg.d_vocab, (1, 10))
    torch.testing.assert_close(model(tokens), load_model(tmp_path / "copy", device=DEVICE)(tokens))


def test_unknown_model_offline_says_how_to_fix():
    with pytest.raises(ModelNotAvailableError, match="not available offline"):
        load_model("no-such-org/no-such-model-xyz")


def test_directory_without_model(tmp_path):
    with pytest.raises(ModelNotAvailableError, match="config.json"):
        load_model(tmp_path)


@pytest.mark.parametrize("kwargs", [{"d_model": 30, "n_heads": 4}, {"n_layers": 0}, {"d_vocab": -1}])
def test_tiny_model_rejects_bad_sizes(kwargs):
    with pytest.raises(InvalidArgumentError):
        tiny_model(**kwargs)


def test_loading_and_saving_show_no_third_party_progress_bars(tmp_path, tokenizer, capsys):
    """transformers' per-file bars ("Loading weights", "Writing model shards") stay hidden, and its own setting is
    left as it was."""
    from transformers.utils import logging as hf_logging

    before = hf_logging.is_progress_bar_enabled()
    path = save_random_checkpoint("gpt2", tmp_path / "gpt2", d_model=16, n_layers=1, n_heads=2, n_ctx=16,
                                  tokenizer=tokenizer)
    save_model(load_model(path, device=DEVICE), tmp_path / "again")
    captured = capsys.readouterr()
    assert "Loading weights" not in captured.err and "Writing model shards" not in captured.err
    assert hf_logging.is_progress_bar_enabled() == before
