r"""``forethought myopia-gap``: train vanilla, myopic and transformer-bigram models on the same text and compare.

Every regime starts from the same initialisation (or the same pretrained model) and sees the same batches in the
same order; only the gradient (myopic) or the attention to the past (bigram, local-myopic) differs. The
validation loss by position of each regime and the gaps between them go to ``report.json``:

* ``myopia_gap = eval_loss(myopic) - eval_loss(vanilla)`` (nats per token on the validation sequences): what the
  model loses when its training cannot prepare earlier positions for later ones (pre-caching);
* ``bigram_gap = eval_loss(bigram) - eval_loss(vanilla)``: what access to earlier tokens is worth at all;
* ``myopia_gap_fraction = myopia_gap / bigram_gap``;
* ``local_myopia_gap = eval_loss(local-myopic) - eval_loss(vanilla)`` when that regime is run. Its frozen past is
  the trained vanilla model of the same run (from scratch) or the pretrained model (fine-tuning);
* the gaps of any other regime the preset trains (:attr:`forethought.regimes.Regime.gaps`).

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
    $ forethought myopia-gap --preset pythia-finetune --models EleutherAI/pythia-14m EleutherAI/pythia-70m \
        --device cuda --out results/pythia_sizes
"""

from __future__ import annotations

import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from forethought.config import TrainConfig
from forethought.data import check_tokens_fit
from forethought.data.tokens import PREPEND_BOS
from forethought.errors import (
    ContextLengthError,
    DataError,
    InvalidArgumentError,
    ModelNotAvailableError,
    check_positive,
)
from forethought.experiments.commands import MyopiaGap
from forethought.experiments.common import load_splits, save_gradient_split_plot
from forethought.experiments.presets import PRESETS, Preset
from forethought.models import load_model, save_random_checkpoint, tiny_model
from forethought.myopic_training.evaluation import evaluate_regimes, format_gap, plot_report
from forethought.myopic_training.trainer import CHECKPOINT, MODEL_DIR, PAST_MODEL_DIR, check_device, train
from forethought.prompts import set_prepends_bos
from forethought.regimes import REGIMES, gap_definitions, get_regime
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

RUNS = "runs"


def chosen_preset(command: MyopiaGap) -> Preset:
    """The chosen preset with the command's data options and ``--regimes`` applied."""
    preset = replace(PRESETS[command.preset], **asdict(command.data))
    if command.regimes:
        regimes = tuple(name.strip() for name in command.regimes.split(",") if name.strip())
        unknown = [name for name in regimes if name not in REGIMES]
        if unknown or not regimes:
            raise InvalidArgumentError(f"--regimes {command.regimes!r} is not allowed; choose from "
                                       f"{', '.join(REGIMES)}")
        preset = replace(preset, regimes=tuple(name for name in REGIMES if name in regimes))  # vanilla first
    from_scratch = preset.model is None and not command.models
    for name in preset.regimes:
        if get_regime(name).needs_past_model and from_scratch and "vanilla" not in preset.regimes:
            raise InvalidArgumentError(f"regime {name} from scratch uses the trained vanilla model as its past; "
                                       "include vanilla in --regimes")
    return preset


def run(command: MyopiaGap) -> int:
    """``forethought myopia-gap``: train and compare the preset's regimes into ``--out``.

    With ``--models`` the command runs :func:`forethought.experiments.size_sweep.run` instead.

    The options, the data and the batch size against the data are checked before ``--out`` is created.
    """
    preset = chosen_preset(command)
    config = command.train_config()
    check_device(config.device)
    out = check_out_dir(command.out)
    if (out / RUNS).exists() and any((out / RUNS).glob(f"*/{CHECKPOINT}")) and not config.resume:
        raise InvalidArgumentError(f"{command.out!r} already holds a myopia-gap run; pass --resume to continue it or "
                                   "choose another --out")
    run_myopia_gap(preset, out, config, preset_name=command.preset)
    return 0


