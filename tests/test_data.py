import json

import pytest
import torch
from devices import DEVICE

from forethought.data import (
    builtin_corpus,
    check_tokens_fit,
    load_texts,
    make_token_splits,
    split_sequences,
    tokenize_and_chunk,
    train_tokenizer,
)
from forethought.errors import ContextLengthError, DataError, InvalidArgumentError, VocabularyMismatchError
from forethought.models import tiny_model


def test_builtin_corpus_is_large_english_text():
    texts = builtin_corpus()
    assert len(texts) > 50
    assert sum(map(len, texts)) > 300_000
    assert load_texts("builtin", max_documents=5) == texts[:5]


def test_local_txt_jsonl_and_directory(tmp_path):
    (tmp_path / "a.txt").write_text("first doc\n\nsecond doc\n")
    (tmp_path / "b.jsonl").write_text(json.dumps({"text": "third"}) + "\n" + json.dumps({"text": "fourth"}) + "\n")
    assert load_texts(tmp_path / "a.txt") == ["first doc", "second doc"]
    assert load_texts(tmp_path / "b.jsonl") == ["third", "fourth"]
    assert load_texts(tmp_path) == ["first doc", "second doc", "third", "fourth"]


def test_jsonl_without_field_names_it(tmp_path):
    (tmp_path / "c.jsonl").write_text(json.dumps({"body": "x"}) + "\n")
    with pytest.raises(DataError, match="'text'"):
        load_texts(tmp_path / "c.jsonl")


def test_empty_corpus(tmp_path):
    (tmp_path / "empty.txt").write_text("\n\n  \n")
    with pytest.raises(DataError, match="empty"):
        load_texts(tmp_path / "empty.txt")
    with pytest.raises(DataError):
        load_texts(tmp_path / "missing.txt")


def test_unknown_hf_dataset_offline_is_a_data_error():
    with pytest.raises(DataError, match="could not be loaded"):
        load_texts("no-such-org/no-such-dataset-xyz")


def test_tokenizer_round_trips_text(tokenizer):
    text = "The with statement is used to wrap the execution of a block."
    ids = tokenizer(text)["input_ids"]
    assert ids[0] == tokenizer.bos_token_id
    assert tokenizer.decode(ids, skip_special_tokens=True) == text
    assert tokenizer.eos_token_id == 0


def test_chunking_concatenates_with_eos(tokenizer):
    tokens = tokenize_and_chunk(["a b c d e f g", "h i j k"], tokenizer, seq_len=4)
    stream = tokenizer(["a b c d e f g", "h i j k"], add_special_tokens=False)["input_ids"]
    flat = [t for doc in stream for t in [*doc, 0]]
    assert tokens.shape[1] == 4
    assert tokens.flatten().tolist() == flat[: tokens.numel()]


def test_min_doc_tokens_keeps_sequences_inside_documents(tokenizer):
    texts = ["short", " ".join(["word"] * 50)]
    tokens = tokenize_and_chunk(texts, tokenizer, seq_len=8, min_doc_tokens=20)
    long_ids = tokenizer(texts[1], add_special_tokens=False)["input_ids"]
    assert tokens.shape == (len(long_ids) // 8, 8)
    assert (tokens != 0).all()


def test_too_short_corpus(tokenizer):
    with pytest.raises(DataError, match="too short"):
        tokenize_and_chunk(["tiny"], tokenizer, seq_len=64)


def test_split_is_deterministic_and_disjoint():
    tokens = torch.arange(100).reshape(50, 2)
    train, val = split_sequences(tokens, val_fraction=0.2, seed=1)
    again_train, again_val = split_sequences(tokens, val_fraction=0.2, seed=1)
    assert torch.equal(train, again_train) and torch.equal(val, again_val)
    assert len(val) == 10 and len(train) == 40
    assert not set(train[:, 0].tolist()) & set(val[:, 0].tolist())
    other_train, _ = split_sequences(tokens, val_fraction=0.2, seed=2)
    assert not torch.equal(train, other_train)


def test_make_token_splits(tokenizer):
    data = make_token_splits(load_texts("builtin")[:10], tokenizer, seq_len=32, seed=0)
    assert data.seq_len == 32 and len(data.validation) >= 1 and data.tokenizer is tokenizer


def test_tokenizer_needs_room_for_bytes():
    with pytest.raises(InvalidArgumentError, match="vocab_size"):
        train_tokenizer(["abc"], vocab_size=100)


def test_tokens_must_fit_the_model():
    model = tiny_model(n_layers=1, d_model=16, n_heads=2, d_vocab=20, n_ctx=8, device=DEVICE)
    check_tokens_fit(model, torch.zeros(2, 8, dtype=torch.long))
    with pytest.raises(ContextLengthError, match="n_ctx=8"):
        check_tokens_fit(model, torch.zeros(2, 9, dtype=torch.long))
    with pytest.raises(VocabularyMismatchError, match="token id 25"):
        check_tokens_fit(model, torch.full((1, 4), 25))
    with pytest.raises(InvalidArgumentError):
        check_tokens_fit(model, torch.zeros(4))


def test_manifest_rebuilds_the_exact_split_and_refuses_changed_data(tmp_path, tokenizer):
    """load_token_splits records how the data was made; rebuild_splits repeats it, and refuses a changed file,
    another tokenizer or a manifest that no longer matches the tokens it produces."""
    from forethought.data import load_token_splits, rebuild_splits, train_tokenizer

    corpus = tmp_path / "docs.jsonl"
    corpus.write_text("\n".join(json.dumps({"body": text}) for text in load_texts("builtin")[:15]))
    splits = load_token_splits(corpus, tokenizer, seq_len=16, text_field="body", max_sequences=60,
                               val_fraction=0.25, seed=3)
    manifest = splits.manifest
    assert manifest["dataset"] == str(corpus.resolve()) and manifest["text_field"] == "body"
    assert (manifest["n_train"], manifest["n_validation"]) == (45, 15)
    again = rebuild_splits(manifest, tokenizer)
    assert torch.equal(again.train, splits.train) and torch.equal(again.validation, splits.validation)

    other = train_tokenizer(load_texts("builtin")[20:40], vocab_size=300)
    with pytest.raises(DataError, match="tokenizer differs"):
        rebuild_splits(manifest, other)
    with pytest.raises(DataError, match="cannot be rebuilt identically"):
        rebuild_splits({**manifest, "validation_sha256": "0" * 64}, tokenizer)
    corpus.write_text(corpus.read_text().replace("the", "a"))
    with pytest.raises(DataError, match="changed since the run"):
        rebuild_splits(manifest, tokenizer)
