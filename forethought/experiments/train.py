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

import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from forethought.config import TrainConfig
from forethought.data import check_tokens_fit
from forethought.data.tokens import PREPEND_BOS
from forethought.errors import DataError, InvalidArgumentError, NumericalError
from forethought.experiments.commands import Train
from forethought.experiments.common import load_option_model, load_splits, nan_cause, save_gradient_split_plot
from forethought.experiments.presets import MAX_PRESET_LR
from forethought.models import tiny_model
from forethought.myopic_training.trainer import CHECKPOINT, MODEL_DIR, check_device, train
from forethought.prompts import set_prepends_bos
from forethought.regimes import get_regime
from forethought.reporting import check_out_dir, prepare_out_dir, provenance, save_figure, write_json
from forethought.runs import write_run


def run(args: Train) -> int:
    """``forethought train``: train one model in ``--regime`` into ``--out`` and write its report.

    Every input is checked before ``--out`` is created (the options, the data, the model and the batch size against
    the data), so that a refusal leaves nothing behind.
    """
    started = time.perf_counter()
    config, model, splits, past_model = _checked_inputs(args)
    out = check_out_dir(args.out)
    prepare_out_dir(out)
    config.out_dir = out
    try:
        result = train(config, model, splits, past_model=past_model)
    except NumericalError as error:
        raise NumericalError(nan_cause(str(error), {"--lr": (config.lr, MAX_PRESET_LR)})) from error
    _report(args, out, config, splits, result, started)
    return 0


def _checked_inputs(args: Train) -> tuple[TrainConfig, Any, Any, Any]:
    """The validation phase: the config, the model, the data and the past model, all checked; nothing written."""
    config = args.train_config()
    check_device(config.device)
    out = check_out_dir(args.out)
    if (out / CHECKPOINT).exists() and not config.resume:
        raise InvalidArgumentError(f"{args.out!r} already holds a training run; pass --resume to continue it or "
                                   "choose another --out")
    if get_regime(config.regime).needs_past_model and args.model is None and args.past_model is None:
        raise InvalidArgumentError(f"--regime {config.regime} from scratch needs --past-model (a trained vanilla model "
                                   "with the same tokenizer); when fine-tuning, the frozen --model is the default")

    if args.model is not None:
        model = load_option_model("--model", args.model)
        if model.tokenizer is None:
            raise InvalidArgumentError(f"--model {args.model!r} has no tokenizer; save one beside its weights")
        splits = load_splits(args.data, args.seed, tokenizer=model.tokenizer)
    else:
        splits = load_splits(args.data, args.seed, vocab_size=args.vocab_size)
        model = tiny_model(n_layers=args.n_layers, d_model=args.d_model, n_heads=args.n_heads,
                           d_vocab=len(splits.tokenizer), n_ctx=args.data.seq_len, seed=args.seed,
                           tokenizer=splits.tokenizer)
    set_prepends_bos(model, PREPEND_BOS)  # trained on sequences that start without a BOS token: prompts follow
    past_model = load_option_model("--past-model", args.past_model) if args.past_model else None
    for tokens in (splits.train, splits.validation):  # refuse before anything is written
        for checked in (model, past_model):
            if checked is not None:
                check_tokens_fit(checked, tokens)

    if len(splits.train) < config.batch_size:
        raise DataError(f"--batch-size {config.batch_size} is more than the {len(splits.train)} training sequences; "
                        "pass a smaller --batch-size or more data (--max-documents, --dataset)")
    return config, model, splits, past_model


def _report(args: Train, out: Path, config: TrainConfig, splits: Any, result: Any, started: float) -> None:
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
