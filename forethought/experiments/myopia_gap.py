"""``forethought myopia-gap``: train vanilla, myopic and transformer-bigram models on the same text and compare.

Every regime starts from the same initialisation (or the same pretrained model) and sees the same batches in the
same order; only the gradient (myopic) or the attention to the past (bigram, local-myopic) differs. The
validation loss by position of each regime and the gaps between them go to ``report.json``:

* ``myopia_gap = eval_loss(myopic) - eval_loss(vanilla)`` (nats per token on the validation sequences): what the
  model loses when its training cannot prepare earlier positions for later ones (pre-caching);
* ``bigram_gap = eval_loss(bigram) - eval_loss(vanilla)``: what access to earlier tokens is worth at all;
* ``myopia_gap_fraction = myopia_gap / bigram_gap``;
* ``local_myopia_gap = eval_loss(local-myopic) - eval_loss(vanilla)`` when that regime is run. Its frozen past is
  the trained vanilla model of the same run (from scratch) or the pretrained model (fine-tuning).

Outputs in ``--out``: ``report.json``, ``loss_by_position.csv``, ``loss_by_position.png``, ``loss_difference.png``,
``training_curves.png``, and ``runs/<regime>/`` (checkpoint, log, model) for each regime; with
``--gradient-split-every K`` also ``gradient_split.png`` (each regime's pre-caching share over training). A run
killed at any point continues with ``--resume``; finished regimes are not retrained.

With ``--models NAME=DIR_OR_HUB_NAME ...`` the command is a sweep over model sizes
(:mod:`~forethought.experiments.size_sweep`): every listed model (they must share a tokenizer) is trained in every
regime with the preset's data and settings into ``--out/models/NAME/``, an ordinary run directory as above, and
``size_sweep.csv``, ``size_sweep.json`` and ``myopia_gap_by_size.png`` give the myopia gap with its interval
against the parameter count; ``--resume`` skips finished models and continues an interrupted one.

Presets (``--preset``): ``smoke`` (seconds, CI), ``cpu`` (builtin corpus, a few minutes on two cores, a small
GPT-2-style model from scratch), ``gpt2-paper`` (GPT-2 124M from scratch on 64-token passages, batch 512, lr 6e-4;
a GPU and a HF dataset), ``pythia-finetune`` (fine-tune Pythia with the same lr in every regime; a GPU).

Example:
    $ forethought myopia-gap --preset cpu --out results/myopia_cpu
    $ forethought myopia-gap --preset pythia-finetune --models EleutherAI/pythia-14m EleutherAI/pythia-70m \\
        --device cuda --out results/pythia_sizes
"""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from forethought.data import check_tokens_fit
from forethought.errors import ContextLengthError, InvalidArgumentError, ModelNotAvailableError, check_positive
from forethought.experiments.common import (
    add_data_arguments,
    add_training_arguments,
    load_splits,
    save_gradient_split_plot,
    training_config,
)
from forethought.models import load_model, save_random_checkpoint, tiny_model
from forethought.myopic_training.evaluation import evaluate_regimes, format_gap, plot_report
from forethought.myopic_training.hooks import MODES
from forethought.myopic_training.regimes import REGIMES
from forethought.myopic_training.trainer import CHECKPOINT, MODEL_DIR, PAST_MODEL_DIR, TrainConfig, check_device, train
from forethought.reporting import (
    atomic_directory,
    check_out_dir,
    prepare_out_dir,
    provenance,
    save_figure,
    write_csv,
    write_json,
)
from forethought.runs import write_run

HELP = ("Train vanilla, myopic and transformer-bigram models on the same text and measure the myopia gap "
        "(validation loss by position for each regime).")

RUNS = "runs"


