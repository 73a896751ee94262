"""Data manifests: everything needed to rebuild a run's exact token sequences and split, and the check that does.

:func:`load_token_splits` loads a text source, tokenises, chunks and splits it (as
:func:`~forethought.data.make_token_splits`) and attaches a **manifest** to the splits: the source (dataset name
or absolute path, text field, dataset split, ``max_documents``, a SHA-256 of the documents used), the tokenizer
(name and a hash of its vocabulary), ``seq_len``, ``min_doc_tokens``, ``max_sequences``, ``val_fraction``,
``seed``, ``prepend_bos`` (whether the sequences start with a BOS token: never, and so neither do string prompts
for the models trained on them), and SHA-256 hashes of the training and validation token tensors.
:func:`rebuild_splits` builds the splits again from a manifest and refuses (:class:`~forethought.errors.DataError`,
one line) when anything differs: a changed dataset file, another Python's builtin corpus, another tokenizer, a
different split.

Example:
    >>> from forethought.data import load_texts, train_tokenizer
    >>> tokenizer = train_tokenizer(load_texts("builtin")[:20], vocab_size=300)
    >>> splits = load_token_splits("builtin", tokenizer, seq_len=32, max_documents=20)
    >>> again = rebuild_splits(splits.manifest, tokenizer)
    >>> bool((again.validation == splits.validation).all()), splits.manifest["seq_len"]
    (True, 32)
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor

from forethought.data.text import BUILTIN, load_texts
from forethought.data.tokens import PREPEND_BOS, TokenSplits, make_token_splits
from forethought.errors import DataError, InvalidArgumentError

MANIFEST_VERSION = 1
REBUILT = ("dataset", "text_field", "split", "max_documents", "seq_len", "min_doc_tokens", "max_sequences",
           "val_fraction", "seed")


def texts_sha256(texts: list[str]) -> str:
    """SHA-256 of a list of documents (order and boundaries included)."""
    digest = hashlib.sha256()
    for text in texts:
        encoded = text.encode("utf-8", errors="surrogatepass")
        digest.update(len(encoded).to_bytes(8, "little") + encoded)
    return digest.hexdigest()


def tokens_sha256(tokens: Tensor) -> str:
    """SHA-256 of a token tensor's shape and int64 values."""
    array = np.ascontiguousarray(tokens.detach().cpu().long().numpy())
    return hashlib.sha256(repr(tuple(array.shape)).encode() + array.tobytes()).hexdigest()


def tokenizer_sha256(tokenizer: Any) -> str:
    """SHA-256 of a tokenizer's vocabulary (token → id) and its special tokens."""
    vocab = sorted(tokenizer.get_vocab().items())
    special = {"bos": tokenizer.bos_token_id, "eos": tokenizer.eos_token_id}
    return hashlib.sha256(json.dumps([vocab, special]).encode()).hexdigest()


def _source_name(dataset: str | os.PathLike) -> str:
    """``"builtin"`` or a hub name as they are; a local file or directory as an absolute path."""
    path = Path(dataset).expanduser()
    if str(dataset) != BUILTIN and path.exists():
        return str(path.resolve())
    return str(dataset)


def load_token_splits(
    dataset: str | os.PathLike,
    tokenizer: Any,
    seq_len: int,
    *,
    text_field: str = "text",
    split: str = "train",
    max_documents: int | None = None,
    min_doc_tokens: int | None = None,
    max_sequences: int | None = None,
    val_fraction: float = 0.1,
    seed: int = 0,
) -> TokenSplits:
    """Load ``dataset`` and cut it into recorded train/validation splits of ``seq_len``-token sequences.

    The texts come from :func:`~forethought.data.load_texts`; they are tokenised with ``tokenizer``, split with
    ``seed``, and how is recorded in ``splits.manifest`` (see the module docstring).
    ``tokenizer`` may be a callable ``texts -> tokenizer`` (e.g. to train a BPE on the loaded documents).
    """
    texts = load_texts(dataset, split=split, text_field=text_field, max_documents=max_documents)
    if callable(tokenizer) and not hasattr(tokenizer, "get_vocab"):
        tokenizer = tokenizer(texts)
    splits = make_token_splits(texts, tokenizer, seq_len=seq_len, val_fraction=val_fraction, seed=seed,
                               min_doc_tokens=min_doc_tokens, max_sequences=max_sequences)
    splits.manifest = {
        "version": MANIFEST_VERSION, "dataset": _source_name(dataset), "text_field": text_field, "split": split,
        "max_documents": max_documents, "seq_len": seq_len, "min_doc_tokens": min_doc_tokens,
        "max_sequences": max_sequences, "val_fraction": val_fraction, "seed": seed, "prepend_bos": PREPEND_BOS,
        "n_documents": len(texts), "texts_sha256": texts_sha256(texts),
        "tokenizer": {"name_or_path": getattr(tokenizer, "name_or_path", None), "vocab_size": len(tokenizer),
                      "sha256": tokenizer_sha256(tokenizer)},
        "n_train": len(splits.train), "n_validation": len(splits.validation),
        "train_sha256": tokens_sha256(splits.train), "validation_sha256": tokens_sha256(splits.validation),
    }
    return splits


def rebuild_splits(manifest: dict[str, Any], tokenizer: Any) -> TokenSplits:
    """The exact splits ``manifest`` describes, rebuilt from its source with ``tokenizer``.

    Raises:
        DataError: the tokenizer, the documents or the resulting tokens differ from the recorded ones (one line
            naming what changed), or the source cannot be loaded.
    """
    missing = [key for key in (*REBUILT, "texts_sha256", "train_sha256", "validation_sha256") if key not in manifest]
    if missing:
        raise InvalidArgumentError(f"the data manifest lacks {', '.join(missing)}; it cannot rebuild the data")
    recorded = manifest.get("tokenizer", {}).get("sha256")
    if recorded is not None and tokenizer_sha256(tokenizer) != recorded:
        raise DataError("the tokenizer differs from the one the run's data was cut with (vocabulary hash "
                        "mismatch); load the tokenizer saved in the run")
    texts = load_texts(manifest["dataset"], split=manifest["split"], text_field=manifest["text_field"],
                       max_documents=manifest["max_documents"])
    if texts_sha256(texts) != manifest["texts_sha256"]:
        raise DataError(f"dataset {manifest['dataset']!r} changed since the run: its {len(texts)} documents hash to "
                        f"{texts_sha256(texts)[:12]}, the run recorded {manifest['n_documents']} documents hashing to "
                        f"{manifest['texts_sha256'][:12]}; restore it, or score other text with explicit "
                        "--model/--dataset")
    splits = make_token_splits(texts, tokenizer, seq_len=manifest["seq_len"], val_fraction=manifest["val_fraction"],
                               seed=manifest["seed"], min_doc_tokens=manifest["min_doc_tokens"],
                               max_sequences=manifest["max_sequences"])
    for name, tokens in (("train", splits.train), ("validation", splits.validation)):
        if tokens_sha256(tokens) != manifest[f"{name}_sha256"]:
            raise DataError(f"the rebuilt {name} tokens differ from the run's ({len(tokens)} sequences, hash "
                            f"{tokens_sha256(tokens)[:12]} vs {manifest[f'{name}_sha256'][:12]}); the data cannot be "
                            "rebuilt identically")
    splits.manifest = dict(manifest)
    return splits