def run_myopia_gap(preset: Preset, out: str | Path, config: TrainConfig, preset_name: str = "custom") -> dict:
    """Train every regime of ``preset``, evaluate them on the same validation sequences and return the report.

    Each regime is trained with ``config``'s settings into ``out/runs/<regime>``; the report and figures are
    written to ``out``.
    """
    started = time.perf_counter()
    check_positive("seq_len", preset.seq_len, integer=True)
    regimes = {name: get_regime(name) for name in preset.regimes}
    starting_model = load_model(preset.model) if preset.model is not None else None
    if starting_model is not None:
        if starting_model.tokenizer is None:
            raise InvalidArgumentError(f"model {preset.model!r} has no tokenizer; save one beside its weights")
        tokenizer = starting_model.tokenizer
    else:
        tokenizer = _hub_tokenizer(preset.tokenizer) if isinstance(preset.tokenizer, str) else None
    vocab_size = preset.tokenizer if isinstance(preset.tokenizer, int) else None
    splits = load_splits(preset, config.seed, tokenizer=tokenizer, vocab_size=vocab_size)
    _check_context(preset, splits, starting_model)
    del starting_model
    if len(splits.train) < config.batch_size:
        raise DataError(f"--batch-size {config.batch_size} is more than the {len(splits.train)} training sequences; "
                        "pass a smaller --batch-size or more data (--max-documents, --dataset)")
    out = prepare_out_dir(out)
    new_model = _model_factory(preset, splits.tokenizer, out, config.seed)

    results = {}
    for regime in preset.regimes:
        past_model = results["vanilla"].model if regimes[regime].needs_past_model and preset.model is None else None
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
            **gap_definitions(),
            "*_ci_low, *_ci_high": "95 % paired bootstrap interval over validation sequences",
            "trained_as": "the regime the model was trained in; forward: how it was run for scoring",
            "myopia_gap_fraction": "myopia_gap / bigram_gap",
        },
        "training": {regime: {"trained_as": regime, **_settings(regime, config),
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
        regime: {"path": f"{RUNS}/{regime}/{MODEL_DIR}", "trained_as": regime, **_settings(regime, config),
                 **({"past_model": f"{RUNS}/{regime}/{PAST_MODEL_DIR}"}
                    if (out / RUNS / regime / PAST_MODEL_DIR).is_dir() else {})}
        for regime in results})
    lines = [f"{name}: eval loss {result.eval_loss:.4f}" for name, result in report.regimes.items()]
    print("; ".join(lines) + f"; myopia gap {format_gap(report)} nats/token; wrote {out}")
    return document


def _settings(regime: str, config: TrainConfig) -> dict[str, Any]:
    """The settings a regime's training reads, recorded beside it (``mode`` and ``beta`` always, ``None`` if unread)."""
    return {"mode": None, "beta": None, **{key: getattr(config, key) for key in REGIMES[regime].settings}}


def _model_factory(preset: Preset, tokenizer: Any, out: Path, seed: int) -> Any:
    """A function returning a fresh copy of the starting model: the same initialisation for every regime.

    Every copy takes string prompts as it is trained: without a BOS token (:data:`forethought.data.tokens.PREPEND_BOS`).
    """
    if preset.model is not None:
        return lambda: set_prepends_bos(load_model(preset.model), PREPEND_BOS)
    architecture = dict(preset.architecture)
    family = architecture.pop("family", "native")
    if family == "native":
        architecture.setdefault("n_ctx", preset.seq_len)
        return lambda: tiny_model(**architecture, d_vocab=len(tokenizer), seed=seed, tokenizer=tokenizer,
                                  prepend_bos=PREPEND_BOS)
    initial = out / RUNS / "initial"
    if not initial.exists():  # written under a temporary name and renamed: a killed run never leaves half of it
        with atomic_directory(initial) as tmp:
            save_random_checkpoint(family, tmp, tokenizer=tokenizer, seed=seed, **architecture)
    return lambda: set_prepends_bos(load_model(initial), PREPEND_BOS)


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