@dataclass(frozen=True)
class Preset:
    """One ready-made experiment.

    Attributes:
        description: one line for ``--help``.
        dataset: text source for :func:`~forethought.data.load_texts`.
        text_field: the text column of ``.jsonl`` files and HF datasets.
        max_documents: keep at most this many documents.
        seq_len: tokens per sequence.
        min_doc_tokens: keep only documents this long; sequences never cross documents (64-token passages).
        val_fraction: share of sequences held out for validation.
        max_sequences: cap on the number of sequences.
        tokenizer: from scratch: an ``int`` trains a byte-level BPE of that size on the corpus; a string loads a
            hub tokenizer. Fine-tuning uses the model's own tokenizer.
        model: a hub name or directory to fine-tune; ``None`` trains ``architecture`` from scratch.
        architecture: from scratch: ``{"family": "native" | "gpt2" | "neox" | "llama", sizes...}``.
        regimes: regimes to train, in order (``local-myopic`` from scratch needs ``vanilla`` before it).
        train: :class:`~forethought.myopic_training.TrainConfig` settings shared by every regime.
    """

    description: str
    dataset: str = "builtin"
    text_field: str = "text"
    max_documents: int | None = None
    seq_len: int = 64
    min_doc_tokens: int | None = None
    val_fraction: float = 0.1
    max_sequences: int | None = None
    tokenizer: int | str = 2048
    model: str | None = None
    architecture: dict[str, Any] = field(default_factory=dict)
    regimes: tuple[str, ...] = ("vanilla", "myopic", "bigram")
    train: dict[str, Any] = field(default_factory=dict)


PRESETS: dict[str, Preset] = {
    "smoke": Preset(
        description="seconds on a CPU: a 2-layer d=16 model, a few steps (for CI)",
        max_documents=12, seq_len=16, val_fraction=0.05, tokenizer=300,
        architecture={"family": "native", "n_layers": 2, "d_model": 16, "n_heads": 2},
        regimes=("vanilla", "myopic", "bigram", "local-myopic"),
        train={"steps": 6, "batch_size": 8, "lr": 3e-3, "warmup_steps": 1, "eval_every": 6, "checkpoint_every": 3},
    ),
    "cpu": Preset(
        description="a few minutes on two CPU cores: a 2-layer d=128 GPT-2-style model on the builtin corpus",
        seq_len=64, tokenizer=1024,
        architecture={"family": "native", "n_layers": 2, "d_model": 128, "n_heads": 4},
        regimes=("vanilla", "myopic", "bigram"),
        train={"steps": 400, "batch_size": 32, "lr": 2e-3, "warmup_steps": 40, "eval_every": 100,
               "checkpoint_every": 100},
    ),
    "gpt2-paper": Preset(
        description="GPU: GPT-2 124M from scratch on 64-token OpenWebText passages, batch 512, lr 6e-4",
        dataset="Skylion007/openwebtext", max_documents=200_000, seq_len=64, min_doc_tokens=64, val_fraction=0.01,
        tokenizer="gpt2",
        architecture={"family": "gpt2", "n_layers": 12, "d_model": 768, "n_heads": 12, "n_ctx": 1024},
        regimes=("vanilla", "myopic", "bigram"),
        train={"steps": 20_000, "batch_size": 512, "lr": 6e-4, "warmup_steps": 1000, "weight_decay": 0.1,
               "eval_every": 1000, "eval_batches": 20, "checkpoint_every": 500},
    ),
    "pythia-finetune": Preset(
        description="GPU: fine-tune Pythia-160M vanilla vs myopic (same lr) on 64-token Pile passages",
        dataset="NeelNanda/pile-10k", seq_len=64, min_doc_tokens=64, val_fraction=0.05,
        model="EleutherAI/pythia-160m",
        regimes=("vanilla", "myopic", "bigram", "local-myopic"),
        train={"steps": 2000, "batch_size": 64, "lr": 2e-5, "warmup_steps": 100, "weight_decay": 0.0,
               "eval_every": 250, "checkpoint_every": 250},
    ),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", choices=sorted(PRESETS), default="cpu",
                        help="; ".join(f"{name}: {preset.description}" for name, preset in PRESETS.items()))
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    parser.add_argument("--regimes", help=f"comma-separated subset of {', '.join(REGIMES)} (default: the preset's)")
    parser.add_argument("--mode", choices=MODES, default="strict", help="myopic gradient mode")
    parser.add_argument("--beta", type=float, default=0.0, help="myopic: 0 = myopic ... 1 = vanilla gradient")
    parser.add_argument("--models", nargs="+", action="extend", metavar="NAME=DIR_OR_HUB_NAME",
                        help="a sweep over model sizes: train each model (NAME=DIR_OR_HUB_NAME, or a directory or hub "
                             "name, named after its last part; they must share a tokenizer) in every regime with the "
                             "preset's data and settings into --out/models/NAME, then tabulate the myopia gap by "
                             "parameter count (size_sweep.csv/.json, myopia_gap_by_size.png)")
    add_data_arguments(parser, dataset=None, seq_len=None, text_field=None)
    add_training_arguments(parser, steps=None, batch_size=None, lr=None)


