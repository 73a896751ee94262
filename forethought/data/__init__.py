"""Token sources: text corpora (builtin offline corpus, local files, HF datasets), tokenizers, chunking.

Synthetic tasks live in :mod:`forethought.synthetic`.
"""

from forethought.data.manifest import load_token_splits, rebuild_splits
from forethought.data.text import BUILTIN, builtin_corpus, load_texts
from forethought.data.tokens import (
    TokenSplits,
    check_tokens_fit,
    make_token_splits,
    split_sequences,
    tokenize_and_chunk,
    train_tokenizer,
)

__all__ = [
    "BUILTIN",
    "TokenSplits",
    "builtin_corpus",
    "check_tokens_fit",
    "load_texts",
    "load_token_splits",
    "make_token_splits",
    "rebuild_splits",
    "split_sequences",
    "tokenize_and_chunk",
    "train_tokenizer",
]
