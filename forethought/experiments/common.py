"""What several runners share: argument groups, their parsers and the data they load.

Runners import from here, never from one another, so that each stays config -> library call -> results.

Example:
    >>> parse_ints("0,1,3", "offsets")
    [0, 1, 3]
    >>> parse_models(["vanilla=runs/vanilla/model"])
    {'vanilla': 'runs/vanilla/model'}
"""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING, Any

from forethought.errors import InvalidArgumentError, ModelNotAvailableError, VocabularyMismatchError
from forethought.options import DEVICES
from forethought.reporting import save_figure

if TYPE_CHECKING:
    from forethought.data import TokenSplits
    from forethought.myopic_training.trainer import TrainConfig


def parse_models(specs: list[str]) -> dict[str, str]:
    """``["a=dir", ...]`` → ``{"a": "dir"}``, with one-line errors for malformed or repeated names."""
    models: dict[str, str] = {}
    for spec in specs:
        name, sep, source = spec.partition("=")
        if not sep or not name.strip() or not source.strip():
            raise InvalidArgumentError(f"--model {spec!r} is not NAME=DIR_OR_HUB_NAME (e.g. vanilla=runs/vanilla)")
        if name in models:
            raise InvalidArgumentError(f"--model name {name!r} is used twice; give every model its own name")
        models[name.strip()] = source.strip()
    return models


def parse_ints(text: str, what: str) -> list[int]:
    """``"0,1,3"`` → ``[0, 1, 3]``."""
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise InvalidArgumentError(f"--{what} {text!r} is not a comma-separated list of integers") from None
    if not values:
        raise InvalidArgumentError(f"--{what} is empty; pass comma-separated integers")
    return values


def shared_tokenizer(models: dict[str, Any]) -> Any:
    """The first model's tokenizer, after checking every model has one with the same vocabulary."""
    names = list(models)
    tokenizer = models[names[0]].tokenizer
    if tokenizer is None:
        raise ModelNotAvailableError(f"model {names[0]!r} has no tokenizer to cut --dataset with; save one "
                                     "beside its weights")
    vocab = tokenizer.get_vocab()
    for name in names[1:]:
        other = models[name].tokenizer
        if other is None or other.get_vocab() != vocab:
            raise VocabularyMismatchError(f"models {names[0]!r} and {name!r} use different tokenizers; pass "
                                          "models that share one (they are compared on the same tokens), or run "
                                          "them separately")
    return tokenizer


def add_data_arguments(parser: argparse.ArgumentParser, dataset: str | None = "builtin",
                       seq_len: int | None = 64, text_field: str | None = "text") -> None:
    data = parser.add_argument_group("data (defaults: the preset's)" if dataset is None else "data")
    data.add_argument("--dataset", default=dataset, help="'builtin', a .txt/.jsonl file or directory, or a HF "
                                                         "dataset name[:config]")
    data.add_argument("--text-field", default=text_field, help="text column of .jsonl files and HF datasets")
    data.add_argument("--max-documents", type=int, help="use at most this many documents")
    data.add_argument("--seq-len", type=int, default=seq_len, help="tokens per sequence")
    data.add_argument("--min-doc-tokens", type=int, help="keep only documents this long; sequences never cross "
                                                         "documents (the paper's passages)")


def add_training_arguments(parser: argparse.ArgumentParser, steps: int | None, batch_size: int | None,
                           lr: float | None) -> None:
    group = parser.add_argument_group("training")
    group.add_argument("--steps", type=int, default=steps, help="optimizer steps")
    group.add_argument("--batch-size", type=int, default=batch_size, help="sequences per step")
    group.add_argument("--lr", type=float, default=lr, help="peak learning rate (AdamW)")
    group.add_argument("--warmup-steps", type=int, help="linear warmup steps (default: min(100, steps / 10))")
    group.add_argument("--weight-decay", type=float, help="AdamW weight decay on matrices (default 0.1)")
    group.add_argument("--grad-clip", type=float, help="global gradient-norm clip (default 1.0)")
    group.add_argument("--eval-every", type=int, help="steps between validation evaluations")
    group.add_argument("--checkpoint-every", type=int, help="steps between checkpoints")
    group.add_argument("--gradient-split-every", type=int, metavar="K",
                       help="record the gradient split (pre-caching share) every K steps, a multiple of --eval-every; "
                            "plotted in gradient_split.png")
    group.add_argument("--seed", type=int, default=0, help="model initialisation, data split and order")
    group.add_argument("--device", choices=DEVICES, default="auto", help="where to train (default: accelerate's "
                                                                         "choice; bf16 autocast on a GPU)")
    group.add_argument("--no-progress", action="store_true", help="no progress bars")