def preset_from_args(args: argparse.Namespace) -> Preset:
    """The chosen preset with the command line's data options applied."""
    if args.preset not in PRESETS:
        raise InvalidArgumentError(f"preset {args.preset!r} is unknown; choose one of {', '.join(PRESETS)}")
    preset = PRESETS[args.preset]
    changes: dict[str, Any] = {}
    for option in ("dataset", "text_field", "max_documents", "seq_len", "min_doc_tokens"):
        if getattr(args, option, None) is not None:
            changes[option] = getattr(args, option)
    if args.regimes:
        regimes = tuple(name.strip() for name in args.regimes.split(",") if name.strip())
        unknown = [name for name in regimes if name not in REGIMES]
        if unknown or not regimes:
            raise InvalidArgumentError(f"--regimes {args.regimes!r} is not allowed; choose from {', '.join(REGIMES)}")
        changes["regimes"] = tuple(name for name in REGIMES if name in regimes)  # vanilla first
    preset = replace(preset, **changes)
    from_scratch = preset.model is None and not getattr(args, "models", None)
    if "local-myopic" in preset.regimes and from_scratch and "vanilla" not in preset.regimes:
        raise InvalidArgumentError("regime local-myopic from scratch uses the trained vanilla model as its past; "
                                   "include vanilla in --regimes")
    return preset


def run(args: argparse.Namespace) -> int:
    preset = preset_from_args(args)
    config = training_config(args, **preset.train, mode=args.mode, beta=args.beta)
    check_device(config.device)
    out = check_out_dir(args.out)
    if args.models:
        from forethought.experiments.size_sweep import parse_model_list, run_size_sweep

        run_size_sweep(parse_model_list(args.models), preset, out, config, preset_name=args.preset)
        return 0
    if (out / RUNS).exists() and any((out / RUNS).glob(f"*/{CHECKPOINT}")) and not args.resume:
        raise InvalidArgumentError(f"{args.out!r} already holds a myopia-gap run; pass --resume to continue it or "
                                   "choose another --out")
    run_experiment(preset, out, config, preset_name=args.preset)
    return 0


