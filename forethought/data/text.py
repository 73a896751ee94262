"""Text sources: the builtin offline corpus, local files, and HF datasets.

The **builtin corpus** is the Python reference documentation that every CPython install ships in
``pydoc_data.topics`` (the text behind ``help("if")``, ``help("with")``, ...): about 80 documents and
460 K characters of English technical prose, available with no download.

Example:
    >>> from forethought.data.text import load_texts
    >>> texts = load_texts("builtin")
    >>> len(texts) > 50 and sum(map(len, texts)) > 100_000
    True
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from forethought.errors import DataError, InvalidArgumentError

BUILTIN = "builtin"
TEXT_SUFFIXES = (".txt", ".md", ".jsonl")


def builtin_corpus() -> list[str]:
    """The documents of the builtin offline corpus, in a fixed order."""
    from pydoc_data.topics import topics

    return [topics[name].strip() for name in sorted(topics) if topics[name].strip()]


def load_texts(
    source: str | os.PathLike,
    split: str = "train",
    text_field: str = "text",
    max_documents: int | None = None,
) -> list[str]:
    """Load documents as a list of strings.

    Args:
        source: ``"builtin"``; a ``.txt``/``.md`` file (one document per blank-line-separated block), a
            ``.jsonl`` file (one JSON object per line with ``text_field``), or a directory of such files;
            otherwise a HF dataset name, optionally ``name:config`` (needs a network or the HF cache).
        split: dataset split for HF datasets.
        text_field: the field holding the text in ``.jsonl`` records and HF datasets.
        max_documents: keep at most this many documents.

    Raises:
        DataError: the source holds no text.
    """
    if max_documents is not None and (not isinstance(max_documents, int) or max_documents <= 0):
        raise InvalidArgumentError(f"max_documents={max_documents!r} is not allowed; expected a positive integer")
    if not str(source).strip():
        raise InvalidArgumentError(f"source={str(source)!r}: the text source is empty; pass 'builtin', a file, a "
                                   "directory or a HF dataset name")
    path = Path(source).expanduser()
    if str(source) == BUILTIN:
        texts = builtin_corpus()
    elif path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix in TEXT_SUFFIXES and p.is_file())
        if not files:
            raise DataError(f"directory {str(source)!r} has no {', '.join(TEXT_SUFFIXES)} files")
        texts = [doc for file in files for doc in _read_file(file, text_field)]
    elif path.is_file():
        texts = _read_file(path, text_field)
    elif path.suffix in TEXT_SUFFIXES or os.sep in str(source) and not _looks_like_hub_name(str(source)):
        raise DataError(f"text source {str(source)!r} does not exist; expected 'builtin', a file, a directory "
                        "or a HF dataset name")
    else:
        texts = _load_hf_dataset(str(source), split, text_field, max_documents)
    texts = [t for t in texts if t.strip()]
    if max_documents is not None:
        texts = texts[:max_documents]
    if not texts:
        raise DataError(f"text source {str(source)!r} is empty; it must hold at least one non-blank document")
    return texts


def _looks_like_hub_name(name: str) -> bool:
    return name.count("/") == 1 and not name.startswith((".", "/", "~"))


def _read_file(path: Path, text_field: str) -> list[str]:
    data = path.read_bytes()
    if b"\0" in data:
        raise DataError(f"{str(path)!r} is a binary file, not text; pass UTF-8 .txt, .md or .jsonl files")
    try:
        raw = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise DataError(f"{str(path)!r} is not UTF-8 text (byte {error.start}); convert it to UTF-8") from error
    if path.suffix != ".jsonl":
        return [block.strip() for block in raw.split("\n\n") if block.strip()]
    texts = []
    for number, line in enumerate(raw.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise DataError(f"{path.name} line {number} is not JSON: {error.msg}") from error
        if not isinstance(record, dict) or text_field not in record:
            raise DataError(f"{path.name} line {number} has no {text_field!r} field; pass text_field=...")
        texts.append(str(record[text_field]))
    return texts


def _load_hf_dataset(name: str, split: str, text_field: str, max_documents: int | None) -> list[str]:
    import datasets

    dataset_name, _, config = name.partition(":")
    try:
        data = datasets.load_dataset(dataset_name, config or None, split=split, streaming=max_documents is not None)
    except Exception as error:  # noqa: BLE001 - datasets raises many types for "not found"/"offline"
        raise DataError(
            f"dataset {name!r} could not be loaded ({type(error).__name__}); offline, use 'builtin', a local "
            ".txt/.jsonl file or a directory"
        ) from error
    texts = []
    for record in data:
        if text_field not in record:
            raise DataError(f"dataset {name!r} has no {text_field!r} column; columns: {sorted(record)}")
        texts.append(record[text_field])
        if max_documents is not None and len(texts) >= max_documents:
            break
    return texts
