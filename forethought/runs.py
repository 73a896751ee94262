"""A run directory is the single source of truth for its models, tokenizer, data and split.

Every training runner (``train``, ``myopia-gap``) writes ``run.json`` beside its ``report.json``: the data
manifest (:mod:`forethought.data.manifest`), the tokenizer (saved in ``tokenizer/``) and, for every model, its
directory and how it was trained. :func:`load_run` reads it back and rebuilds the exact
:class:`~forethought.data.TokenSplits` the models were trained and validated on, or refuses
(:class:`~forethought.errors.DataError`, one line) when that cannot be done identically; ``forethought compare
--run`` and ``forethought probe-sweep --run`` score runs through it.

Example:
    >>> import tempfile
    >>> from forethought.data import load_texts, load_token_splits, train_tokenizer
    >>> from forethought.models import save_model, tiny_model
    >>> tokenizer = train_tokenizer(load_texts("builtin")[:20], vocab_size=300)
    >>> splits = load_token_splits("builtin", tokenizer, seq_len=16, max_documents=20)
    >>> out = tempfile.mkdtemp()
    >>> _ = save_model(tiny_model(n_layers=1, d_model=16, n_heads=2, d_vocab=len(tokenizer), n_ctx=16,
    ...                           tokenizer=tokenizer), f"{out}/model")
    >>> _ = write_run(out, "train", splits, {"model": {"path": "model", "trained_as": "vanilla"}})
    >>> run = load_run(out)
    >>> list(run.models), bool((run.splits.validation == splits.validation).all())
    (['model'], True)
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from forethought.data.manifest import rebuild_splits
from forethought.data.tokens import PREPEND_BOS, TokenSplits
from forethought.errors import DataError, InvalidArgumentError
from forethought.prompts import set_prepends_bos
from forethought.reporting import atomic_directory, write_json

RUN_FILE = "run.json"
TOKENIZER_DIR = "tokenizer"
RUN_VERSION = 1


@dataclass
class Run:
    """A loaded run: its models, tokenizer, exact data splits and what its ``run.json`` says.

    Attributes:
        directory: the run directory.
        command: the command that wrote it (``"train"``, ``"myopia-gap"``).
        models: name → ``TransformerBridge`` (empty when loaded with ``models=False``).
        tokenizer: the tokenizer saved in the run.
        splits: the train and validation sequences, identical to the ones training used.
        trained: name → how that model was trained (``{"path", "trained_as", "mode", "beta", ...}``).
    """

    directory: Path
    command: str
    models: dict[str, Any]
    tokenizer: Any
    splits: TokenSplits
    trained: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def manifest(self) -> dict[str, Any]:
        """The data manifest the splits were built from (empty when they carry none)."""
        return self.splits.manifest or {}

    @property
    def trained_as(self) -> dict[str, str | None]:
        """Name → the regime each model was trained in."""
        return {name: entry.get("trained_as") for name, entry in self.trained.items()}


def write_run(out: str | os.PathLike, command: str, splits: TokenSplits, models: dict[str, dict[str, Any]]) -> Path:
    """Write ``out/run.json`` (and the tokenizer, in ``out/tokenizer``) so that :func:`load_run` can rebuild the run.

    ``models`` maps a name to ``{"path": directory relative to out, "trained_as": regime, ...}``.
    """
    if splits.manifest is None:
        raise InvalidArgumentError("these splits carry no data manifest; build them with "
                                   "forethought.data.load_token_splits so that the run can be rebuilt")
    out = Path(out)
    if splits.tokenizer is not None:
        with atomic_directory(out / TOKENIZER_DIR) as tmp:
            splits.tokenizer.save_pretrained(tmp)
    return write_json(out / RUN_FILE, {"version": RUN_VERSION, "command": command, "data": splits.manifest,
                                       "tokenizer": TOKENIZER_DIR, "models": models})


def read_run_file(directory: str | os.PathLike) -> dict[str, Any]:
    """The parsed ``run.json`` of ``directory``, with one-line errors when there is none."""
    path = Path(directory).expanduser() / RUN_FILE
    if not path.parent.is_dir():
        raise InvalidArgumentError(f"run directory {str(directory)!r} does not exist")
    if not path.is_file():
        raise InvalidArgumentError(f"{str(directory)!r} holds no {RUN_FILE} (written by `forethought train` and "
                                   "`forethought myopia-gap`); rerun it, or pass --model/--dataset explicitly")
    try:
        return json.loads(path.read_text())
    except ValueError as error:
        raise DataError(f"{path} is not valid JSON ({error}); the run directory is damaged") from error


def load_run(directory: str | os.PathLike, device: str | None = None, models: bool = True) -> Run:
    """Load a run directory: its models, its tokenizer and the exact splits they were trained on.

    Args:
        directory: a ``forethought train`` or ``forethought myopia-gap`` output directory.
        device: where to load the models.
        models: False loads the tokenizer and data only.

    Raises:
        InvalidArgumentError: the directory holds no ``run.json`` or a model directory is missing.
        DataError: the data cannot be rebuilt identically (changed dataset, other tokenizer, ...).
    """
    from forethought.models import load_model

    directory = Path(directory).expanduser()
    record = read_run_file(directory)
    tokenizer_dir = directory / record.get("tokenizer", TOKENIZER_DIR)
    if not tokenizer_dir.is_dir():
        raise InvalidArgumentError(f"run {str(directory)!r} has no saved tokenizer ({tokenizer_dir.name}/)")
    tokenizer = _load_tokenizer(tokenizer_dir)
    splits = rebuild_splits(record["data"], tokenizer)
    loaded = {}
    for name, entry in record.get("models", {}).items():
        path = directory / entry["path"]
        if not path.is_dir():
            raise InvalidArgumentError(f"run {str(directory)!r} lists model {name!r} at {entry['path']!r}, which "
                                       "does not exist (an unfinished run? continue it with --resume)")
        if models:  # the run's prompt convention: its sequences start without a BOS token (older runs too)
            loaded[name] = set_prepends_bos(load_model(path, device=device, tokenizer=tokenizer),
                                            bool(splits.manifest.get("prepend_bos", PREPEND_BOS)))
    return Run(directory=directory, command=record.get("command", "?"), models=loaded, tokenizer=tokenizer,
               splits=splits, trained=dict(record.get("models", {})))


def find_run(model_dir: str | os.PathLike) -> tuple[Path, str] | None:
    """The run a model directory belongs to and the model's name there, or None.

    A model belongs to a run when a ``run.json`` in its directory or up to four folders above lists it.
    """
    path = Path(model_dir).expanduser()
    if not path.is_dir():
        return None
    path = path.resolve()
    for parent in [path, *path.parents][:5]:
        if (parent / RUN_FILE).is_file():
            try:
                record = json.loads((parent / RUN_FILE).read_text())
            except ValueError:
                return None
            for name, entry in record.get("models", {}).items():
                if isinstance(entry, dict) and (parent / str(entry.get("path", ""))).resolve() == path:
                    return parent, name
    return None


def sequence_hashes(tokens: Any) -> list[str]:
    """A SHA-256 of every token sequence (row) of ``tokens`` ``[seq, pos]``, in order, to find shared sequences."""
    return [hashlib.sha256(row.tobytes()).hexdigest() for row in tokens.detach().cpu().long().numpy()]


def shared_fraction(tokens: Any, seen: set[str]) -> float:
    """The fraction of the sequences (rows) of ``tokens`` whose hash is in ``seen``."""
    hashes = sequence_hashes(tokens)
    return sum(digest in seen for digest in hashes) / max(len(hashes), 1)


def check_not_trained_on(test: Any, run: Run, model_name: str) -> None:
    """Refuse (one line) test sequences cut afresh that come from the training split of ``run``'s model.

    A corpus can repeat text, so even the run's own validation split shares a few sequences with its training
    split; test sequences are refused when they share more than that, plus one percentage point.
    """
    seen = set(sequence_hashes(run.splits.train))
    shared, own = shared_fraction(test, seen), shared_fraction(run.splits.validation, seen)
    if shared > own + 0.01:
        raise DataError(f"{shared:.0%} of the {len(test)} test sequences are in the training split of model "
                        f"{model_name!r} (run {str(run.directory)!r}; its own validation split shares {own:.0%}): "
                        "scoring it there would test on training text; leave the data options out to use the run's "
                        "own split, or pass other text")


def _load_tokenizer(path: Path) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(path))
    except (OSError, ValueError) as error:
        raise DataError(f"the tokenizer saved in {str(path)!r} cannot be loaded ({type(error).__name__}); the run "
                        "directory is damaged") from error