def training_config(args: argparse.Namespace, **settings: Any) -> TrainConfig:
    """A :class:`TrainConfig` from ``settings`` (defaults, e.g. a preset's) overridden by the given CLI options."""
    options = {"steps": args.steps, "batch_size": args.batch_size, "lr": args.lr, "warmup_steps": args.warmup_steps,
               "weight_decay": args.weight_decay, "grad_clip": args.grad_clip, "eval_every": args.eval_every,
               "checkpoint_every": args.checkpoint_every,
               "gradient_split_every": getattr(args, "gradient_split_every", None)}
    settings.update({key: value for key, value in options.items() if value is not None})
    from forethought.myopic_training.trainer import TrainConfig

    return TrainConfig(**settings, seed=args.seed, device=args.device, resume=args.resume,
                       progress=not args.no_progress)


def save_gradient_split_plot(history: list[dict[str, Any]], path: str | os.PathLike, title: str) -> None:
    """Plot the gradient split recorded in a training log over the steps, if the run recorded one."""
    from forethought.myopic_training.gradient_split import plot_gradient_split_over_training, split_history

    frame = split_history(history)
    if not frame.empty:
        save_figure(plot_gradient_split_over_training(frame, title=f"Pre-caching share of the gradient: {title}"),
                    path)


def load_splits(args: argparse.Namespace, tokenizer: Any = None, vocab_size: int | None = None,
                max_sequences: int | None = None, val_fraction: float = 0.1) -> TokenSplits:
    """Texts from ``--dataset``, tokenised (with ``tokenizer``, or a BPE of ``vocab_size`` trained on them) and
    cut into ``--seq-len`` sequences, split into train and validation with ``--seed``; the splits carry their
    data manifest (:func:`forethought.data.load_token_splits`)."""
    from forethought.data import load_token_splits, train_tokenizer

    if tokenizer is None:
        def tokenizer(texts: list[str]) -> Any:
            return train_tokenizer(texts, vocab_size=vocab_size)
    return load_token_splits(args.dataset, tokenizer, args.seq_len, text_field=args.text_field,
                             max_documents=args.max_documents, min_doc_tokens=args.min_doc_tokens,
                             max_sequences=max_sequences, val_fraction=val_fraction, seed=args.seed)


#: Defaults of the options that cut fresh text for ``--model`` models (a ``--run`` is scored on its own data).
DATA_DEFAULTS = {"dataset": "builtin", "text_field": "text", "seq_len": 64, "max_sequences": 2000}
HELD_OUT_DEFAULT = 0.2


def add_scoring_data_arguments(parser: argparse.ArgumentParser, held_out: str) -> None:
    """The data options of a command that scores ``--model`` models on fresh text; ``held_out`` names the option
    for the share of sequences held out (``"val_fraction"``, ``"test_fraction"``)."""
    data = parser.add_argument_group("data (with --model only; --run uses the run's own data)")
    data.add_argument("--dataset", help="'builtin', a .txt/.jsonl file or directory, or a HF dataset name "
                      "(default: builtin)")
    data.add_argument("--text-field", help="text column of .jsonl files and HF datasets (default: text)")
    data.add_argument("--seq-len", type=int, help="tokens per sequence (default: 64)")
    data.add_argument("--max-sequences", type=int, help="use at most this many sequences (default: 2000)")
    data.add_argument(f"--{held_out.replace('_', '-')}", type=float,
                      help=f"share of sequences held out for scoring (default: {HELD_OUT_DEFAULT})")


def scoring_data_options(args: argparse.Namespace, held_out: str, verb: str) -> dict[str, Any]:
    """The data options with their defaults filled in; refuses them beside ``--run`` (a run is ``verb``-d on its
    own data and split)."""
    defaults = {**DATA_DEFAULTS, held_out: HELD_OUT_DEFAULT}
    if args.run:
        given = [f"--{name.replace('_', '-')}" for name in defaults if getattr(args, name) is not None]
        if given:
            raise InvalidArgumentError(f"{', '.join(given)} cannot be combined with --run: a run is {verb}d on its own "
                                       f"data and split; pass --model NAME=DIR to {verb} other text")
    return {name: getattr(args, name) if getattr(args, name) is not None else default
            for name, default in defaults.items()}