def run_experiment(preset: Preset, out: str | Path, config: TrainConfig, preset_name: str = "custom") -> dict:
    """Train every regime of ``preset`` with ``config``'s settings into ``out/runs/<regime>``, evaluate them on the
    same validation sequences, and write the report and figures. Returns the report."""
    started = time.perf_counter()
    check_positive("seq_len", preset.seq_len, integer=True)
    data_args = argparse.Namespace(dataset=preset.dataset, text_field=preset.text_field,
                                   max_documents=preset.max_documents, seq_len=preset.seq_len,
                                   min_doc_tokens=preset.min_doc_tokens, seed=config.seed)
    starting_model = load_model(preset.model) if preset.model is not None else None
    if starting_model is not None:
        if starting_model.tokenizer is None:
            raise InvalidArgumentError(f"model {preset.model!r} has no tokenizer; save one beside its weights")
        tokenizer = starting_model.tokenizer
    else:
        tokenizer = _hub_tokenizer(preset.tokenizer) if isinstance(preset.tokenizer, str) else None
    vocab_size = preset.tokenizer if isinstance(preset.tokenizer, int) else None
    splits = load_splits(data_args, tokenizer=tokenizer, vocab_size=vocab_size,
                         max_sequences=preset.max_sequences, val_fraction=preset.val_fraction)
    _check_context(preset, splits, starting_model)
    del starting_model
    out = prepare_out_dir(out)
    new_model = _model_factory(preset, splits.tokenizer, out, config.seed)

    results = {}
    for regime in preset.regimes:
        past_model = results["vanilla"].model if regime == "local-myopic" and preset.model is None else None
        regime_config = replace(config, regime=regime, out_dir=out / RUNS / regime)
        results[regime] = train(regime_config, new_model(), splits, past_model=past_model)

    models = {regime: result.regime_model() for regime, result in results.items()}
    report = evaluate_regimes(models, splits, batch_size=config.batch_size, progress=config.progress,
                              seed=config.seed)

    frame = report.to_frame()
    write_csv(out / "loss_by_position.csv", frame)
    for name, figure in plot_report(report).items():
        save_figure(figure, out / f"{name}.png")
    from forethought.plots import plot_training_curves

    history = [{**record, "run": regime} for regime, result in results.items() for record in result.history]
    save_figure(plot_training_curves(history, title="Training by regime"), out / "training_curves.png")
    save_gradient_split_plot(history, out / "gradient_split.png", title="by regime")
    document = {
        "preset": preset_name,
        **report.to_dict(),
        "definitions": {
            "eval_loss": "mean next-token cross-entropy (nats) over all predicted tokens of the validation sequences",
            "loss_by_position": "entry t: mean loss of predicting token t+1 from tokens 0..t",
            "myopia_gap": "eval_loss(myopic) - eval_loss(vanilla)",
            "*_ci_low, *_ci_high": "95 % paired bootstrap interval over validation sequences",
            "trained_as": "the regime the model was trained in; forward: how it was run for scoring",
            "bigram_gap": "eval_loss(bigram) - eval_loss(vanilla)",
            "myopia_gap_fraction": "myopia_gap / bigram_gap",
            "local_myopia_gap": "eval_loss(local-myopic) - eval_loss(vanilla)",
        },
        "training": {regime: {"trained_as": regime, "mode": config.mode if regime == "myopic" else None,
                              "beta": config.beta if regime == "myopic" else None,
                              "steps": len(result.history), "final_train_loss": result.losses[-1],
                              "eval_loss_history": [(r["step"], r["eval_loss"]) for r in result.history
                                                    if "eval_loss" in r]}
                     for regime, result in results.items()},
        "data": splits.manifest,
        "config": {"preset": asdict(preset), "train": {key: value for key, value in asdict(config).items()
                                                       if key not in ("out_dir", "progress", "regime")}},
        "wall_time_s": time.perf_counter() - started,
        "provenance": provenance(config.seed),
    }
    write_json(out / "report.json", document)
    write_run(out, "myopia-gap", splits, {
        regime: {"path": f"{RUNS}/{regime}/{MODEL_DIR}", "trained_as": regime,
                 "mode": config.mode if regime == "myopic" else None,
                 "beta": config.beta if regime == "myopic" else None,
                 **({"past_model": f"{RUNS}/{regime}/{PAST_MODEL_DIR}"}
                    if (out / RUNS / regime / PAST_MODEL_DIR).is_dir() else {})}
        for regime in results})
    lines = [f"{name}: eval loss {result.eval_loss:.4f}" for name, result in report.regimes.items()]
    print("; ".join(lines) + f"; myopia gap {format_gap(report)} nats/token; wrote {out}")
    return document


def _model_factory(preset: Preset, tokenizer: Any, out: Path, seed: int) -> Any:
    """A function returning a fresh copy of the starting model: the same initialisation for every regime."""
    if preset.model is not None:
        return lambda: load_model(preset.model)
    architecture = dict(preset.architecture)
    family = architecture.pop("family", "native")
    if family == "native":
        architecture.setdefault("n_ctx", preset.seq_len)
        return lambda: tiny_model(**architecture, d_vocab=len(tokenizer), seed=seed, tokenizer=tokenizer)
    initial = out / RUNS / "initial"
    if not initial.exists():  # written under a temporary name and renamed: a killed run never leaves half of it
        with atomic_directory(initial) as tmp:
            save_random_checkpoint(family, tmp, tokenizer=tokenizer, seed=seed, **architecture)
    return lambda: load_model(initial)


def _check_context(preset: Preset, splits: Any, starting_model: Any) -> None:
    """Refuse sequences the starting model cannot take, before anything is written."""
    if starting_model is not None:
        check_tokens_fit(starting_model, splits.train)
        return
    n_ctx = preset.architecture.get("n_ctx", preset.seq_len)
    if preset.seq_len > n_ctx:
        raise ContextLengthError(f"seq_len={preset.seq_len} exceeds the model's context n_ctx={n_ctx}; "
                                 f"use seq_len <= {n_ctx}")


def _hub_tokenizer(name: str) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(name)
    except OSError as error:
        raise ModelNotAvailableError(f"tokenizer {name!r} is not available ({type(error).__name__}); it needs a "
                                     "network connection or the HF cache") from error
