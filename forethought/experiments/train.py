"""``forethought train``: train one language model in one regime, with checkpoints, resume and a report.

From scratch (default): a byte-level BPE tokenizer is trained on the corpus and a small TransformerLens-native
GPT-2-style model is initialised with ``--seed``. Fine-tuning: ``--model NAME_OR_DIR`` loads a hub model or a
local ``save_pretrained`` directory with its tokenizer.

Outputs in ``--out``: ``checkpoint.pt`` (resume with ``--resume`` after a crash, SIGKILL or Ctrl-C),
``log.jsonl`` (one record per step), ``model/`` (load it with :func:`forethought.models.load_model`),
``report.json`` (settings, final losses, provenance) and ``training_curve.png``; with ``--gradient-split-every K``
the log records the gradient split (pre-caching share) at those evaluation steps, plotted in ``gradient_split.png``.

Example:
    $ forethought train --out runs/myopic --regime myopic --steps 300 --batch-size 16
    $ forethought train --out runs/myopic --regime myopic --steps 300 --batch-size 16 --resume
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import asdict
from typing import Any

from forethought.data import TokenSplits, check_tokens_fit, load_token_splits, train_tokenizer
from forethought.errors import InvalidArgumentError
from forethought.models import load_model, tiny_model
from forethought.myopic_training.hooks import MODES
from forethought.myopic_training.regimes import REGIMES
from forethought.myopic_training.trainer import CHECKPOINT, DEVICES, MODEL_DIR, TrainConfig, check_device, train
from forethought.reporting import check_out_dir, prepare_out_dir, provenance, save_figure, write_json
from forethought.runs import write_run

HELP = "Train a language model (from scratch or fine-tuning) as vanilla, myopic, local-myopic or transformer bigram."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="output directory (checkpoint, log, model, report)")
    parser.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    add_data_arguments(parser)
    model = parser.add_argument_group("model")
    model.add_argument("--model", help="hub name or local directory to fine-tune (default: train from scratch)")
    model.add_argument("--n-layers", type=int, default=2, help="from scratch: transformer blocks")
    model.add_argument("--d-model", type=int, default=128, help="from scratch: residual width")
    model.add_argument("--n-heads", type=int, default=4, help="from scratch: attention heads")
    model.add_argument("--vocab-size", type=int, default=2048, help="from scratch: BPE vocabulary to train")
    regime = parser.add_argument_group("regime")
    regime.add_argument("--regime", choices=REGIMES, default="vanilla")
    regime.add_argument("--mode", choices=MODES, default="strict", help="myopic gradient mode")
    regime.add_argument("--beta", type=float, default=0.0, help="myopic: 0 = myopic ... 1 = vanilla gradient")
    regime.add_argument("--past-model", help="local-myopic: the frozen vanilla model that supplies the past "
                                             "(default when fine-tuning: a frozen copy of --model)")
    add_training_arguments(parser, steps=500, batch_size=32, lr=1e-3)


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
    if tokenizer is None:
        def tokenizer(texts: list[str]) -> Any:
            return train_tokenizer(texts, vocab_size=vocab_size)
    return load_token_splits(args.dataset, tokenizer, args.seq_len, text_field=args.text_field,
                             max_documents=args.max_documents, min_doc_tokens=args.min_doc_tokens,
                             max_sequences=max_sequences, val_fraction=val_fraction, seed=args.seed)


def run(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    config = training_config(args, regime=args.regime, mode=args.mode, beta=args.beta)
    check_device(config.device)
    out = check_out_dir(args.out)
    if (out / CHECKPOINT).exists() and not args.resume:
        raise InvalidArgumentError(f"{args.out!r} already holds a training run; pass --resume to continue it or "
                                   "choose another --out")
    if args.regime == "local-myopic" and args.model is None and args.past_model is None:
        raise InvalidArgumentError("--regime local-myopic from scratch needs --past-model (a trained vanilla model "
                                   "with the same tokenizer); when fine-tuning, the frozen --model is the default")

    if args.model is not None:
        model = load_model(args.model)
        if model.tokenizer is None:
            raise InvalidArgumentError(f"--model {args.model!r} has no tokenizer; save one beside its weights")
        splits = load_splits(args, tokenizer=model.tokenizer)
    else:
        splits = load_splits(args, vocab_size=args.vocab_size)
        model = tiny_model(n_layers=args.n_layers, d_model=args.d_model, n_heads=args.n_heads,
                           d_vocab=len(splits.tokenizer), n_ctx=args.seq_len, seed=args.seed,
                           tokenizer=splits.tokenizer)
    past_model = load_model(args.past_model) if args.past_model else None
    for tokens in (splits.train, splits.validation):  # refuse before anything is written
        for checked in (model, past_model):
            if checked is not None:
                check_tokens_fit(checked, tokens)

    prepare_out_dir(out)
    config.out_dir = out
    result = train(config, model, splits, past_model=past_model)

    from forethought.plots import plot_training_curves

    save_figure(plot_training_curves(result.history, title=f"{config.regime} training"), out / "training_curve.png")
    save_gradient_split_plot(result.history, out / "gradient_split.png", title=f"{config.regime} training")
    report = {
        "command": "train",
        "model": args.model or {"from_scratch": True, "n_layers": args.n_layers, "d_model": args.d_model,
                                "n_heads": args.n_heads, "vocab_size": len(splits.tokenizer)},
        "data": splits.manifest,
        "config": {key: value for key, value in asdict(config).items() if key not in ("out_dir", "progress")},
        "final_train_loss": result.losses[-1] if result.losses else None,
        "eval_loss": result.eval_loss,
        "wall_time_s": time.perf_counter() - started,
        "provenance": provenance(config.seed),
    }
    write_json(out / "report.json", report)
    write_run(out, "train", splits, {"model": {"path": MODEL_DIR, "trained_as": config.regime, "mode": config.mode,
                                               "beta": config.beta}})
    print(f"{config.regime}: eval loss {result.eval_loss:.4f} after {config.steps} steps; wrote {out}")
    return 0
