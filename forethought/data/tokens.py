"""From text to fixed-length token sequences: tokenizers, chunking and a seeded train/validation split.

Example:
    >>> from forethought.data import load_texts, train_tokenizer, make_token_splits
    >>> texts = load_texts("builtin")[:20]
    >>> tokenizer = train_tokenizer(texts, vocab_size=300)
    >>> data = make_token_splits(texts, tokenizer, seq_len=32, val_fraction=0.1, seed=0)
    >>> data.train.shape[1], data.train.dtype
    (32, torch.int64)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Int
from torch import Tensor

from forethought.errors import ContextLengthError, DataError, InvalidArgumentError, VocabularyMismatchError

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

SPECIAL_TOKENS = ["<|endoftext|>"]
#: Whether the sequences cut here start with a BOS token: never (they are cut from a stream of documents joined by
#: EOS), so models trained on them take string prompts without one (:func:`forethought.prompts.prepends_bos`).
PREPEND_BOS = False


def train_tokenizer(texts: list[str], vocab_size: int = 1024, min_frequency: int = 2) -> Any:
    """Train a byte-level BPE tokenizer on ``texts`` (for models trained from scratch).

    Returns a ``transformers.PreTrainedTokenizerFast`` whose ``<|endoftext|>`` token (id 0) is BOS, EOS and
    padding. Training is deterministic for the same texts.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int):
        raise InvalidArgumentError(f"vocab_size={vocab_size!r} is not allowed; expected an integer of at least 258")
    if vocab_size < 257 + len(SPECIAL_TOKENS):
        raise InvalidArgumentError(f"vocab_size={vocab_size} is too small; a byte-level BPE needs at least 258")
    if not texts:
        raise DataError("cannot train a tokenizer on an empty corpus; pass at least one document")
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator(texts, trainer=trainer)
    eos = SPECIAL_TOKENS[0]
    # add_bos_token and name_or_path let TransformerLens adopt the tokenizer as it is.
    return PreTrainedTokenizerFast(tokenizer_object=core, bos_token=eos, eos_token=eos, pad_token=eos,
                                   unk_token=eos, add_bos_token=True, name_or_path="forethought-bpe")


def tokenize_and_chunk(
    texts: list[str],
    tokenizer: Any,
    seq_len: int,
    min_doc_tokens: int | None = None,
    max_sequences: int | None = None,
) -> Int[Tensor, "n_seq seq_len"]:
    """Tokenise documents and cut them into ``seq_len``-token sequences.

    Without ``min_doc_tokens`` documents are joined with the EOS token and the stream is cut into
    consecutive sequences (the usual LM set-up). With it, only documents of at least that many tokens are
    kept and sequences never cross a document boundary (the paper's 64-token passages).
    """
    if not isinstance(seq_len, int) or seq_len < 2:
        raise InvalidArgumentError(f"seq_len={seq_len!r} is not allowed; expected an integer >= 2")
    if not texts:
        raise DataError("the corpus is empty; pass at least one document")
    ids = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    eos = tokenizer.eos_token_id
    if min_doc_tokens is None:
        stream = [token for doc in ids for token in ([*doc, eos] if eos is not None else doc)]
        pieces = [stream[i : i + seq_len] for i in range(0, len(stream) - seq_len + 1, seq_len)]
    else:
        pieces = [doc[i : i + seq_len] for doc in ids if len(doc) >= max(min_doc_tokens, seq_len)
                  for i in range(0, len(doc) - seq_len + 1, seq_len)]
    if max_sequences is not None:
        pieces = pieces[:max_sequences]
    if not pieces:
        total = sum(len(doc) for doc in ids)
        raise DataError(
            f"the corpus is too short: {len(texts)} documents, {total} tokens give no sequence of "
            f"seq_len={seq_len}" + (f" from documents of >= {min_doc_tokens} tokens" if min_doc_tokens else "")
        )
    return torch.tensor(pieces, dtype=torch.long, device="cpu")  # token data live on the host


def split_sequences(
    tokens: Int[Tensor, "n_seq seq_len"], val_fraction: float = 0.1, seed: int = 0
) -> tuple[Int[Tensor, "n_train seq_len"], Int[Tensor, "n_val seq_len"]]:
    """Shuffle sequences with ``seed`` and split them into train and validation sets (both non-empty)."""
    if not 0 < val_fraction < 1:
        raise InvalidArgumentError(f"val_fraction={val_fraction!r} is not allowed; expected 0 < val_fraction < 1")
    if len(tokens) < 2:
        raise DataError(f"{len(tokens)} sequence(s) cannot be split into train and validation; need at least 2")
    order = torch.randperm(len(tokens), generator=torch.Generator(device="cpu").manual_seed(seed), device="cpu")
    n_val = min(max(1, round(val_fraction * len(tokens))), len(tokens) - 1)
    return tokens[order[n_val:]], tokens[order[:n_val]]


@dataclass
class TokenSplits:
    """Train and validation token sequences and the tokenizer that made them.

    ``manifest`` (when the splits came from :func:`forethought.data.load_token_splits` or a run) records how to
    rebuild them exactly (see :mod:`forethought.data.manifest`).
    """

    train: Int[Tensor, "n_train seq_len"]
    validation: Int[Tensor, "n_val seq_len"]
    tokenizer: Any
    manifest: dict[str, Any] | None = None

    @property
    def seq_len(self) -> int:
        """Tokens per sequence."""
        return self.train.shape[1]


def make_token_splits(
    texts: list[str],
    tokenizer: Any,
    seq_len: int,
    val_fraction: float = 0.1,
    seed: int = 0,
    min_doc_tokens: int | None = None,
    max_sequences: int | None = None,
) -> TokenSplits:
    """Tokenise, chunk and split in one call (see :func:`tokenize_and_chunk` and :func:`split_sequences`)."""
    tokens = tokenize_and_chunk(texts, tokenizer, seq_len, min_doc_tokens=min_doc_tokens,
                                max_sequences=max_sequences)
    train, validation = split_sequences(tokens, val_fraction=val_fraction, seed=seed)
    return TokenSplits(train=train, validation=validation, tokenizer=tokenizer)


def check_tokens_fit(model: TransformerBridge, tokens: Tensor) -> None:
    """Raise a clear error unless ``tokens`` can be fed to ``model`` (ids in vocabulary, length in context)."""
    if tokens.dtype not in (torch.int64, torch.int32) or tokens.ndim != 2:
        raise InvalidArgumentError(
            f"tokens must be an integer tensor of shape [batch, pos]; got {tokens.dtype} "
            f"with shape {tuple(tokens.shape)}"
        )
    if tokens.numel() == 0:
        raise DataError("tokens are empty; pass at least one sequence of at least one token")
    if tokens.shape[1] > model.cfg.n_ctx:
        raise ContextLengthError(
            f"sequence length {tokens.shape[1]} exceeds the model's context n_ctx={model.cfg.n_ctx}; "
            f"use seq_len <= {model.cfg.n_ctx}"
        )
    high, low = int(tokens.max()), int(tokens.min())
    if high >= model.cfg.d_vocab or low < 0:
        raise VocabularyMismatchError(
            f"token id {high if high >= model.cfg.d_vocab else low} is outside the model's vocabulary "
            f"[0, {model.cfg.d_vocab}); were these tokens made with another tokenizer?"
        )
